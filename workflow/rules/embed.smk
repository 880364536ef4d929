# With embed.parts > 1 every dataset is split into that many contiguous row ranges, embedded by
# separate jobs (one GPU each, or one SLURM job each), then gathered into one store. The pool's rows are those of
# beton/pool.parquet, over its partition .betons: a part opens only the .betons its rows are in.
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
            unpack(embed_input),
            weights=encoder_weights,
        output:
            directory(result("embeddings/{dataset}/{encoder}")),
        params:
            argv=stage_argv("embed", embed_arguments),
        threads: config["embed"]["num_workers"]
        resources:
            gpu=1,
        log:
            result("logs/embed/{dataset}/{encoder}.log"),
        benchmark:
            result("benchmarks/embed/{dataset}/{encoder}.tsv")
        conda:
            "../../envs/vlalign.yaml"
        script:
            "../scripts/stage.py"

else:

    rule embed_part:
        input:
            unpack(embed_input),
            weights=encoder_weights,
        output:
            directory(result("embeddings/{dataset}/{encoder}.parts/{part}")),
        params:
            argv=stage_argv(
                "embed",
                lambda wildcards, input, output: [
                    *embed_arguments(wildcards, input, output),
                    "--part",
                    wildcards.part,
                    "--parts",
                    EMBED_PARTS,
                ],
            ),
        threads: config["embed"]["num_workers"]
        resources:
            gpu=1,
        log:
            result("logs/embed/{dataset}/{encoder}.part{part}.log"),
        benchmark:
            result("benchmarks/embed/{dataset}/{encoder}.part{part}.tsv")
        conda:
            "../../envs/vlalign.yaml"
        script:
            "../scripts/stage.py"

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
