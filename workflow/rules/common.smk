# Config validation (before any job starts) and the names every rule shares.
import sys
from pathlib import Path

from vlalign.config import (
    ConfigError,
    eval_dataset,
    eval_sources,
    experiment_dir,
    probe_encoders,
    run_instances,
    run_pool,
    run_seeds,
    scoring_run,
    train_settings,
    validate_config,
)
from vlalign.data.download import source_paths
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
# Every (run, seed) trained and evaluated: `train/{run}/seed-{seed}`.
RUN_INSTANCES = run_instances(config)
POOLS = list(config["curate"]["pools"])


wildcard_constraints:
    source="|".join(config["sources"]),
    dataset="|".join(DATASETS),
    encoder="|".join(config["encoders"]),
    image_encoder="|".join(config["encoders"]),
    text_encoder="|".join(config["encoders"]),
    run="|".join(RUNS),
    seed=r"\d+",
    pool="|".join(POOLS),
    part=r"\d+",
    partition=r"\d{4}",
    # Never matches when no extra caption sets are configured.
    field="|".join(config["captions"]["extra"]) or "(?!)",


def settings(stage):
    """Params function: the JSON settings of `stage` for a job's wildcards."""
    return lambda wildcards: stage_settings_json(config, stage, **dict(wildcards.items()))


def stage_argv(stage, arguments):
    """Params function giving workflow/scripts/stage.py its command line, `vlalign <stage> --settings ...` and then
    `arguments(wildcards, input, output)`: every partition's files, too many for a shell line."""
    return lambda wildcards, input, output: [
        stage.replace("_", "-"),
        "--settings",
        stage_settings_json(config, stage, **dict(wildcards.items())),
        *arguments(wildcards, input, output),
    ]


def trained(run, seed=None):
    """The folder of a run trained under `seed` (None: its first seed, the one that scores alignment)."""
    return result(f"train/{run}/seed-{run_seeds(config, run)[0] if seed is None else seed}")


def instance_paths(pattern):
    """`pattern` (with {run} and {seed}) for every (run, seed) of the experiment."""
    return [result(pattern.format(run=run, seed=seed)) for run, seed in RUN_INSTANCES]


def embed_arguments(wildcards, input, output):
    """The pool's every partition .beton, or an eval set's one."""
    return ["--encoder", wildcards.encoder, "--dataset", wildcards.dataset, "--beton", *input.betons,
            "--table", input.table, "--out", output[0]]  # fmt: skip


def download_input(wildcards):
    """The URL table (every file of a sharded one), image folder or benchmark folder of the source, so editing it
    re-runs the download; for a planted source, the downloads it is made from."""
    source = config["sources"][wildcards.source]
    if source["type"] == "planted":
        return downloads(dict.fromkeys([source["from"], *source["eval_from"]]))
    return source_paths(source)


def partition_input(wildcards):
    """A url_list's partition reads the list's index (and the list); other sources read their files."""
    if config["sources"][wildcards.source]["type"] == "url_list":
        return {"index": result(f"download/{wildcards.source}/index"), "files": download_input(wildcards)}
    return {"files": download_input(wildcards)}


def outcome_store(source):
    """A url_list's fetched rows, kept across re-runs (see data/outcome_store.py); no rule's output."""
    return result(f"download/{source}/store")


def partitions(source):
    return [f"{p:04d}" for p in range(config["sources"][source]["partitions"])]


def download_folders(sources, split):
    """The `split` shard folders of every partition of the sources, in order."""
    return [result(f"download/{s}/part-{p}/{split}") for s in sources for p in partitions(s)]


def downloads(sources):
    """The download outputs (partition folders) of the sources."""
    return [result(f"download/{s}/part-{p}") for s in sources for p in partitions(s)]


def encoder_weights(wildcards):
    """The record of a hub encoder's cached weights (fetch_encoder), so no GPU job waits on the hub; nothing for
    weights that ship in a package or sit at a local `path`."""
    return [result(f"encoders/{wildcards.encoder}.json")] if uses_hub(config["encoders"][wildcards.encoder]) else []


def convert_input(wildcards):
    """The downloads of the source whose eval split the dataset is (the pool is converted per partition)."""
    return {"downloads": downloads([EVAL_DATASETS[wildcards.dataset]])}


def convert_folders(wildcards, input):
    return [f"{folder}/eval" for folder in input.downloads]


def pool_partition_files(suffix):
    """The .beton (suffix "beton") or table ("parquet") of every partition of the pool, in the pool table's order.

    The whole pool is converted and embedded once; curated pools select from its embeddings.
    """
    return [result(f"beton/pool/{s}/part-{p}.{suffix}") for s in config["curate"]["sources"] for p in partitions(s)]


def embed_input(wildcards):
    """The images of a dataset (the pool's partition .betons, or an eval set's .beton) and its table."""
    if wildcards.dataset == "pool":
        return {"betons": pool_partition_files("beton"), "table": result("beton/pool.parquet")}
    return {"betons": [result(f"beton/{wildcards.dataset}.beton")], "table": result(f"beton/{wildcards.dataset}.parquet")}


def select_input(wildcards):
    inputs = {
        "measurements": result("curate/measurements.parquet"),
        "pool": downloads(config["curate"]["sources"]),
    }
    scorer = scoring_run(config, wildcards.pool)
    if scorer is not None:
        inputs["scores"] = result(f"curate/alignment/{scorer}.parquet")
    if "semantic_dedup" in config["curate"]["pools"][wildcards.pool]:
        inputs["semantic_neighbours"] = result("curate/semantic_neighbours.parquet")
    return inputs


def curated_pool(pool):
    return result(f"curate/pools/{pool}")


# The pool's planted sources: when it has any, every curated pool's filters are audited against their truth.
PLANTED_SOURCES = [s for s in config["curate"]["sources"] if config["sources"][s]["type"] == "planted"]


def audits():
    """The audit of every curated pool, or none when the pool has no planted source."""
    return [result(f"curate/audit/{pool}/audit.json") for pool in POOLS] if PLANTED_SOURCES else []


def audit_input(wildcards):
    """The pool's decisions, the planted sources' downloads (their planted.parquet) and, when a pool is scored by the
    alignment filter's run, its scores: a pool without the filter is audited at the cut the filter would make."""
    inputs = {"selected": curated_pool(wildcards.pool), "planted": downloads(PLANTED_SOURCES)}
    scorer = next((run for run in (scoring_run(config, pool) for pool in POOLS) if run), None)
    if scorer is not None:
        inputs["scores"] = result(f"curate/alignment/{scorer}.parquet")
    return inputs


def curated_shards():
    """The curated shards of every pool, a folder per partition of the pool's sources."""
    return [result(f"curate/shards/{pool}/{s}/part-{p}") for pool in POOLS for s in config["curate"]["sources"]
            for p in partitions(s)]  # fmt: skip


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
