# A url_list is read once into chunks and partitions (index_urls); every source is then downloaded one partition a
# job (other types are one partition). A url_list's fetched rows also go to its outcome store, download/{source}/
# store/, which no rule declares, so Snakemake never deletes it and a re-run fetches only what it lacks.


rule index_urls:
    input:
        download_input,
    output:
        directory(result("download/{source}/index")),
    params:
        settings=settings("index_urls"),
        store=lambda wildcards: outcome_store(wildcards.source),
    log:
        result("logs/download/{source}.index.log"),
    benchmark:
        result("benchmarks/download/{source}.index.tsv")
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign index-urls --settings {params.settings:q} --source {wildcards.source:q} --store {params.store:q}"
        " --out {output:q} > {log:q} 2>&1"


rule download:
    input:
        unpack(partition_input),
    output:
        directory(result("download/{source}/part-{partition}")),
    params:
        settings=settings("download"),
        index=lambda wildcards, input: (
            ["--index", input.index, "--store", outcome_store(wildcards.source)] if "index" in input.keys() else []
        ),
    log:
        result("logs/download/{source}.part-{partition}.log"),
    benchmark:
        result("benchmarks/download/{source}.part-{partition}.tsv")
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign download --settings {params.settings:q} --source {wildcards.source:q}"
        " --partition {wildcards.partition} {params.index:q} --out {output:q} > {log:q} 2>&1"
