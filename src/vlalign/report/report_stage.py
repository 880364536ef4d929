"""`vlalign report`: the comparison over every run of the workflow, as markdown, HTML and figures."""

from __future__ import annotations

from pathlib import Path

from vlalign.config import run_pool
from vlalign.stage import Stage, arg, track


def settings(config: dict) -> dict:
    return {"run_pools": {run: run_pool(config, run) for run in config["train"]["runs"]}}


def run(settings: dict, args) -> None:
    from vlalign.report.report import write_report

    out = Path(args.out)
    with track("report", settings) as tracked:
        table = write_report([Path(p) for p in args.metrics], out,
                             train_dirs={Path(p).name: Path(p) for p in args.runs},
                             run_pools=settings.get("run_pools"),
                             pool_dirs={Path(p).name: Path(p) for p in args.pools},
                             probing_dir=Path(args.probing) if args.probing else None)  # fmt: skip
        for figure in sorted(out.glob("*.png")):
            tracked.log_output(figure.stem, figure)
        for name in ("summary.md", "summary.csv", "report.html"):
            tracked.log_output(name.replace(".", "_"), out / name)
    print(table, flush=True)


STAGE = Stage(
    "report", "the comparison report over every run: markdown, HTML, figures", run,
    arguments=(
        arg("--metrics", nargs="+", required=True, help="metrics.json files of evaluations and probes"),
        arg("--runs", nargs="*", default=[], help="training run folders (curves.csv), named by run"),
        arg("--pools", nargs="*", default=[], help="curated pool folders (decisions.parquet), named by pool"),
        arg("--probing", help="the probing matrix folder"),
        arg("--out", required=True, help="output folder: summary.md, summary.csv, report.html, figures"),
    ),
    settings=settings,
)  # fmt: skip
