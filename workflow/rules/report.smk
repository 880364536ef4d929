rule report:
    input:
        evaluations=expand("results/evaluate/{run}/metrics.json", run=RUNS),
        probe=f"results/probe/{PAIR}",
        pools=expand("results/curate/pools/{pool}", pool=POOLS),
    output:
        summary=report("results/report/summary.md", caption="../report/summary.rst", category="Results"),
        comparison=report("results/report/comparison.png", caption="../report/summary.rst", category="Results"),
        table="results/report/summary.csv",
    params:
        settings=settings("report"),
        probe_metrics=lambda wildcards, input: f"{input.probe}/metrics.json",
        out_dir=lambda wildcards, output: str(Path(output.summary).parent),
    log:
        "results/logs/report.log",
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign report --settings {params.settings:q} --metrics {input.evaluations:q} {params.probe_metrics:q}"
        " --out {params.out_dir:q} > {log:q} 2>&1"
