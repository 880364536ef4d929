# Hard-negative captions (the guide's negative captioning): made by rule from the pool's captions
# and embedded by the text encoder, for training runs with hard_negatives.


rule negative_captions:
    input:
        result("beton/pool.parquet"),
    output:
        result("negatives/pool.parquet"),
    params:
        settings=settings("negatives"),
    log:
        result("logs/negatives/pool.log"),
    benchmark:
        result("benchmarks/negatives/pool.tsv")
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign negatives --settings {params.settings:q} --table {input:q} --out {output:q} > {log:q} 2>&1"


rule embed_negatives:
    input:
        negatives=result("negatives/pool.parquet"),
        weights=encoder_weights,
    output:
        directory(negative_embeddings("{encoder}")),
    params:
        settings=settings("embed"),
    resources:
        gpu=1,
    log:
        result("logs/embed/pool_negatives/{encoder}.log"),
    benchmark:
        result("benchmarks/embed/pool_negatives/{encoder}.tsv")
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign embed --settings {params.settings:q} --encoder {wildcards.encoder:q} --dataset pool_negatives"
        " --table {input.negatives:q} --out {output:q} > {log:q} 2>&1"
