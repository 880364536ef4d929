# Config validation (before any job starts) and the names every rule shares.
import sys
from pathlib import Path

from vlalign.config import (
    ConfigError,
    eval_dataset,
    eval_sources,
    experiment_dir,
    probe_encoders,
    run_pool,
    scoring_run,
    train_settings,
    validate_config,
)
from vlalign.data.download import SOURCE_TYPES
from vlalign.encoders import uses_hub
from vlalign.stage import stage_settings_json


try:
    # The experiment is named after the last config file when the config names none.
    config.update(validate_config(config, name=Path(workflow.configfiles[-1]).stem if workflow.configfiles else None))
except ConfigError as error:
    sys.exit(f"vlalign: {error}")


# Every output of this experiment lives here, beside other experiments' folders.
RESULTS = str(experiment_dir(config))


def result(path):
    """A path inside the experiment's folder."""
    return f"{RESULTS}/{path}"


IMAGE_ENCODER = config["image_encoder"]
TEXT_ENCODER = config["text_encoder"]
EVAL_SOURCES = eval_sources(config)
# Dataset name -> the source whose eval split it is.
EVAL_DATASETS = {eval_dataset(s): s for s in EVAL_SOURCES}
DATASETS = ["pool", *EVAL_DATASETS]
RUNS = list(config["train"]["runs"])
POOLS = list(config["curate"]["pools"])


wildcard_constraints:
    source="|".join(config["sources"]),
    dataset="|".join(DATASETS),
    encoder="|".join(config["encoders"]),
    image_encoder="|".join(config["encoders"]),
    text_encoder="|".join(config["encoders"]),
    run="|".join(RUNS),
    pool="|".join(POOLS),
    part=r"\d+",
    # Never matches when no extra caption sets are configured.
    field="|".join(config["captions"]["extra"]) or "(?!)",


def settings(stage):
    """Params function: the JSON settings of `stage` for a job's wildcards."""
    return lambda wildcards: stage_settings_json(config, stage, **dict(wildcards.items()))


def download_input(wildcards):
    """The URL table, image folder or benchmark folder of the source, so editing it re-runs the download."""
    source = config["sources"][wildcards.source]
    return [source["path"]] if SOURCE_TYPES[source["type"]].path else []


def encoder_weights(wildcards):
    """The record of a hub encoder's cached weights (fetch_encoder), so no GPU job waits on the hub; nothing for
    weights that ship in a package or sit at a local `path`."""
    return [result(f"encoders/{wildcards.encoder}.json")] if uses_hub(config["encoders"][wildcards.encoder]) else []


def convert_input(wildcards):
    """The downloads of the pool's sources, or of the source whose eval split the dataset is.

    The whole pool is converted and embedded once; curated pools select from its embeddings.
    """
    if wildcards.dataset == "pool":
        return {"downloads": [result(f"download/{s}") for s in config["curate"]["sources"]]}
    return {"downloads": [result(f"download/{EVAL_DATASETS[wildcards.dataset]}")]}


def convert_folders(wildcards, input):
    split = "train" if wildcards.dataset == "pool" else "eval"
    return [f"{folder}/{split}" for folder in input.downloads]


def select_input(wildcards):
    inputs = {
        "measurements": result("curate/measurements.parquet"),
        "pool": [result(f"download/{s}") for s in config["curate"]["sources"]],
    }
    scorer = scoring_run(config, wildcards.pool)
    if scorer is not None:
        inputs["scores"] = result(f"curate/alignment/{scorer}.parquet")
    return inputs


def curated_pool(pool):
    return result(f"curate/pools/{pool}")


def embeddings(dataset, encoder):
    return result(f"embeddings/{dataset}/{encoder}")


def extra_caption_embeddings(field, encoder):
    """Text embeddings of one extra caption set (captions.extra) of the pool."""
    return result(f"embeddings/pool_captions/{field}/{encoder}")


def negative_embeddings(encoder):
    """Text embeddings of the pool's rule-made hard-negative captions."""
    return result(f"embeddings/pool_negatives/{encoder}")


def print_summary(path):
    if Path(path).exists():
        # The title and the headline section: the sections after it are for reading in the file.
        print("\n" + "\n## ".join(Path(path).read_text().split("\n## ")[:2]))
