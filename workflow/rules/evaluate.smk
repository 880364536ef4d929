rule evaluate:
    input:
        checkpoint=result("train/{run}/seed-{seed}"),
        embeddings=[embeddings(eval_dataset(s), e) for s in EVAL_SOURCES for e in (IMAGE_ENCODER, TEXT_ENCODER)],
        tables=[result(f"beton/{eval_dataset(s)}.parquet") for s in EVAL_SOURCES],
    output:
        metrics=result("evaluate/{run}/seed-{seed}/metrics.json"),
        per_sample=result("evaluate/{run}/seed-{seed}/per_sample.parquet"),
    params:
        settings=settings("evaluate"),
        # The experiment's folder, holding beton/ and embeddings/: train/{run}/seed-{seed} three levels down.
        results=lambda wildcards, input: str(Path(input.checkpoint).parents[2]),
    resources:
        gpu=1,
    log:
        result("logs/evaluate/{run}/seed-{seed}.log"),
    benchmark:
        result("benchmarks/evaluate/{run}/seed-{seed}.tsv")
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign evaluate --settings {params.settings:q} --run {wildcards.run:q} --seed {wildcards.seed:q}"
        " --checkpoint {input.checkpoint:q} --eval-dir {params.results:q} --out {output.metrics:q} > {log:q} 2>&1"
