# With embed.parts > 1 every dataset is split into that many contiguous row ranges, embedded by
# separate jobs (one GPU each, or one SLURM job each), then gathered into one store.
EMBED_PARTS = config["embed"]["parts"]


# On the submit host, which reaches the hub where compute nodes may not: a model that cannot be had fails here
# in one line, before any GPU job starts.
rule fetch_encoder:
    output:
        result("encoders/{encoder}.json"),
    params:
        settings=settings("fetch_encoder"),
    log:
        result("logs/fetch_encoder/{encoder}.log"),
    benchmark:
        result("benchmarks/fetch_encoder/{encoder}.tsv")
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign fetch-encoder --settings {params.settings:q} --encoder {wildcards.encoder:q} --out {output:q}"
        " > {log:q} 2>&1"


if EMBED_PARTS == 1:

    rule embed:
        input:
            beton=result("beton/{dataset}.beton"),
            table=result("beton/{dataset}.parquet"),
            weights=encoder_weights,
        output:
            directory(result("embeddings/{dataset}/{encoder}")),
        params:
            settings=settings("embed"),
        threads: config["embed"]["num_workers"]
        resources:
            gpu=1,
        log:
            result("logs/embed/{dataset}/{encoder}.log"),
        benchmark:
            result("benchmarks/embed/{dataset}/{encoder}.tsv")
        conda:
            "../../envs/vlalign.yaml"
        shell:
            "vlalign embed --settings {params.settings:q} --encoder {wildcards.encoder:q} --dataset {wildcards.dataset:q}"
            " --beton {input.beton:q} --table {input.table:q} --out {output:q} > {log:q} 2>&1"

else:

    rule embed_part:
        input:
            beton=result("beton/{dataset}.beton"),
            table=result("beton/{dataset}.parquet"),
            weights=encoder_weights,
        output:
            directory(result("embeddings/{dataset}/{encoder}.parts/{part}")),
        params:
            settings=settings("embed"),
            parts=EMBED_PARTS,
        threads: config["embed"]["num_workers"]
        resources:
            gpu=1,
        log:
            result("logs/embed/{dataset}/{encoder}.part{part}.log"),
        benchmark:
            result("benchmarks/embed/{dataset}/{encoder}.part{part}.tsv")
        conda:
            "../../envs/vlalign.yaml"
        shell:
            "vlalign embed --settings {params.settings:q} --encoder {wildcards.encoder:q} --dataset {wildcards.dataset:q}"
            " --part {wildcards.part} --parts {params.parts} --beton {input.beton:q} --table {input.table:q}"
            " --out {output:q} > {log:q} 2>&1"

    rule gather_embeddings:
        input:
            parts=expand(result("embeddings/{{dataset}}/{{encoder}}.parts/{part}"), part=range(EMBED_PARTS)),
        output:
            directory(result("embeddings/{dataset}/{encoder}")),
        log:
            result("logs/embed/{dataset}/{encoder}.gather.log"),
        benchmark:
            result("benchmarks/embed/{dataset}/{encoder}.gather.tsv")
        conda:
            "../../envs/vlalign.yaml"
        shell:
            "vlalign gather-embeddings --parts {input.parts:q} --out {output:q} > {log:q} 2>&1"


rule embed_extra_captions:
    input:
        table=result("beton/pool.parquet"),
        weights=encoder_weights,
    output:
        directory(extra_caption_embeddings("{field}", "{encoder}")),
    params:
        settings=settings("embed"),
    resources:
        gpu=1,
    log:
        result("logs/embed/pool_captions/{field}/{encoder}.log"),
    benchmark:
        result("benchmarks/embed/pool_captions/{field}/{encoder}.tsv")
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign embed --settings {params.settings:q} --encoder {wildcards.encoder:q} --dataset pool"
        " --caption-field {wildcards.field:q} --table {input.table:q} --out {output:q} > {log:q} 2>&1"
