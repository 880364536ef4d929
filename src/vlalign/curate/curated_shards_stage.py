"""`vlalign curated-shards`: the kept samples of one partition of the pool, as webdataset shards of a curated pool
(the pool's decisions are made once, by `vlalign select`; copying the images is the part that scales)."""

from __future__ import annotations

from pathlib import Path

from vlalign.stage import Stage, arg, print_summary, track


def settings(config: dict) -> dict:
    return {"samples_per_shard": config["samples_per_shard"]}


def run(settings: dict, args) -> None:
    import pandas as pd

    from vlalign.curate.shards import write_curated_shards
    from vlalign.io import atomic_dir

    with track("curated_shards", settings, pool=args.pool, source=args.source, partition=args.partition) as tracked:
        tracked.log_inputs("partition", args.decisions, args.measured, args.inputs)
        decisions = pd.read_parquet(args.decisions, columns=["key", "kept"])
        keys = set(pd.read_parquet(args.measured, columns=["key"])["key"])
        with atomic_dir(args.out) as tmp:
            written = write_curated_shards(decisions, [Path(args.inputs)], tmp, settings["samples_per_shard"], keys)
        summary = {"samples": len(keys), "kept": written}
        tracked.log_metrics(summary)
        tracked.log_output("shards", args.out)
    print_summary("curated-shards", summary)


STAGE = Stage(
    "curated-shards", "write the kept samples of one partition of a curated pool as webdataset shards", run,
    arguments=(
        arg("--pool", required=True, help="pool name (a key of curate.pools)"),
        arg("--source", required=True),
        arg("--partition", required=True),
        arg("--decisions", required=True, help="the pool's decisions.parquet (`vlalign select`)"),
        arg("--measured", required=True, help="the partition's table (`vlalign measure-samples`): its keys"),
        arg("--inputs", required=True, help="the partition's train shard folder"),
        arg("--out", required=True),
    ),
    settings=settings,
)  # fmt: skip
