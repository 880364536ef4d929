"""`vlalign negatives`: a rule-made hard-negative caption for each sample of a table that some rule applies to."""

from __future__ import annotations

from vlalign.stage import Stage, arg, print_summary, track


def settings(config: dict) -> dict:
    return {"negatives": config["negatives"]}


def run(settings: dict, args) -> None:
    import numpy as np
    import pandas as pd

    from vlalign.align.negatives import negative_caption
    from vlalign.io import atomic_path

    rules = settings["negatives"]["rules"]
    with track("negatives", settings) as tracked:
        tracked.log_inputs("captions", args.table)
        table = pd.read_parquet(args.table, columns=["key", "caption"])
        made = [(key, *negative_caption(caption, key, rules)) for key, caption in zip(table["key"], table["caption"])]
        found = pd.DataFrame(made, columns=["key", "caption", "rule"]).dropna(subset=["caption"])
        found.insert(0, "row", np.arange(len(found)))
        with atomic_path(args.out) as tmp:
            found.to_parquet(tmp, index=False)
        summary = {"samples": len(table), "negatives": len(found),
                   **{f"rule.{k}": int(v) for k, v in found["rule"].value_counts().items()}}  # fmt: skip
        tracked.log_metrics(summary)
        tracked.log_output("negatives", args.out)
    print_summary("negatives", summary)


STAGE = Stage(
    "negatives", "a rule-made hard-negative caption for each sample of a table", run,
    arguments=(
        arg("--table", required=True, help="table with key and caption columns (the .beton's)"),
        arg("--out", required=True, help="negatives.parquet (row, key, caption, rule)"),
    ),
    settings=settings,
)  # fmt: skip
