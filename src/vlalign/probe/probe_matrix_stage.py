"""`vlalign probe-matrix`: every probe cell and vision probe joined: table, correlations, heat map, scatter."""

from __future__ import annotations

import json
from pathlib import Path

from vlalign.config import probe_encoders
from vlalign.stage import Stage, arg, print_summary, track

OUTPUTS = ("matrix.csv", "correlations.csv", "probing.md", "alignment_heatmap.png", "alignment_vs_vision.png")


def settings(config: dict) -> dict:
    images, texts = probe_encoders(config)
    return {"image_encoders": images, "text_encoders": texts, "knn_ks": config["probe"]["knn_ks"],
            "eval_source": config["probe"]["eval_source"]}  # fmt: skip


def run(settings: dict, args) -> None:
    from vlalign.io import atomic_dir
    from vlalign.probe.matrix import write_probing_matrix

    cells = []
    for folder in args.cells:
        image, _, text = Path(folder).name.partition("__")
        data = json.loads((Path(folder) / "metrics.json").read_text())
        cells.append({"image_encoder": image, "text_encoder": text, "metrics": data["metrics"]})
    vision = {Path(path).stem: json.loads(Path(path).read_text())["metrics"] for path in args.vision}
    with track("probe_matrix", settings) as tracked:
        with atomic_dir(args.out) as tmp:
            metrics = write_probing_matrix(cells, vision, settings, tmp)
        tracked.log_metrics(metrics)
        for name in OUTPUTS:
            tracked.log_output(name.replace(".", "_"), Path(args.out) / name)
    print_summary("probe_matrix", {k: v for k, v in metrics.items() if k.endswith(".all.pearson")})


STAGE = Stage(
    "probe-matrix", "the probing matrix: table, correlations, heat map, scatter", run,
    arguments=(
        arg("--cells", nargs="+", required=True, help="probe output folders, named {vision}__{text}"),
        arg("--vision", nargs="+", required=True, help="vision-probe metrics files, named {vision}.json"),
        arg("--out", required=True, help="output folder"),
    ),
    settings=settings,
)  # fmt: skip
