rule convert:
    input:
        unpack(convert_input),
    output:
        beton=result("beton/{dataset}.beton"),
        table=result("beton/{dataset}.parquet"),
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
