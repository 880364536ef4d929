rule report:
    input:
        evaluations=instance_paths("evaluate/{run}/seed-{seed}/metrics.json"),
        runs=instance_paths("train/{run}/seed-{seed}"),
        probes=expand(result("probe/{image}__{text}"), image=PROBE_IMAGE_ENCODERS, text=PROBE_TEXT_ENCODERS),
        # Without a probing matrix in the config, none is reported.
        probing=[result("probe/matrix/probing.md")] if PROBE_IMAGE_ENCODERS else [],
        pools=expand(result("curate/pools/{pool}"), pool=POOLS),
        # Only with a planted source in the pool (the audits' truth).
        audits=audits(),
    output:
        summary=report(result("report/summary.md"), caption="../report/summary.rst", category="Results"),
        comparison=report(result("report/comparison.png"), caption="../report/summary.rst", category="Results"),
        curves=report(
            result("report/training_curves.png"), caption="../report/training_curves.rst", category="Results"
        ),
        curation=report(
            result("report/curation_effect.png"), caption="../report/curation_effect.rst", category="Results"
        ),
        html=result("report/report.html"),
        table=result("report/summary.csv"),
        comparisons=result("report/comparisons.csv"),
    params:
        settings=settings("report"),
        probe_metrics=lambda wildcards, input: [f"{p}/metrics.json" for p in input.probes],
        probing=lambda wildcards, input: ["--probing", str(Path(input.probing[0]).parent)] if input.probing else [],
        out_dir=lambda wildcards, output: str(Path(output.summary).parent),
        audits=lambda wildcards, input: [str(Path(a).parent) for a in input.audits],
    log:
        result("logs/report.log"),
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign report --settings {params.settings:q} --metrics {input.evaluations:q} {params.probe_metrics:q}"
        " --runs {input.runs:q} --pools {input.pools:q} --audits {params.audits:q} {params.probing:q}"
        " --out {params.out_dir:q} > {log:q} 2>&1"
