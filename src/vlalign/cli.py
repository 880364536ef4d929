"""`vlalign <stage>`: every workflow stage as a command that also works without Snakemake.

The subcommands are built from `vlalign.stage.STAGES`; each stage module declares its own arguments,
config slice and run function.
"""

from __future__ import annotations

import argparse
import json
import sys

from vlalign.config import ConfigError, load_config
from vlalign.runtime import configure_process
from vlalign.stage import Stage, stage_settings, stages


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlalign", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    for stage in stages():
        command = sub.add_parser(stage.name, help=stage.help, description=stage.help)
        command.set_defaults(run_stage=stage)
        if stage.settings is not None:
            group = command.add_mutually_exclusive_group()
            group.add_argument("--config", default="config/config.yaml",
                               help="workflow config file (default: %(default)s)")  # fmt: skip
            group.add_argument("--settings", help="this stage's settings as JSON (how the Snakemake rules call it)")
        for argument in stage.arguments:
            command.add_argument(*argument.flags, **argument.options)
    return parser


def _settings(stage: Stage, args: argparse.Namespace) -> dict:
    """The stage's settings: as given by the workflow (--settings) or derived from a config file."""
    if stage.settings is None:
        return {}
    if args.settings:
        try:
            return json.loads(args.settings)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--settings is not valid JSON: {exc}") from exc
    config = load_config(args.config)
    try:
        return stage_settings(config, stage, **{name: getattr(args, name, None) for name in stage.wildcards})
    except KeyError as exc:
        raise ConfigError(f"{args.config}: {exc.args[0]!r} is not defined there") from exc


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stage = args.run_stage
    configure_process()  # before a stage imports torch
    try:
        stage.run(_settings(stage, args), args)
    except ConfigError as exc:
        print(f"vlalign {stage.name}: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"vlalign {stage.name}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
