# SAIL's probing matrix: the linear alignment probe of every (vision, text) encoder pair in
# probe.image_encoders x probe.text_encoders, the k-NN and linear-probe accuracy of each vision
# encoder, and their correlations. Every encoder's embeddings come from the embed rule once and
# are shared by all cells and runs that use them.
PROBE_IMAGE_ENCODERS, PROBE_TEXT_ENCODERS = probe_encoders(config)
PROBE_CLASS_SETS = [eval_dataset(s) for s in config["evaluate"]["zeroshot"]]


# Rules only where the config asks for a probing matrix.
if PROBE_IMAGE_ENCODERS:

    rule probe:
        input:
            image=embeddings("pool", "{image_encoder}"),
            text=embeddings("pool", "{text_encoder}"),
            pool=curated_pool(config["probe"]["pool"]),
            eval_image=embeddings(eval_dataset(config["probe"]["eval_source"]), "{image_encoder}"),
            eval_text=embeddings(eval_dataset(config["probe"]["eval_source"]), "{text_encoder}"),
        output:
            directory(result("probe/{image_encoder}__{text_encoder}")),
        params:
            settings=settings("probe"),
            decisions=lambda wildcards, input: f"{input.pool}/decisions.parquet",
        resources:
            gpu=1,
        log:
            result("logs/probe/{image_encoder}__{text_encoder}.log"),
        benchmark:
            result("benchmarks/probe/{image_encoder}__{text_encoder}.tsv")
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
            class_tables=[result(f"beton/{dataset}.parquet") for dataset in PROBE_CLASS_SETS],
        output:
            result("probe/vision/{encoder}.json"),
        params:
            settings=settings("vision_probe"),
        log:
            result("logs/vision_probe/{encoder}.log"),
        benchmark:
            result("benchmarks/vision_probe/{encoder}.tsv")
        conda:
            "../../envs/vlalign.yaml"
        shell:
            "vlalign vision-probe --settings {params.settings:q} --encoder {wildcards.encoder:q}"
            " --class-image-embeddings {input.class_images:q} --class-tables {input.class_tables:q}"
            " --out {output:q} > {log:q} 2>&1"


    rule probe_matrix:
        input:
            cells=expand(result("probe/{image}__{text}"), image=PROBE_IMAGE_ENCODERS, text=PROBE_TEXT_ENCODERS),
            vision=expand(result("probe/vision/{encoder}.json"), encoder=PROBE_IMAGE_ENCODERS),
        output:
            table=result("probe/matrix/matrix.csv"),
            correlations=result("probe/matrix/correlations.csv"),
            markdown=result("probe/matrix/probing.md"),
            metrics=result("probe/matrix/metrics.json"),
            heatmap=report(
                result("probe/matrix/alignment_heatmap.png"),
                caption="../report/probing_heatmap.rst",
                category="Probing",
            ),
            scatter=report(
                result("probe/matrix/alignment_vs_vision.png"),
                caption="../report/probing_scatter.rst",
                category="Probing",
            ),
        params:
            settings=settings("probe_matrix"),
            out_dir=lambda wildcards, output: str(Path(output.table).parent),
        log:
            result("logs/probe_matrix.log"),
        benchmark:
            result("benchmarks/probe_matrix.tsv")
        conda:
            "../../envs/vlalign.yaml"
        shell:
            "vlalign probe-matrix --settings {params.settings:q} --cells {input.cells:q} --vision {input.vision:q}"
            " --out {params.out_dir:q} > {log:q} 2>&1"
