rule embed:
    input:
        beton="results/beton/{dataset}.beton",
        table="results/beton/{dataset}.parquet",
    output:
        directory("results/embeddings/{dataset}/{encoder}"),
    params:
        settings=settings("embed"),
    threads: config["embed"]["num_workers"]
    resources:
        gpu=1,
    log:
        "results/logs/embed/{dataset}/{encoder}.log",
    benchmark:
        "results/benchmarks/embed/{dataset}/{encoder}.tsv"
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign embed --settings {params.settings:q} --encoder {wildcards.encoder:q} --dataset {wildcards.dataset:q}"
        " --beton {input.beton:q} --table {input.table:q} --out {output:q} > {log:q} 2>&1"
