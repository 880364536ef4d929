rule measure_samples:
    input:
        result("download/{source}/part-{partition}"),
    output:
        result("curate/measured/{source}/part-{partition}.parquet"),
    params:
        settings=settings("measure_samples"),
    threads: config["curate"]["measure"]["workers"]
    log:
        result("logs/curate/measure_samples/{source}.part-{partition}.log"),
    benchmark:
        result("benchmarks/curate/measure_samples/{source}.part-{partition}.tsv")
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign measure-samples --settings {params.settings:q} --source {wildcards.source:q}"
        " --partition {wildcards.partition} --inputs {input:q}/train --out {output:q} > {log:q} 2>&1"


# The gather: what compares samples (duplicates, eval contamination, OCR of the survivors) sees the whole pool.
rule measure:
    input:
        partitions=[
            result(f"curate/measured/{s}/part-{p}.parquet") for s in config["curate"]["sources"] for p in partitions(s)
        ],
        pool=downloads(config["curate"]["sources"]),
        evaluation=downloads(EVAL_SOURCES),
    output:
        result("curate/measurements.parquet"),
    params:
        argv=stage_argv(
            "measure",
            lambda wildcards, input, output: [
                "--partitions",
                *input.partitions,
                "--inputs",
                *download_folders(config["curate"]["sources"], "train"),
                "--eval-inputs",
                *download_folders(EVAL_SOURCES, "eval"),
                "--out",
                output[0],
            ],
        ),
    threads: config["curate"]["measure"]["workers"]
    log:
        result("logs/curate/measure.log"),
    benchmark:
        result("benchmarks/curate/measure.tsv")
    conda:
        "../../envs/vlalign.yaml"
    script:
        "../scripts/stage.py"


rule score_alignment:
    input:
        checkpoint=lambda wildcards: trained(wildcards.run),
        image=embeddings("pool", IMAGE_ENCODER),
        text=embeddings("pool", TEXT_ENCODER),
    output:
        result("curate/alignment/{run}.parquet"),
    params:
        settings=settings("score"),
    resources:
        gpu=1,
    log:
        result("logs/curate/score_{run}.log"),
    benchmark:
        result("benchmarks/curate/score_{run}.tsv")
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign score --settings {params.settings:q} --run {wildcards.run:q} --checkpoint {input.checkpoint:q}"
        " --image-embeddings {input.image:q} --text-embeddings {input.text:q} --out {output:q} > {log:q} 2>&1"


rule select:
    input:
        unpack(select_input),
    output:
        report(
            directory(result("curate/pools/{pool}")),
            patterns=["{name}.png"],
            caption="../report/curate.rst",
            category="Curation",
            subcategory="{pool}",
        ),
    params:
        argv=stage_argv(
            "select",
            lambda wildcards, input, output: [
                "--pool",
                wildcards.pool,
                "--measurements",
                input.measurements,
                *(["--alignment-scores", input.scores] if "scores" in input.keys() else []),
                *(["--semantic-neighbours", input.semantic_neighbours] if "semantic_neighbours" in input.keys() else []),
                "--inputs",
                *download_folders(config["curate"]["sources"], "train"),
                "--out",
                output[0],
            ],
        ),
    log:
        result("logs/curate/select_{pool}.log"),
    benchmark:
        result("benchmarks/curate/select_{pool}.tsv")
    conda:
        "../../envs/vlalign.yaml"
    script:
        "../scripts/stage.py"


# The pool's decisions are made once (select); the images of what each pool keeps are copied a partition a job.
rule curated_shards:
    input:
        selected=curated_pool("{pool}"),
        measured=result("curate/measured/{source}/part-{partition}.parquet"),
        partition=result("download/{source}/part-{partition}"),
    output:
        directory(result("curate/shards/{pool}/{source}/part-{partition}")),
    params:
        settings=settings("curated_shards"),
    log:
        result("logs/curate/curated_shards/{pool}/{source}.part-{partition}.log"),
    benchmark:
        result("benchmarks/curate/curated_shards/{pool}/{source}.part-{partition}.tsv")
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign curated-shards --settings {params.settings:q} --pool {wildcards.pool:q} --source {wildcards.source:q}"
        " --partition {wildcards.partition} --decisions {input.selected:q}/decisions.parquet"
        " --measured {input.measured:q} --inputs {input.partition:q}/train --out {output:q} > {log:q} 2>&1"
