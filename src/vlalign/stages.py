"""The slice of the configuration each stage sees.

The Snakefile passes exactly this slice to `vlalign <stage> --settings`, so a change to
one stage's keys re-runs that stage and what depends on it, nothing else; run standalone,
`vlalign <stage> --config FILE` derives the same slice from the whole file.
"""

from __future__ import annotations

import json

from vlalign.config import probe_settings, train_settings


def stage_settings(config: dict, stage: str, **wildcards: str) -> dict:
    common = {"experiment": config["experiment"], "tracking_uri": config["tracking_uri"]}
    if stage == "download":
        source = wildcards["source"]
        specific = {"source": config["sources"][source], "deb_cache": config["deb_cache"],
                    "samples_per_shard": config["samples_per_shard"]}  # fmt: skip
    elif stage == "curate":
        specific = {"curate": config["curate"], "samples_per_shard": config["samples_per_shard"]}
    elif stage == "convert":
        specific = {"convert": config["convert"]}
    elif stage == "embed":
        specific = {"encoder": config["encoders"][wildcards["encoder"]], "embed": config["embed"]}
    elif stage == "train":
        specific = {"train": train_settings(config, wildcards["run"]), "device": config["train"]["device"],
                    "encoders": _tower_specs(config)}  # fmt: skip
    elif stage == "probe":
        specific = {"train": probe_settings(config), "device": config["train"]["device"],
                    "encoders": _tower_specs(config), "ks": config["evaluate"]["ks"]}  # fmt: skip
    elif stage == "evaluate":
        specific = {"evaluate": config["evaluate"], "device": config["train"]["device"],
                    "text_encoder": config["encoders"][config["text_encoder"]]}  # fmt: skip
    elif stage == "report":
        specific = {}
    else:
        raise ValueError(f"unknown stage {stage!r}")
    return {**common, **specific}


def _tower_specs(config: dict) -> dict:
    return {
        "image": {"alias": config["image_encoder"], **config["encoders"][config["image_encoder"]]},
        "text": {"alias": config["text_encoder"], **config["encoders"][config["text_encoder"]]},
    }


def stage_settings_json(config: dict, stage: str, **wildcards: str) -> str:
    return json.dumps(stage_settings(config, stage, **wildcards), sort_keys=True, separators=(",", ":"))
