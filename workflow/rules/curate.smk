rule curate:
    input:
        expand("results/download/{source}", source=config["curate"]["sources"]),
    output:
        directory("results/curate/pool"),
    params:
        settings=settings("curate"),
        # the train split of every pool source
        folders=lambda wildcards, input: [f"{folder}/train" for folder in input],
    log:
        "results/logs/curate/pool.log",
    benchmark:
        "results/benchmarks/curate/pool.tsv"
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign curate --settings {params.settings:q} --inputs {params.folders:q} --out {output:q} > {log:q} 2>&1"
