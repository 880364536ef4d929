# vlalign: download -> curate -> convert (FFCV) -> embed -> train (SAIL) -> probe / evaluate -> report.
# Run: snakemake --cores all --resources gpu=1   (the demo: config/config.yaml)
#      snakemake --cores all --resources gpu=1 --configfile my.yaml   (your own config, and nothing else)
from snakemake.utils import min_version

min_version("9.0")


# A config given with --configfile is the whole configuration: the demo's file is read only when none is.
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


# MLFLOW_TRACKING_URI is declared in profiles/slurm (`envvars:` there), not with an `envvars:`
# directive here: Snakemake fails any run without a declared variable, and a local run logs to
# results/mlflow.db without one.
# On a cluster the report rule only tabulates small JSON files, and fetch_encoder needs the hub, which compute
# nodes may not reach: both run on the submit host.
localrules:
    report,
    fetch_encoder,


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/curate.smk"
include: "workflow/rules/audit.smk"
include: "workflow/rules/semdedup.smk"
include: "workflow/rules/convert.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/negatives.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/probe.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        result("report/summary.md"),
        curated_shards(),
        audits(),


from vlalign.tracking import end_workflow_run, start_workflow_run


# One MLflow run per invocation, which the rule runs of its jobs nest under (a dry run opens none).
onstart:
    start_workflow_run(config, sorted(workflow.dag_settings.targets) or [workflow.default_target], len(workflow.dag))


onsuccess:
    end_workflow_run(config, succeeded=True)
    print_summary(result("report/summary.md"))


onerror:
    end_workflow_run(config, succeeded=False)
