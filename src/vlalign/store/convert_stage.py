"""`vlalign convert`: webdataset shards into an FFCV .beton and its sample table, every record read back."""

from __future__ import annotations

from pathlib import Path

from vlalign.stage import Stage, arg, print_summary, track


def settings(config: dict) -> dict:
    return {"convert": config["convert"]}


def run(settings: dict, args) -> None:
    from vlalign.data.shards import shard_paths
    from vlalign.store.beton import verify_beton, write_beton

    dataset = Path(args.beton).stem
    with track("convert", settings, dataset=dataset) as tracked:
        tracked.log_inputs("conversion", *args.inputs)
        for folder in args.inputs:
            shard_paths(folder)
        convert = settings["convert"]
        summary = write_beton([Path(f) for f in args.inputs], Path(args.beton), Path(args.table), **convert)
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
    ),
    settings=settings,
)  # fmt: skip
