rule download:
    input:
        download_input,
    output:
        directory("results/download/{source}"),
    params:
        settings=settings("download"),
    log:
        "results/logs/download/{source}.log",
    benchmark:
        "results/benchmarks/download/{source}.tsv"
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign download --settings {params.settings:q} --source {wildcards.source:q} --out {output:q} > {log:q} 2>&1"
