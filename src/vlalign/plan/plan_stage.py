"""`vlalign plan`: what a configuration will cost per stage (items, FLOPs, disk, memory, time on a named GPU),
printed as a table with its assumptions and logged to MLflow; nothing is downloaded or run."""

from __future__ import annotations

import tempfile
from pathlib import Path

from vlalign.stage import Stage, arg, track

DEFAULT_GPU = "A100-80GB"


def settings(config: dict) -> dict:
    return config  # the plan reads every stage's keys


def run(settings: dict, args) -> None:
    from vlalign.io import atomic_dir
    from vlalign.plan.gpus import find_gpu
    from vlalign.plan.plan import Planner
    from vlalign.plan.render import FILES, metrics, render, write_outputs

    gpus = [find_gpu(name) for name in args.gpu]
    if args.samples is not None and args.samples < 2:
        raise ValueError(f"--samples must be at least 2 pairs, got {args.samples}")
    with track("plan", settings) as tracked:
        plan = Planner(settings, gpus, args.samples).plan()
        print(render(plan), flush=True)
        if args.out:
            with atomic_dir(args.out) as tmp:
                write_outputs(plan, tmp)
            _log_files(tracked, Path(args.out), FILES)
        else:
            with tempfile.TemporaryDirectory(prefix="vlalign-plan-") as tmp:
                write_outputs(plan, Path(tmp))
                _log_files(tracked, Path(tmp), FILES)
        tracked.set_tags({"plan.gpus": " ".join(g.name for g in gpus), "plan.samples": args.samples})
        tracked.log_metrics(metrics(plan))


def _log_files(tracked, folder: Path, names) -> None:
    for name in names:
        tracked.log_output(name.replace(".", "_"), folder / name)


STAGE = Stage(
    "plan", "what a config will cost: items, FLOPs, disk, memory and time per stage on a named GPU", run,
    arguments=(
        arg("--gpu", nargs="+", default=[DEFAULT_GPU], metavar="NAME",
            help=f"GPU(s) to project the time on (default: {DEFAULT_GPU}; names in vlalign/plan/gpus.yaml)"),
        arg("--samples", type=int, help="the training pool's size in pairs, instead of what the sources give"),
        arg("--out", help="folder for plan.md, plan.csv and plan.json"),
    ),
    settings=settings,
)  # fmt: skip
