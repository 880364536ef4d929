"""`vlalign select`: a curated pool's filters applied to the measurements: decisions and report (the curated
shards are written a partition at a time, by `vlalign curated-shards`)."""

from __future__ import annotations

from pathlib import Path

from vlalign.config import pool_filters
from vlalign.stage import Stage, arg, print_summary, track


def settings(config: dict, pool: str) -> dict:
    return {"filters": pool_filters(config, pool)}


def run(settings: dict, args) -> None:
    import pandas as pd

    from vlalign.curate.alignment import metadata_scores
    from vlalign.curate.decide import decide
    from vlalign.curate.report import write_curation_report
    from vlalign.io import atomic_dir, atomic_path

    filters = settings["filters"]
    with track("select", settings, pool=args.pool) as tracked:
        tracked.log_inputs("curation", args.measurements, args.alignment_scores, args.semantic_neighbours,
                           *args.inputs)  # fmt: skip
        measurements = pd.read_parquet(args.measurements)
        folders = [Path(f) for f in args.inputs]
        field = next((f["score_field"] for f in filters if f["name"] == "alignment"), None)
        scores = metadata_scores(folders, field) if field else (
            pd.read_parquet(args.alignment_scores) if args.alignment_scores else None)
        if scores is not None:
            measurements = measurements.merge(scores, on="key", how="left")
        if args.semantic_neighbours:
            measurements = measurements.merge(pd.read_parquet(args.semantic_neighbours), on="key", how="left")
        with atomic_dir(args.out) as tmp:
            decisions = decide(measurements, filters)
            with atomic_path(tmp / "decisions.parquet") as part:
                decisions.to_parquet(part, index=False)
            summary = write_curation_report(decisions, folders, tmp, filters)
        tracked.log_metrics(summary)
        tracked.log_output("decisions", Path(args.out) / "decisions.parquet")
        for figure in sorted(Path(args.out).glob("*.png")) + sorted(Path(args.out).glob("*.md")):
            tracked.log_output(figure.stem, figure)
    print_summary("select", summary)


STAGE = Stage(
    "select", "apply a curated pool's filters: decisions.parquet and the curation report", run,
    arguments=(
        arg("--pool", required=True, help="pool name (a key of curate.pools)"),
        arg("--measurements", required=True),
        arg("--alignment-scores", help="scores.parquet of the run that scores this pool"),
        arg("--semantic-neighbours", help="semantic_neighbours.parquet, for a pool with the semantic_dedup filter"),
        arg("--inputs", nargs="+", required=True, help="shard folders of the pool"),
        arg("--out", required=True),
    ),
    settings=settings, wildcards=("pool",),
)  # fmt: skip
