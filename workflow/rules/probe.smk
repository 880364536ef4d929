rule probe:
    input:
        image=embeddings("pool", IMAGE_ENCODER),
        text=embeddings("pool", TEXT_ENCODER),
        pool=curated_pool(config["probe"]["pool"]),
        eval_image=embeddings(eval_dataset(config["probe"]["eval_source"]), IMAGE_ENCODER),
        eval_text=embeddings(eval_dataset(config["probe"]["eval_source"]), TEXT_ENCODER),
        class_images=[embeddings(eval_dataset(s), IMAGE_ENCODER) for s in config["evaluate"]["zeroshot"]],
        class_tables=[f"results/beton/{eval_dataset(s)}.parquet" for s in config["evaluate"]["zeroshot"]],
    output:
        directory(f"results/probe/{PAIR}"),
    params:
        settings=settings("probe"),
        decisions=lambda wildcards, input: f"{input.pool}/decisions.parquet",
    resources:
        gpu=1,
    log:
        f"results/logs/probe/{PAIR}.log",
    benchmark:
        f"results/benchmarks/probe/{PAIR}.tsv"
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign probe --settings {params.settings:q}"
        " --image-embeddings {input.image:q} --text-embeddings {input.text:q}"
        " --pool-decisions {params.decisions:q}"
        " --eval-image-embeddings {input.eval_image:q} --eval-text-embeddings {input.eval_text:q}"
        " --class-image-embeddings {input.class_images:q} --class-tables {input.class_tables:q}"
        " --out {output:q} > {log:q} 2>&1"
