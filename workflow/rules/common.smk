# Config validation (before any job starts) and the names every rule shares.
import sys
from pathlib import Path

from vlalign.config import ConfigError, eval_sources, validate_config
from vlalign.evaluate.run import eval_dataset
from vlalign.stages import stage_settings_json


try:
    config.update(validate_config(config))
except ConfigError as error:
    sys.exit(f"vlalign: {error}")


IMAGE_ENCODER = config["image_encoder"]
TEXT_ENCODER = config["text_encoder"]
PAIR = f"{IMAGE_ENCODER}__{TEXT_ENCODER}"
EVAL_SOURCES = eval_sources(config)
DATASETS = ["pool", *(eval_dataset(s) for s in EVAL_SOURCES)]
RUNS = list(config["train"]["runs"])


wildcard_constraints:
    source="|".join(config["sources"]),
    dataset="|".join(DATASETS),
    encoder="|".join(config["encoders"]),
    run="|".join(RUNS),


def settings(stage):
    """Params function: the JSON settings of `stage` for a job's wildcards."""
    return lambda wildcards: stage_settings_json(config, stage, **dict(wildcards.items()))


def convert_input(wildcards):
    """The curated pool, or the download of the source whose eval split the dataset is."""
    if wildcards.dataset == "pool":
        return {"shards": "results/curate/pool"}
    return {"shards": f"results/download/{wildcards.dataset.removeprefix('eval_')}"}


def convert_folder(wildcards, input):
    return f"{input.shards}/shards" if wildcards.dataset == "pool" else f"{input.shards}/eval"


def embeddings(dataset, encoder):
    return f"results/embeddings/{dataset}/{encoder}"


def print_summary(path):
    if Path(path).exists():
        print(f"\n{Path(path).read_text().split('## All metrics')[0]}")
