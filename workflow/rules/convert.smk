# The pool is converted one job per download partition, then gather_pool_table lists every sample of it, in
# partition order, with the .beton and record holding it. Evaluation sets are small: one .beton each.


rule convert_partition:
    input:
        result("download/{source}/part-{partition}"),
    output:
        beton=result("beton/pool/{source}/part-{partition}.beton"),
        table=result("beton/pool/{source}/part-{partition}.parquet"),
    params:
        settings=settings("convert"),
    threads: config["convert"]["num_workers"]
    log:
        result("logs/convert/pool/{source}.part-{partition}.log"),
    benchmark:
        result("benchmarks/convert/pool/{source}.part-{partition}.tsv")
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign convert --settings {params.settings:q} --source {wildcards.source:q} --partition {wildcards.partition}"
        " --inputs {input:q}/train --beton {output.beton:q} --table {output.table:q} > {log:q} 2>&1"


rule gather_pool_table:
    input:
        pool_partition_files("parquet"),
    output:
        result("beton/pool.parquet"),
    log:
        result("logs/convert/pool.log"),
    benchmark:
        result("benchmarks/convert/pool.tsv")
    params:
        argv=lambda wildcards, input, output: ["gather-tables", "--tables", *input, "--out", output[0]],
    conda:
        "../../envs/vlalign.yaml"
    script:
        "../scripts/stage.py"


rule convert:
    input:
        unpack(convert_input),
    output:
        beton=result("beton/{dataset}.beton"),
        table=result("beton/{dataset}.parquet"),
    wildcard_constraints:
        # Never matches when no evaluation set is configured.
        dataset="|".join(EVAL_DATASETS) or "(?!)",
    params:
        settings=settings("convert"),
        folders=convert_folders,
    threads: config["convert"]["num_workers"]
    log:
        result("logs/convert/{dataset}.log"),
    benchmark:
        result("benchmarks/convert/{dataset}.tsv")
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign convert --settings {params.settings:q} --inputs {params.folders:q}"
        " --beton {output.beton:q} --table {output.table:q} > {log:q} 2>&1"
