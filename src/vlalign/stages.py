"""The slice of the configuration each stage sees.

The Snakefile passes exactly this slice to `vlalign <stage> --settings`, so a change to
one stage's keys re-runs that stage and what depends on it, nothing else; run standalone,
`vlalign <stage> --config FILE` derives the same slice from the whole file.
"""

from __future__ import annotations

import json

from vlalign.config import pool_filters, probe_encoders, probe_settings, run_pool, train_settings


def stage_settings(config: dict, stage: str, **wildcards: str) -> dict:
    common = {"experiment": config["experiment"], "tracking_uri": config["tracking_uri"]}
    if stage == "download":
        source = wildcards["source"]
        specific = {"source": config["sources"][source], "deb_cache": config["deb_cache"],
                    "samples_per_shard": config["samples_per_shard"]}  # fmt: skip
    elif stage == "measure":
        specific = {"measure": _measure_settings(config)}
    elif stage == "select":
        specific = {"filters": pool_filters(config, wildcards["pool"]), "samples_per_shard": config["samples_per_shard"]}
    elif stage == "score":
        specific = {"device": config["train"]["device"]}
    elif stage == "negatives":
        specific = {"negatives": config["negatives"]}
    elif stage == "convert":
        specific = {"convert": config["convert"]}
    elif stage == "embed":
        specific = {"encoder": config["encoders"][wildcards["encoder"]], "embed": config["embed"]}
    elif stage == "train":
        # The .beton's image bound goes into the exported model: load_model prepares images alike.
        specific = {"train": train_settings(config, wildcards["run"]), "device": config["train"]["device"],
                    "encoders": _tower_specs(config),
                    "convert": {"max_resolution": config["convert"]["max_resolution"]}}  # fmt: skip
    elif stage == "probe":
        # One cell of the probing matrix; run standalone, the workflow's own pair.
        image = wildcards.get("image_encoder") or config["image_encoder"]
        text = wildcards.get("text_encoder") or config["text_encoder"]
        specific = {"train": probe_settings(config), "device": config["train"]["device"],
                    "encoders": _tower_specs(config, image, text), "ks": config["evaluate"]["ks"]}  # fmt: skip
    elif stage == "vision_probe":
        specific = {k: config["probe"][k] for k in ("knn_ks", "knn_temperature")}
    elif stage == "probe_matrix":
        images, texts = probe_encoders(config)
        specific = {"image_encoders": images, "text_encoders": texts, "knn_ks": config["probe"]["knn_ks"],
                    "eval_source": config["probe"]["eval_source"]}  # fmt: skip
    elif stage == "evaluate":
        specific = {"evaluate": config["evaluate"], "device": config["train"]["device"],
                    "text_encoder": config["encoders"][config["text_encoder"]]}  # fmt: skip
    elif stage == "report":
        specific = {"run_pools": {run: run_pool(config, run) for run in config["train"]["runs"]}}
    else:
        raise ValueError(f"unknown stage {stage!r}")
    return {**common, **specific}


def _measure_settings(config: dict) -> dict:
    """With OCR on survivors, OCR reads what passes the filters a text-spotting pool applies first."""
    measure = dict(config["curate"]["measure"])
    spotting = [p for p, names in config["curate"]["pools"].items() if "text_spotting" in names]
    if spotting and "filters" not in measure:
        measure["filters"] = [f for f in pool_filters(config, spotting[0]) if f["name"] != "alignment"]
    return measure


def _tower_specs(config: dict, image: str | None = None, text: str | None = None) -> dict:
    image, text = image or config["image_encoder"], text or config["text_encoder"]
    return {
        "image": {"alias": image, **config["encoders"][image]},
        "text": {"alias": text, **config["encoders"][text]},
    }


def stage_settings_json(config: dict, stage: str, **wildcards: str) -> str:
    return json.dumps(stage_settings(config, stage, **wildcards), sort_keys=True, separators=(",", ":"))
