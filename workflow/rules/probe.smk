# SAIL's probing matrix: the linear alignment probe of every (vision, text) encoder pair in
# probe.image_encoders x probe.text_encoders, the k-NN and linear-probe accuracy of each vision
# encoder, and their correlations. Every encoder's embeddings come from the embed rule once and
# are shared by all cells and runs that use them.
PROBE_IMAGE_ENCODERS, PROBE_TEXT_ENCODERS = probe_encoders(config)
PROBE_CLASS_SETS = [eval_dataset(s) for s in config["evaluate"]["zeroshot"]]


rule probe:
    input:
        image=embeddings("pool", "{image_encoder}"),
        text=embeddings("pool", "{text_encoder}"),
        pool=curated_pool(config["probe"]["pool"]),
        eval_image=embeddings(eval_dataset(config["probe"]["eval_source"]), "{image_encoder}"),
        eval_text=embeddings(eval_dataset(config["probe"]["eval_source"]), "{text_encoder}"),
    output:
        directory("results/probe/{image_encoder}__{text_encoder}"),
    params:
        settings=settings("probe"),
        decisions=lambda wildcards, input: f"{input.pool}/decisions.parquet",
    resources:
        gpu=1,
    log:
        "results/logs/probe/{image_encoder}__{text_encoder}.log",
    benchmark:
        "results/benchmarks/probe/{image_encoder}__{text_encoder}.tsv"
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign probe --settings {params.settings:q}"
        " --image-embeddings {input.image:q} --text-embeddings {input.text:q}"
        " --pool-decisions {params.decisions:q}"
        " --eval-image-embeddings {input.eval_image:q} --eval-text-embeddings {input.eval_text:q}"
        " --out {output:q} > {log:q} 2>&1"


rule vision_probe:
    input:
        class_images=[embeddings(dataset, "{encoder}") for dataset in PROBE_CLASS_SETS],
        class_tables=[f"results/beton/{dataset}.parquet" for dataset in PROBE_CLASS_SETS],
    output:
        "results/probe/vision/{encoder}.json",
    params:
        settings=settings("vision_probe"),
    log:
        "results/logs/vision_probe/{encoder}.log",
    benchmark:
        "results/benchmarks/vision_probe/{encoder}.tsv"
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign vision-probe --settings {params.settings:q} --encoder {wildcards.encoder:q}"
        " --class-image-embeddings {input.class_images:q} --class-tables {input.class_tables:q}"
        " --out {output:q} > {log:q} 2>&1"


rule probe_matrix:
    input:
        cells=expand("results/probe/{image}__{text}", image=PROBE_IMAGE_ENCODERS, text=PROBE_TEXT_ENCODERS),
        vision=expand("results/probe/vision/{encoder}.json", encoder=PROBE_IMAGE_ENCODERS),
    output:
        table="results/probe/matrix/matrix.csv",
        correlations="results/probe/matrix/correlations.csv",
        markdown="results/probe/matrix/probing.md",
        metrics="results/probe/matrix/metrics.json",
        heatmap=report(
            "results/probe/matrix/alignment_heatmap.png",
            caption="../report/probing_heatmap.rst",
            category="Probing",
        ),
        scatter=report(
            "results/probe/matrix/alignment_vs_vision.png",
            caption="../report/probing_scatter.rst",
            category="Probing",
        ),
    params:
        settings=settings("probe_matrix"),
        out_dir=lambda wildcards, output: str(Path(output.table).parent),
    log:
        "results/logs/probe_matrix.log",
    benchmark:
        "results/benchmarks/probe_matrix.tsv"
    conda:
        "../../envs/vlalign.yaml"
    shell:
        "vlalign probe-matrix --settings {params.settings:q} --cells {input.cells:q} --vision {input.vision:q}"
        " --out {params.out_dir:q} > {log:q} 2>&1"
