"""`vlalign audit`: a curated pool's filters checked against the truth its planted sources recorded."""

from __future__ import annotations

from vlalign.config import eval_sources, pool_filters
from vlalign.stage import Stage, arg, print_summary, track


def settings(config: dict, pool: str) -> dict:
    curate = config["curate"]
    planted = {name: {key: config["sources"][name][key] for key in ("from", "eval_from")} for name in curate["sources"]
               if config["sources"][name]["type"] == "planted"}  # fmt: skip
    # The targeted filters' settings, for the cut each would make where the pool does not apply it.
    return {"filters": pool_filters(config, pool), "ocr": curate["measure"]["ocr"], "planted": planted,
            "curate_sources": curate["sources"], "eval_sources": eval_sources(config),
            "resamples": config["evaluate"]["bootstrap_resamples"],
            **{name: curate["filters"][name] for name in ("alignment", "decontaminate", "text_spotting")}}  # fmt: skip


def run(settings: dict, args) -> None:
    import pandas as pd

    from vlalign.curate.audit import audit_metrics, audit_pool, load_truth, planted_frame, write_audit

    with track("audit", settings, pool=args.pool) as tracked:
        tracked.log_inputs("audit", args.decisions, args.alignment_scores, *args.planted)
        scores = pd.read_parquet(args.alignment_scores) if args.alignment_scores else None
        frame = planted_frame(pd.read_parquet(args.decisions), load_truth(args.planted), scores)
        audit = audit_pool(frame, settings, args.pool)
        paths = write_audit(audit, frame, args.out)
        summary = audit_metrics(audit)
        tracked.log_metrics(summary)
        for name, path in paths.items():
            tracked.log_output(name, path)
    print_summary("audit", summary)


STAGE = Stage(
    "audit", "check a curated pool's filters against the planted truth: audit.json, audit.md, audit.png", run,
    arguments=(
        arg("--pool", required=True, help="pool name (a key of curate.pools)"),
        arg("--decisions", required=True, help="the pool's decisions.parquet (`vlalign select`)"),
        arg("--planted", nargs="+", required=True, help="download folders of the planted sources (planted.parquet)"),
        arg("--alignment-scores", help="scores.parquet of the alignment filter's run, when it scores the pool"),
        arg("--out", required=True, help="output folder: audit.json, audit.md, audit.png"),
    ),
    settings=settings, wildcards=("pool",),
)  # fmt: skip
