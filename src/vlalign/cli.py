"""`vlalign <stage>`: every workflow stage as a command that also works without Snakemake."""

from __future__ import annotations

import argparse
import json
import sys

from vlalign.config import ConfigError, load_config
from vlalign.stages import stage_settings


def _settings(args: argparse.Namespace, stage: str, **wildcards: str) -> dict:
    """The stage's settings: as given by the workflow (--settings) or derived from a config file."""
    if args.settings:
        try:
            return json.loads(args.settings)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--settings is not valid JSON: {exc}") from exc
    config = load_config(args.config)
    try:
        return stage_settings(config, stage, **wildcards)
    except KeyError as exc:
        raise ConfigError(f"{args.config}: {exc.args[0]!r} is not defined there") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlalign", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True)

    def stage(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        group = p.add_mutually_exclusive_group()
        group.add_argument("--config", default="config/config.yaml", help="workflow config file (default: %(default)s)")
        group.add_argument("--settings", help="this stage's settings as JSON (how the Snakemake rules call it)")
        return p

    p = stage("download", "fetch a source into webdataset shards + manifest")
    p.add_argument("--source", required=True, help="source name (a key of `sources`)")
    p.add_argument("--out", required=True, help="output folder: {split}/shard-*.tar + manifest.parquet")

    p = stage("measure", "measure every curation filter's value for every sample of the pool")
    p.add_argument("--inputs", nargs="+", required=True, help="shard folders of the pool")
    p.add_argument("--eval-inputs", nargs="*", default=[], help="shard folders of eval splits (decontamination)")
    p.add_argument("--out", required=True, help="measurements.parquet")

    p = stage("select", "apply a curated pool's filters: decisions.parquet, curated shards, curation report")
    p.add_argument("--pool", required=True, help="pool name (a key of curate.pools)")
    p.add_argument("--measurements", required=True)
    p.add_argument("--alignment-scores", help="scores.parquet of the run that scores this pool")
    p.add_argument("--inputs", nargs="+", required=True, help="shard folders of the pool")
    p.add_argument("--out", required=True)

    p = stage("score", "alignment score of every pool pair under a trained run")
    p.add_argument("--run", required=True, help="the scoring run (a key of train.runs)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--image-embeddings", required=True)
    p.add_argument("--text-embeddings", required=True)
    p.add_argument("--out", required=True, help="scores.parquet")

    p = stage("convert", "webdataset shards -> FFCV .beton + a sample table")
    p.add_argument("--inputs", nargs="+", required=True, help="shard folders")
    p.add_argument("--beton", required=True)
    p.add_argument("--table", required=True)

    p = stage("negatives", "a rule-made hard-negative caption for each sample of a table")
    p.add_argument("--table", required=True, help="table with key and caption columns (the .beton's)")
    p.add_argument("--out", required=True, help="negatives.parquet (row, key, caption, rule)")

    p = stage("embed", "frozen-encoder embeddings of a dataset (images from the .beton, or captions)")
    p.add_argument("--encoder", required=True, help="encoder alias (a key of `encoders`)")
    p.add_argument("--dataset", required=True, help="dataset name, for tracking")
    p.add_argument("--beton", help="the images (image encoders only)")
    p.add_argument("--caption-field", help="embed this extra caption set of the samples' metadata instead")
    p.add_argument("--table", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--part", type=int, default=0, help="embed only this part of the rows (0-based)")
    p.add_argument("--parts", type=int, default=1, help="into how many contiguous parts the rows are split")

    p = sub.add_parser("gather-embeddings", help="join the parts of a scattered embed into one store")
    p.add_argument("--parts", nargs="+", required=True, help="part folders, in part order")
    p.add_argument("--out", required=True)

    for name, help in (("train", "train SAIL alignment layers"), ("probe", "SAIL's linear alignment probe")):
        p = stage(name, help)
        p.add_argument("--image-embeddings", required=True)
        p.add_argument("--text-embeddings", required=True)
        p.add_argument("--pool-decisions", required=True, help="decisions.parquet of the curated pool to train on")
        p.add_argument("--out", required=True)
        if name == "train":
            # --run-name: torchrun's own parser takes "--run" for an abbreviation of its --run-path.
            p.add_argument("--run", "--run-name", dest="run", required=True, help="run name (a key of train.runs)")
            p.add_argument("--negative-embeddings", help="text embeddings of the hard-negative captions")
            p.add_argument("--extra-text-embeddings", nargs="*", default=[],
                           help="text embeddings of extra caption sets (multi-positive)")
        else:
            p.add_argument("--image-encoder", help="alias of the vision encoder (default: image_encoder)")
            p.add_argument("--text-encoder", help="alias of the text encoder (default: text_encoder)")
            p.add_argument("--eval-image-embeddings", required=True)
            p.add_argument("--eval-text-embeddings", required=True)

    p = stage("vision-probe", "k-NN and linear-probe accuracy of a vision encoder's frozen features")
    p.add_argument("--encoder", required=True, help="alias of the vision encoder")
    p.add_argument("--class-image-embeddings", nargs="*", default=[],
                   help="its image embeddings of classification sets")
    p.add_argument("--class-tables", nargs="*", default=[], help="their .beton tables (category per key)")
    p.add_argument("--out", required=True, help="metrics.json")

    p = stage("probe-matrix", "the probing matrix: table, correlations, heat map, scatter")
    p.add_argument("--cells", nargs="+", required=True, help="probe output folders, named {vision}__{text}")
    p.add_argument("--vision", nargs="+", required=True, help="vision-probe metrics files, named {vision}.json")
    p.add_argument("--out", required=True, help="output folder")

    p = stage("evaluate", "zero-shot classification and retrieval of a trained run")
    p.add_argument("--run", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--eval-dir", required=True, help="results folder holding beton/ and embeddings/")
    p.add_argument("--out", required=True, help="metrics.json")

    p = stage("report", "the comparison report over every run: markdown, HTML, figures")
    p.add_argument("--metrics", nargs="+", required=True, help="metrics.json files of evaluations and probes")
    p.add_argument("--runs", nargs="*", default=[], help="training run folders (curves.csv), named by run")
    p.add_argument("--pools", nargs="*", default=[], help="curated pool folders (decisions.parquet), named by pool")
    p.add_argument("--probing", help="the probing matrix folder")
    p.add_argument("--out", required=True, help="output folder: summary.md, summary.csv, report.html, figures")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from vlalign import commands

    names = ("source", "encoder", "run", "pool", "image_encoder", "text_encoder")
    wildcards = {k: getattr(args, k) for k in names if getattr(args, k, None)}
    try:
        # Every stage but gather-embeddings (which only joins files) reads the config.
        stage = args.stage.replace("-", "_")
        settings = _settings(args, stage, **wildcards) if hasattr(args, "settings") else {}
        getattr(commands, stage)(settings, args)
    except ConfigError as exc:
        print(f"vlalign {args.stage}: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"vlalign {args.stage}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
