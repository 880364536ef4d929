rule measure:
    input:
        pool=expand(result("download/{source}"), source=config["curate"]["sources"]),
        evaluation=expand(result("download/{source}"), source=EVAL_SOURCES),
    output:
        result("curate/measurements.parquet"),
    params:
        settings=settings("measure"),
        pool_folders=lambda wildcards, input: [f"{folder}/train" for folder in input.pool],
        eval_folders=lambda wildcards, input: [f"{folder}/eval" for folder in input.evaluation],
    threads: config["curate"]["measure"]["workers"]
    log:
        result("logs/curate/measure.log"),
    benchmark:
        result("benchmarks/curate/measure.tsv")
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign measure --settings {params.settings:q} --inputs {params.pool_folders:q}"
        " --eval-inputs {params.eval_folders:q} --out {output:q} > {log:q} 2>&1"


rule score_alignment:
    input:
        checkpoint=result("train/{run}"),
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
        settings=settings("select"),
        pool_folders=lambda wildcards, input: [f"{folder}/train" for folder in input.pool],
        scores=lambda wildcards, input: ["--alignment-scores", input.scores] if "scores" in input.keys() else [],
    log:
        result("logs/curate/select_{pool}.log"),
    benchmark:
        result("benchmarks/curate/select_{pool}.tsv")
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign select --settings {params.settings:q} --pool {wildcards.pool:q} --measurements {input.measurements:q}"
        " {params.scores:q} --inputs {params.pool_folders:q} --out {output:q} > {log:q} 2>&1"
