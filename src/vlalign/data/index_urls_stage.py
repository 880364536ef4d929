"""`vlalign index-urls`: a URL list read once into chunks and partitions, its repeated keys and its subset."""

from __future__ import annotations

from vlalign.stage import Stage, arg, print_summary, track


def settings(config: dict, source: str) -> dict:
    return {"source": config["sources"][source], "samples_per_shard": config["samples_per_shard"]}


def run(settings: dict, args) -> None:
    from vlalign.data.download import source_paths
    from vlalign.data.url_index import index_url_list
    from vlalign.schema import complete

    source = complete("sources.*", settings["source"], what=f"sources.{args.source}")
    with track("index_urls", settings, source=args.source) as tracked:
        tracked.log_inputs("source", *source_paths(source))
        summary = index_url_list(args.source, source, settings["samples_per_shard"], args.out, args.store)
        files = summary.pop("files")
        tracked.log_metrics({k: v for k, v in summary.items() if isinstance(v, int)})
        tracked.log_output("index", args.out)
    print_summary("index-urls", {**summary, "files": len(files)})


STAGE = Stage(
    "index-urls", "read a url_list once: its chunks, partitions, repeated keys, subset and reusable rows", run,
    arguments=(
        arg("--source", required=True, help="source name (a url_list of `sources`)"),
        arg("--store", required=True, help="the source's outcome store folder (read only)"),
        arg("--out", required=True, help="index folder"),
    ),
    settings=settings, wildcards=("source",),
)  # fmt: skip
