# The planted-truth audit: each curated pool's filters checked against what a planted source put in the pool (only
# for configs whose curate.sources hold one; see `audits()`).


rule audit:
    input:
        unpack(audit_input),
    output:
        json=result("curate/audit/{pool}/audit.json"),
        markdown=result("curate/audit/{pool}/audit.md"),
        figure=result("curate/audit/{pool}/audit.png"),
    params:
        settings=settings("audit"),
        scores=lambda wildcards, input: ["--alignment-scores", input.scores] if "scores" in input.keys() else [],
        folder=lambda wildcards, output: str(Path(output.json).parent),
    log:
        result("logs/curate/audit_{pool}.log"),
    benchmark:
        result("benchmarks/curate/audit_{pool}.tsv")
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign audit --settings {params.settings:q} --pool {wildcards.pool:q}"
        " --decisions {input.selected:q}/decisions.parquet --planted {input.planted:q} {params.scores:q}"
        " --out {params.folder:q} > {log:q} 2>&1"
