"""`vlalign measure-samples`: the measurements of each sample of one partition alone (images, captions, language,
concepts), for `vlalign measure` to compare across the pool."""

from __future__ import annotations

from pathlib import Path

from vlalign.curate.measure_stage import settings
from vlalign.stage import Stage, arg, print_summary, track


def run(settings: dict, args) -> None:
    from vlalign.curate.measure import measure_samples
    from vlalign.io import atomic_path

    with track("measure_samples", settings, source=args.source, partition=args.partition) as tracked:
        tracked.log_inputs("partition", *args.inputs)
        with atomic_path(args.out) as tmp:
            measured = measure_samples([Path(f) for f in args.inputs], settings["measure"])
            measured.to_parquet(tmp, index=False)
        summary = {"samples": len(measured), **{f"seconds.{k}": float(v) for k, v in measured.attrs["seconds"].items()}}
        tracked.log_metrics(summary)
        tracked.log_output("measured", args.out)
    print_summary("measure-samples", summary)


STAGE = Stage(
    "measure-samples", "measure each sample of one partition alone: images, captions, language, concepts", run,
    arguments=(
        arg("--source", required=True, help="source name"),
        arg("--partition", required=True, help="partition (4 digits)"),
        arg("--inputs", nargs="+", required=True, help="the partition's train shard folder"),
        arg("--out", required=True, help="the partition's table (.parquet)"),
    ),
    settings=settings,
)  # fmt: skip
