"""The stage contract: every `vlalign <stage>` command is one module holding a `STAGE`.

A stage declares its arguments, the slice of the configuration it receives (`settings`) and its run
function. The Snakefile passes exactly that slice to `vlalign <stage> --settings`, so a change to one
stage's keys re-runs that stage and what depends on it, nothing else; run standalone, `vlalign <stage>
--config FILE` derives the same slice from the whole file. STAGES lists the stage modules in the order of
the flow; `vlalign.cli` builds every subcommand from it. Stage modules import their domain code inside
`run`, so building the command line stays cheap.
"""

from __future__ import annotations

import argparse
import importlib
import json
from dataclasses import dataclass
from typing import Callable

STAGES = (
    "vlalign.plan.plan_stage",  # before the flow: what it will cost
    "vlalign.data.index_urls_stage",
    "vlalign.data.download_stage",
    "vlalign.curate.measure_samples_stage",
    "vlalign.curate.measure_stage",
    "vlalign.curate.select_stage",
    "vlalign.curate.audit_stage",
    "vlalign.curate.curated_shards_stage",
    "vlalign.curate.score_stage",
    "vlalign.curate.semdedup_stage",
    "vlalign.store.convert_stage",
    "vlalign.store.gather_tables_stage",
    "vlalign.align.negatives_stage",
    "vlalign.embed.fetch_encoder_stage",
    "vlalign.embed.embed_stage",
    "vlalign.embed.gather_embeddings_stage",
    "vlalign.align.train_stage",
    "vlalign.probe.probe_stage",
    "vlalign.probe.vision_probe_stage",
    "vlalign.probe.probe_matrix_stage",
    "vlalign.evaluate.evaluate_stage",
    "vlalign.report.report_stage",
)


@dataclass(frozen=True)
class Arg:
    """One command-line argument: `argparse.ArgumentParser.add_argument(*flags, **options)`."""

    flags: tuple[str, ...]
    options: dict


def arg(*flags: str, **options) -> Arg:
    return Arg(flags, options)


@dataclass(frozen=True)
class Stage:
    name: str  # the subcommand
    help: str
    run: Callable[[dict, argparse.Namespace], None]  # (settings, parsed arguments)
    arguments: tuple[Arg, ...] = ()
    # The config slice: settings(config, **wildcards) -> dict; None for a stage that reads no config.
    settings: Callable[..., dict] | None = None
    # Arguments (and Snakemake wildcards) that choose the slice, such as the source a download fetches.
    wildcards: tuple[str, ...] = ()


def stages() -> list[Stage]:
    return [importlib.import_module(module).STAGE for module in STAGES]


def find_stage(name: str) -> Stage:
    """The stage of a subcommand; `vision-probe` and `vision_probe` both name it."""
    wanted = name.replace("_", "-")
    for stage in stages():
        if stage.name == wanted:
            return stage
    raise ValueError(f"unknown stage {name!r}")


def stage_settings(config: dict, stage: Stage, **wildcards: str | None) -> dict:
    """The settings a stage receives: its slice of the validated config, plus where it is tracked."""
    chosen = {key: value for key, value in wildcards.items() if key in stage.wildcards and value}
    return {"experiment": config["experiment"], "tracking_uri": config["tracking_uri"],
            "results_dir": config["results_dir"], **stage.settings(config, **chosen)}  # fmt: skip


def stage_settings_json(config: dict, name: str, **wildcards: str) -> str:
    """`stage_settings` as the compact JSON the rules pass to `--settings`."""
    return json.dumps(stage_settings(config, find_stage(name), **wildcards), sort_keys=True, separators=(",", ":"))


def track(rule: str, settings: dict, group: str | None = None, **wildcards: str):
    """The MLflow run of one stage execution (see `vlalign.tracking.stage_run`), under `group`'s run if given."""
    from vlalign.schema import default
    from vlalign.tracking import stage_run

    # Settings made by hand (tests, notebooks) may leave out where the default store lives.
    results_dir = settings.get("results_dir") or default("results_dir")
    return stage_run(rule, settings, experiment=settings["experiment"], tracking_uri=settings["tracking_uri"],
                     wildcards=wildcards, results_dir=results_dir, group=group)  # fmt: skip


def print_summary(stage: str, summary: dict) -> None:
    print(f"vlalign {stage}: " + json.dumps(summary, sort_keys=True), flush=True)
