rule semdedup:
    input:
        embeddings("pool", IMAGE_ENCODER),
    output:
        result("curate/semantic_neighbours.parquet"),
    params:
        settings=settings("semdedup"),
    threads: config["curate"]["semantic"]["workers"]
    log:
        result("logs/curate/semdedup.log"),
    benchmark:
        result("benchmarks/curate/semdedup.tsv")
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign semdedup --settings {params.settings:q} --image-embeddings {input:q} --out {output:q} > {log:q} 2>&1"
