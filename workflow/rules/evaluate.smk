rule evaluate:
    input:
        checkpoint="results/train/{run}",
        embeddings=[embeddings(eval_dataset(s), e) for s in EVAL_SOURCES for e in (IMAGE_ENCODER, TEXT_ENCODER)],
        tables=[f"results/beton/{eval_dataset(s)}.parquet" for s in EVAL_SOURCES],
    output:
        "results/evaluate/{run}/metrics.json",
    params:
        settings=settings("evaluate"),
    resources:
        gpu=1,
    log:
        "results/logs/evaluate/{run}.log",
    benchmark:
        "results/benchmarks/evaluate/{run}.tsv"
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign evaluate --settings {params.settings:q} --run {wildcards.run:q}"
        " --checkpoint {input.checkpoint:q} --eval-dir results --out {output:q} > {log:q} 2>&1"
