rule evaluate:
    input:
        checkpoint=result("train/{run}"),
        embeddings=[embeddings(eval_dataset(s), e) for s in EVAL_SOURCES for e in (IMAGE_ENCODER, TEXT_ENCODER)],
        tables=[result(f"beton/{eval_dataset(s)}.parquet") for s in EVAL_SOURCES],
    output:
        result("evaluate/{run}/metrics.json"),
    params:
        settings=settings("evaluate"),
        # The experiment's folder, holding beton/ and embeddings/: train/{run} two levels down.
        results=lambda wildcards, input: str(Path(input.checkpoint).parent.parent),
    resources:
        gpu=1,
    log:
        result("logs/evaluate/{run}.log"),
    benchmark:
        result("benchmarks/evaluate/{run}.tsv")
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign evaluate --settings {params.settings:q} --run {wildcards.run:q}"
        " --checkpoint {input.checkpoint:q} --eval-dir {params.results:q} --out {output:q} > {log:q} 2>&1"
