rule train:
    input:
        image=embeddings("pool", IMAGE_ENCODER),
        text=embeddings("pool", TEXT_ENCODER),
        pool=lambda wildcards: curated_pool(run_pool(config, wildcards.run)),
        negatives=lambda wildcards: (
            [negative_embeddings(TEXT_ENCODER)] if train_settings(config, wildcards.run)["hard_negatives"] else []
        ),
    output:
        report(
            directory("results/train/{run}"),
            patterns=["{name}.png"],
            caption="../report/train.rst",
            category="Training",
        ),
    params:
        settings=settings("train"),
        decisions=lambda wildcards, input: f"{input.pool}/decisions.parquet",
        negatives=lambda wildcards, input: input.negatives[0] if input.negatives else "",
    resources:
        gpu=1,
    log:
        "results/logs/train/{run}.log",
    benchmark:
        "results/benchmarks/train/{run}.tsv"
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign train --settings {params.settings:q} --run {wildcards.run:q}"
        " --image-embeddings {input.image:q} --text-embeddings {input.text:q}"
        " --pool-decisions {params.decisions:q} --negative-embeddings {params.negatives:q} --out {output:q}"
        " > {log:q} 2>&1"
