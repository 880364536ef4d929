"""`vlalign measure`: every curation filter's value for every sample of the pool, measured once: the partitions'
tables (`vlalign measure-samples`) joined, and the measurements that compare samples run over all of them."""

from __future__ import annotations

from pathlib import Path

from vlalign.config import pool_filters
from vlalign.stage import Stage, arg, print_summary, track


def settings(config: dict) -> dict:
    """With `ocr: survivors` and no `filters` of its own, OCR reads what passes the filters that the first pool
    applying text_spotting places before it."""
    measure = dict(config["curate"]["measure"])
    spotting = [pool for pool, names in config["curate"]["pools"].items() if "text_spotting" in names]
    if spotting and measure["filters"] is None:
        measure["filters"] = [f for f in pool_filters(config, spotting[0]) if f["name"] != "alignment"]
    return {"measure": measure}


def run(settings: dict, args) -> None:
    import pandas as pd

    from vlalign.curate.measure import measure_set
    from vlalign.io import atomic_path

    with track("measure", settings) as tracked:
        tracked.log_inputs("partitions", *args.partitions)
        tracked.log_inputs("decontamination", *args.eval_inputs)
        with atomic_path(args.out) as tmp:
            measurements = measure_set([pd.read_parquet(p) for p in args.partitions], [Path(f) for f in args.inputs],
                                       [Path(f) for f in args.eval_inputs], settings["measure"])  # fmt: skip
            measurements.to_parquet(tmp, index=False)
        summary = {"samples": len(measurements), **{f"samples.{k}": int(v) for k, v in
                   measurements["source"].value_counts().items()}}  # fmt: skip
        summary.update({f"seconds.{k}": float(v) for k, v in measurements.attrs.get("seconds", {}).items()})
        tracked.log_metrics(summary)
        tracked.log_output("measurements", args.out)
    print_summary("measure", summary)


STAGE = Stage(
    "measure", "measure every curation filter's value for every sample of the pool", run,
    arguments=(
        arg("--partitions", nargs="+", required=True, help="the partitions' tables (`vlalign measure-samples`)"),
        arg("--inputs", nargs="+", required=True, help="shard folders of the pool (OCR of the survivors reads them)"),
        arg("--eval-inputs", nargs="*", default=[], help="shard folders of eval splits (decontamination)"),
        arg("--out", required=True, help="measurements.parquet"),
    ),
    settings=settings,
)  # fmt: skip
