"""`vlalign convert`: webdataset shards into an FFCV .beton and its sample table, every record read back."""

from __future__ import annotations

from pathlib import Path

from vlalign.stage import Stage, arg, print_summary, track


def settings(config: dict) -> dict:
    return {"convert": config["convert"]}


def run(settings: dict, args) -> None:
    from vlalign.data.shards import folder_shards
    from vlalign.store.beton import verify_beton, write_beton

    # A partition of the pool may hold no image at all (every row of it failed to download); a dataset may not.
    partition = args.partition is not None
    wildcards = ({"dataset": "pool", "source": args.source, "partition": args.partition} if partition
                 else {"dataset": Path(args.beton).stem})  # fmt: skip
    with track("convert", settings, **wildcards) as tracked:
        tracked.log_inputs("conversion", *[folder for folder in args.inputs if Path(folder).exists()])
        if not partition:
            folder_shards(args.inputs)  # a dataset with no shards at all fails here, naming its folders
        convert = settings["convert"]
        summary = write_beton([Path(f) for f in args.inputs], Path(args.beton), Path(args.table),
                              allow_empty=partition, **convert)  # fmt: skip
        skipped = summary.pop("skipped", [])
        summary["skipped"] = len(skipped)
        # Read every record back before anything downstream trusts the file.
        summary.update(verify_beton(Path(args.beton), Path(args.table), num_workers=convert["num_workers"]))
        tracked.log_metrics(summary)
        tracked.log_output("beton", args.beton)
        tracked.log_output("table", args.table)
    for item in skipped:
        print(f"vlalign convert: skipped {item['key']}: {item['reason']}", flush=True)
    print_summary("convert", summary)


STAGE = Stage(
    "convert", "webdataset shards -> FFCV .beton + a sample table", run,
    arguments=(
        arg("--inputs", nargs="+", required=True, help="shard folders"),
        arg("--beton", required=True),
        arg("--table", required=True),
        arg("--source", help="with --partition: the pool's source whose download partition this is"),
        arg("--partition", help="one download partition of the pool (0000, ...), which may hold no image"),
    ),
    settings=settings,
)  # fmt: skip
