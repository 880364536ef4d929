"""`vlalign download`: a source into webdataset shards per split and a manifest of every item."""

from __future__ import annotations

from pathlib import Path

from vlalign.stage import Stage, arg, print_summary, track


def settings(config: dict, source: str) -> dict:
    return {"source": config["sources"][source], "deb_cache": config["deb_cache"],
            "samples_per_shard": config["samples_per_shard"]}  # fmt: skip


def run(settings: dict, args) -> None:
    from vlalign.data.download import run_download, source_paths

    with track("download", settings, source=args.source, partition=str(args.partition)) as tracked:
        paths = source_paths(settings["source"])
        if paths:  # a local URL table or folder
            tracked.log_inputs("source", *paths)
        summary = run_download(args.source, settings["source"], args.out, settings["deb_cache"],
                               settings["samples_per_shard"], args.partition, args.index, args.store)  # fmt: skip
        tracked.log_metrics(summary)
        tracked.log_output("manifest", Path(args.out) / "manifest.parquet")
        tracked.log_output("shards", args.out)
    print_summary("download", summary)


STAGE = Stage(
    "download", "fetch a source into webdataset shards + manifest", run,
    arguments=(
        arg("--source", required=True, help="source name (a key of `sources`)"),
        arg("--partition", type=int, default=0, help="which partition of a url_list (0-based)"),
        arg("--index", help="a url_list's index folder (`vlalign index-urls`)"),
        arg("--store", help="a url_list's outcome store folder"),
        arg("--out", required=True, help="output folder: {split}/shard-*.tar + manifest.parquet"),
    ),
    settings=settings, wildcards=("source",),
)  # fmt: skip
