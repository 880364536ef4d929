rule download:
    input:
        download_input,
    output:
        directory(result("download/{source}")),
    params:
        settings=settings("download"),
    log:
        result("logs/download/{source}.log"),
    benchmark:
        result("benchmarks/download/{source}.tsv")
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign download --settings {params.settings:q} --source {wildcards.source:q} --out {output:q} > {log:q} 2>&1"
