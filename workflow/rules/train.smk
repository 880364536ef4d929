rule train:
    input:
        image=embeddings("pool", IMAGE_ENCODER),
        text=embeddings("pool", TEXT_ENCODER),
        pool=lambda wildcards: curated_pool(run_pool(config, wildcards.run)),
        negatives=lambda wildcards: (
            [negative_embeddings(TEXT_ENCODER)] if train_settings(config, wildcards.run)["hard_negatives"] else []
        ),
        extra=lambda wildcards: (
            [extra_caption_embeddings(f, TEXT_ENCODER) for f in config["captions"]["extra"]]
            if train_settings(config, wildcards.run)["multi_positive"]
            else []
        ),
    output:
        report(
            directory(result("train/{run}/seed-{seed}")),
            patterns=["{name}.png"],
            caption="../report/train.rst",
            category="Training",
        ),
    params:
        settings=settings("train"),
        decisions=lambda wildcards, input: f"{input.pool}/decisions.parquet",
        # Flag and path as one list: quoted word by word, and nothing at all without negatives.
        negatives=lambda wildcards, input: ["--negative-embeddings", *input.negatives] if input.negatives else [],
        # One process per GPU through torchrun (DDP) when a run has several; a validated integer.
        launcher=(
            "vlalign"
            if config["train"]["gpus"] == 1
            else f"torchrun --standalone --nproc_per_node {config['train']['gpus']} -m vlalign.cli"
        ),
    resources:
        gpu=config["train"]["gpus"],
    log:
        result("logs/train/{run}/seed-{seed}.log"),
    benchmark:
        result("benchmarks/train/{run}/seed-{seed}.tsv")
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "{params.launcher} train --settings {params.settings:q} --run-name {wildcards.run:q}"
        " --image-embeddings {input.image:q} --text-embeddings {input.text:q}"
        " --pool-decisions {params.decisions:q} {params.negatives:q}"
        " --extra-text-embeddings {input.extra:q} --out {output:q}"
        " > {log:q} 2>&1"
