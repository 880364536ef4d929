"""`vlalign report`: the comparison over every run of the workflow, as markdown, HTML and figures."""

from __future__ import annotations

import re
from pathlib import Path

from vlalign.config import run_baseline, run_pool, run_seeds
from vlalign.stage import Stage, arg, track

# A training folder: train/{run}/seed-{seed}.
SEED_FOLDER = re.compile(r"seed-(\d+)")


def settings(config: dict) -> dict:
    runs = config["train"]["runs"]
    return {"run_pools": {run: run_pool(config, run) for run in runs},
            "seeds": {run: run_seeds(config, run) for run in runs},
            "baselines": {run: run_baseline(config, run) for run in runs},
            "bootstrap_resamples": config["evaluate"]["bootstrap_resamples"]}  # fmt: skip


def train_folders(paths: list[str]) -> dict[str, dict[int, Path]]:
    """run -> seed -> folder, from the training folders `.../{run}/seed-{seed}`."""
    folders: dict[str, dict[int, Path]] = {}
    for path in map(Path, paths):
        found = SEED_FOLDER.fullmatch(path.name)
        if found is None:
            raise ValueError(f"{path}: a training folder is named train/{{run}}/seed-{{seed}}")
        folders.setdefault(path.parent.name, {})[int(found.group(1))] = path
    return folders


def run(settings: dict, args) -> None:
    from vlalign.report.report import write_report

    out = Path(args.out)
    with track("report", settings) as tracked:
        table = write_report([Path(p) for p in args.metrics], out, train_dirs=train_folders(args.runs),
                             run_pools=settings.get("run_pools"),
                             pool_dirs={Path(p).name: Path(p) for p in args.pools},
                             probing_dir=Path(args.probing) if args.probing else None,
                             seeds=settings.get("seeds"), baselines=settings.get("baselines"),
                             resamples=settings.get("bootstrap_resamples"),
                             audit_dirs=[Path(p) for p in args.audits])  # fmt: skip
        for figure in sorted(out.glob("*.png")):
            tracked.log_output(figure.stem, figure)
        for name in ("summary.md", "summary.csv", "comparisons.csv", "report.html"):
            tracked.log_output(name.replace(".", "_"), out / name)
    print(table, flush=True)


STAGE = Stage(
    "report", "the comparison report over every run: markdown, HTML, figures", run,
    arguments=(
        arg("--metrics", nargs="+", required=True,
            help="metrics.json files of evaluations (per_sample.parquet beside each) and probes"),
        arg("--runs", nargs="*", default=[], help="training folders train/{run}/seed-{seed} (curves.csv)"),
        arg("--pools", nargs="*", default=[], help="curated pool folders (decisions.parquet), named by pool"),
        arg("--probing", help="the probing matrix folder"),
        arg("--audits", nargs="*", default=[], help="the pools' planted-truth audit folders (curate/audit/{pool})"),
        arg("--out", required=True,
            help="output folder: summary.md, summary.csv, comparisons.csv, report.html, figures"),
    ),
    settings=settings,
)  # fmt: skip
