"""`vlalign vision-probe`: k-NN and linear-probe accuracy of one vision encoder's frozen features."""

from __future__ import annotations

from vlalign.stage import Stage, arg, print_summary, track


def settings(config: dict) -> dict:
    return {k: config["probe"][k] for k in ("knn_ks", "knn_temperature")}


def run(settings: dict, args) -> None:
    from vlalign.io import write_json
    from vlalign.probe.vision import vision_probes

    with track("vision_probe", settings, encoder=args.encoder) as tracked:
        tracked.log_inputs("evaluation", *args.class_image_embeddings, *args.class_tables)
        metrics = vision_probes(args.class_image_embeddings, args.class_tables, settings["knn_ks"],
                                settings["knn_temperature"])  # fmt: skip
        write_json(args.out, {"name": f"vision:{args.encoder}", "metrics": metrics})
        tracked.log_metrics(metrics)
        tracked.log_output("metrics", args.out)
    print_summary("vision_probe", metrics)


STAGE = Stage(
    "vision-probe", "k-NN and linear-probe accuracy of a vision encoder's frozen features", run,
    arguments=(
        arg("--encoder", required=True, help="alias of the vision encoder"),
        arg("--class-image-embeddings", nargs="*", default=[], help="its image embeddings of classification sets"),
        arg("--class-tables", nargs="*", default=[], help="their .beton tables (category per key)"),
        arg("--out", required=True, help="metrics.json"),
    ),
    settings=settings,
)  # fmt: skip
