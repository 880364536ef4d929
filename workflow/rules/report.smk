rule report:
    input:
        evaluations=expand("results/evaluate/{run}/metrics.json", run=RUNS),
        runs=expand("results/train/{run}", run=RUNS),
        probes=expand("results/probe/{image}__{text}", image=PROBE_IMAGE_ENCODERS, text=PROBE_TEXT_ENCODERS),
        probing="results/probe/matrix/probing.md",
        pools=expand("results/curate/pools/{pool}", pool=POOLS),
    output:
        summary=report("results/report/summary.md", caption="../report/summary.rst", category="Results"),
        comparison=report("results/report/comparison.png", caption="../report/summary.rst", category="Results"),
        curves=report(
            "results/report/training_curves.png", caption="../report/training_curves.rst", category="Results"
        ),
        curation=report(
            "results/report/curation_effect.png", caption="../report/curation_effect.rst", category="Results"
        ),
        html="results/report/report.html",
        table="results/report/summary.csv",
    params:
        settings=settings("report"),
        probe_metrics=lambda wildcards, input: [f"{p}/metrics.json" for p in input.probes],
        probing_dir=lambda wildcards, input: str(Path(input.probing).parent),
        out_dir=lambda wildcards, output: str(Path(output.summary).parent),
    log:
        "results/logs/report.log",
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign report --settings {params.settings:q} --metrics {input.evaluations:q} {params.probe_metrics:q}"
        " --runs {input.runs:q} --pools {input.pools:q} --probing {params.probing_dir:q}"
        " --out {params.out_dir:q} > {log:q} 2>&1"
