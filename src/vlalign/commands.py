"""Each stage run as one MLflow run: settings in, outputs written atomically, metrics logged."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from vlalign.evaluate.aligned import keyed_rows, paired_embeddings, project
from vlalign.io import atomic_dir, atomic_path, write_json
from vlalign.tracking import stage_run


def _run(rule: str, settings: dict, **wildcards: str):
    return stage_run(rule, settings, experiment=settings["experiment"], tracking_uri=settings["tracking_uri"],
                     wildcards=wildcards)  # fmt: skip


def _print_summary(stage: str, summary: dict) -> None:
    print(f"vlalign {stage}: " + json.dumps(summary, sort_keys=True), flush=True)


def download(settings: dict, args: argparse.Namespace) -> None:
    from vlalign.download import run_download

    with _run("download", settings, source=args.source) as run:
        summary = run_download(args.source, settings["source"], args.out, settings["deb_cache"],
                               settings["samples_per_shard"])  # fmt: skip
        run.log_metrics(summary)
        run.log_output("manifest", Path(args.out) / "manifest.parquet")
        run.log_output("shards", args.out)
    _print_summary("download", summary)


def measure(settings: dict, args: argparse.Namespace) -> None:
    """Every filter's measurement for every sample of the pool, once; pools are selections over it."""
    from vlalign.curate.measure import measure_pool

    with _run("measure", settings) as run:
        with atomic_path(args.out) as tmp:
            measurements = measure_pool([Path(f) for f in args.inputs], [Path(f) for f in args.eval_inputs],
                                        settings["measure"])  # fmt: skip
            measurements.to_parquet(tmp, index=False)
        summary = {"samples": len(measurements), **{f"samples.{k}": int(v) for k, v in
                   measurements["source"].value_counts().items()}}  # fmt: skip
        summary.update({f"seconds.{k}": float(v) for k, v in measurements.attrs.get("seconds", {}).items()})
        run.log_metrics(summary)
        run.log_output("measurements", args.out)
    _print_summary("measure", summary)


def select(settings: dict, args: argparse.Namespace) -> None:
    """Apply a pool's filters, in order, to the measurements; write decisions, curated shards, report."""
    from vlalign.curate.decide import decide
    from vlalign.curate.report import write_curation_report
    from vlalign.curate.shards import write_curated_shards

    filters = settings["filters"]
    with _run("select", settings, pool=args.pool) as run:
        measurements = pd.read_parquet(args.measurements)
        if args.alignment_scores:
            scores = pd.read_parquet(args.alignment_scores)
            measurements = measurements.merge(scores, on="key", how="left")
        folders = [Path(f) for f in args.inputs]
        with atomic_dir(args.out) as tmp:
            decisions = decide(measurements, filters)
            with atomic_path(tmp / "decisions.parquet") as part:
                decisions.to_parquet(part, index=False)
            write_curated_shards(decisions, folders, tmp / "shards", settings["samples_per_shard"])
            summary = write_curation_report(decisions, folders, tmp, filters)
        run.log_metrics(summary)
        run.log_output("decisions", Path(args.out) / "decisions.parquet")
        for figure in sorted(Path(args.out).glob("*.png")) + sorted(Path(args.out).glob("*.md")):
            run.log_output(figure.stem, figure)
        run.log_output("shards", Path(args.out) / "shards")
    _print_summary("select", summary)


def score(settings: dict, args: argparse.Namespace) -> None:
    """Alignment score of every pool pair under a trained run (the bootstrap filter's input)."""
    from vlalign.curate.alignment import alignment_scores
    from vlalign.embed import resolve_device

    with _run("score", settings, run=args.run) as run:
        scores = alignment_scores(args.checkpoint, args.image_embeddings, args.text_embeddings,
                                  device=resolve_device(settings["device"]))  # fmt: skip
        with atomic_path(args.out) as tmp:
            scores.to_parquet(tmp, index=False)
        quantiles = scores["alignment_score"].quantile([0.1, 0.5, 0.9])
        summary = {"pairs": len(scores), "mean": float(scores["alignment_score"].mean()),
                   **{f"quantile_{int(q * 100)}": float(v) for q, v in quantiles.items()}}  # fmt: skip
        run.log_metrics(summary)
        run.log_output("scores", args.out)
    _print_summary("score", summary)


def negatives(settings: dict, args: argparse.Namespace) -> None:
    """A rule-made hard-negative caption for every sample of the table that some rule applies to."""
    from vlalign.align.negatives import negative_caption

    rules = settings["negatives"]["rules"]
    with _run("negatives", settings) as run:
        table = pd.read_parquet(args.table, columns=["key", "caption"])
        made = [(key, *negative_caption(caption, key, rules)) for key, caption in zip(table["key"], table["caption"])]
        found = pd.DataFrame(made, columns=["key", "caption", "rule"]).dropna(subset=["caption"])
        found.insert(0, "row", np.arange(len(found)))
        with atomic_path(args.out) as tmp:
            found.to_parquet(tmp, index=False)
        summary = {"samples": len(table), "negatives": len(found),
                   **{f"rule.{k}": int(v) for k, v in found["rule"].value_counts().items()}}  # fmt: skip
        run.log_metrics(summary)
        run.log_output("negatives", args.out)
    _print_summary("negatives", summary)


def convert(settings: dict, args: argparse.Namespace) -> None:
    from vlalign.data.shards import shard_paths
    from vlalign.store.beton import verify_beton, write_beton

    dataset = Path(args.beton).stem
    with _run("convert", settings, dataset=dataset) as run:
        for folder in args.inputs:
            shard_paths(folder)
        c = settings["convert"]
        summary = write_beton([Path(f) for f in args.inputs], Path(args.beton), Path(args.table),
                              max_resolution=c["max_resolution"], jpeg_quality=c["jpeg_quality"],
                              num_workers=c["num_workers"], write_mode=c["write_mode"])  # fmt: skip
        skipped = summary.pop("skipped", [])
        summary["skipped"] = len(skipped)
        # Read every record back before anything downstream trusts the file.
        summary.update(verify_beton(Path(args.beton), Path(args.table), num_workers=c["num_workers"]))
        run.log_metrics(summary)
        run.log_output("beton", args.beton)
        run.log_output("table", args.table)
    for item in skipped:
        print(f"vlalign convert: skipped {item['key']}: {item['reason']}", flush=True)
    _print_summary("convert", summary)


def embed(settings: dict, args: argparse.Namespace) -> None:
    from vlalign.embed import embed_images, embed_texts
    from vlalign.encoders import encoder_options, is_text_spec

    encoder = settings["encoder"]
    options = encoder_options(encoder)
    scatter = {"part": args.part, "parts": args.parts}
    part = {"part": f"{args.part}-of-{args.parts}"} if args.parts > 1 else {}
    with _run("embed", settings, dataset=args.dataset, encoder=args.encoder, **part) as run:
        if is_text_spec(encoder["spec"]):
            summary = embed_texts(args.table, encoder["spec"], options, args.out, batch_size=encoder["batch_size"],
                                  device=settings["embed"]["device"], caption_field=args.caption_field,
                                  **scatter)  # fmt: skip
        else:
            if not args.beton or args.caption_field:
                raise ValueError(f"encoder {args.encoder!r} embeds images: --beton is required, --caption-field not")
            summary = embed_images(args.beton, args.table, encoder["spec"], options, args.out,
                                   batch_size=encoder["batch_size"], num_workers=settings["embed"]["num_workers"],
                                   device=settings["embed"]["device"], **scatter)  # fmt: skip
        meta = json.loads((Path(args.out) / "meta.json").read_text())
        # What was really run (resolved precision, preprocessing), next to the configured settings.
        run.log_params({f"resolved.{k}": v for k, v in meta.items() if k not in ("parts", "count", "dim")})
        run.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        run.log_output("embeddings", args.out)
    _print_summary("embed", summary)


def gather_embeddings(settings: dict, args: argparse.Namespace) -> None:
    """Join the parts of a scattered embed into one store (hard links: no data is copied)."""
    from vlalign.store.embeddings import gather_embeddings as gather

    meta = gather(args.parts, args.out)
    _print_summary("gather_embeddings", {"count": meta["count"], "parts": meta["gathered_from"]})


def _fit(settings: dict, args: argparse.Namespace, log_fn=None, state_dir: Path | None = None):
    """Train on the curated pool's pairs; returns the TrainResult and the pairs' keys."""
    from vlalign.align.trainer import train_alignment
    from vlalign.embed import resolve_device

    decisions = pd.read_parquet(args.pool_decisions, columns=["key", "kept"])
    kept = set(decisions.loc[decisions["kept"], "key"])
    image_emb, text_emb, keys = paired_embeddings(args.image_embeddings, args.text_embeddings, keys=kept, lazy=True)
    device = resolve_device(settings["device"])
    negative_emb = None
    if settings["train"].get("hard_negatives"):
        if not getattr(args, "negative_embeddings", None):
            raise ValueError("hard_negatives is set but no --negative-embeddings were given")
        negative_emb = keyed_rows(args.negative_embeddings, keys)
    extra = []
    if settings["train"].get("multi_positive"):
        extra = [keyed_rows(folder, keys) for folder in getattr(args, "extra_text_embeddings", [])]
    result = train_alignment(image_emb, text_emb, settings["train"], log_fn=log_fn, device=device, state_dir=state_dir,
                             negative_text_emb=negative_emb, extra_text_emb=extra)  # fmt: skip
    return result, keys, image_emb.shape[1], text_emb.shape[1]


def _train_and_save(settings: dict, args: argparse.Namespace, run, out: Path,
                    state_dir: Path | None = None) -> tuple[object, list[dict], int]:
    from vlalign.align.checkpoint import save_checkpoint

    def log_fn(step: int, metrics: dict) -> None:
        run.log_metrics(metrics, step=step)

    result, keys, image_dim, text_dim = _fit(settings, args, log_fn, state_dir)
    if result.resumed_from_step is not None:
        run.log_metrics({"resumed_from_step": result.resumed_from_step})
    extra = {"encoders": settings["encoders"], "image_dim": int(image_dim), "text_dim": int(text_dim),
             "train_pairs": len(keys), "pool_decisions": str(args.pool_decisions)}  # fmt: skip
    save_checkpoint(out, result.model, extra)
    pd.DataFrame(result.history).to_csv(out / "curves.csv", index=False)
    return result.model, result.history, len(keys)


def train(settings: dict, args: argparse.Namespace) -> None:
    import shutil

    from vlalign.evaluate.plots import plot_training_curves
    from vlalign.model import export_model

    # Beside the output, not in it: Snakemake deletes a job's outputs before re-running it, and a
    # re-run after a kill resumes from the training state kept here.
    state_dir = Path(args.out).parent / f".{Path(args.out).name}.state"
    if int(os.environ.get("RANK", "0")) > 0:
        # Under torchrun the other ranks lend their GPU to the steps; rank 0 tracks and writes everything.
        _fit(settings, args, state_dir=state_dir)
        return
    with _run("train", settings, run=args.run) as run:
        with atomic_dir(args.out) as tmp:
            _, history, _ = _train_and_save(settings, args, run, tmp, state_dir)
            plot_training_curves(history, tmp / "curves.png", title=f"training run {args.run}")
            final = {k: v for k, v in history[-1].items() if isinstance(v, (int, float))}
            write_json(tmp / "train_summary.json", final)
            export_model(tmp, args.run, settings, args.image_embeddings, args.text_embeddings, final)
        shutil.rmtree(state_dir, ignore_errors=True)  # the output is complete
        for name in ("model.safetensors", "model.json", "README.md", "curves.csv", "curves.png"):
            run.log_output(name.replace(".", "_"), Path(args.out) / name)
    _print_summary("train", final)


def probe(settings: dict, args: argparse.Namespace) -> None:
    from vlalign.evaluate.metrics import retrieval_recall

    image, text = settings["encoders"]["image"]["alias"], settings["encoders"]["text"]["alias"]
    pair = f"{image}__{text}"
    with _run("probe", settings, image_encoder=image, text_encoder=text) as run:
        with atomic_dir(args.out) as tmp:
            model, _, train_pairs = _train_and_save(settings, args, run, tmp)
            image_emb, text_emb, _ = paired_embeddings(args.eval_image_embeddings, args.eval_text_embeddings)
            z_img, z_txt = project(model, image_emb, text_emb)
            metrics = retrieval_recall(z_img, z_txt, np.arange(len(z_txt)), ks=tuple(settings["ks"]))
            # SAIL's alignment-probing score: retrieval R@10 averaged over both directions.
            metrics["alignment_score"] = metrics.get("mean_recall_at_10", float("nan"))
            metrics = {f"{Path(args.eval_text_embeddings).parent.name}.{k}": v for k, v in metrics.items()}
            metrics["train_pairs"] = float(train_pairs)
            write_json(tmp / "metrics.json", {"name": f"probe:{pair}", "metrics": metrics})
        run.log_metrics(metrics)
        run.log_output("metrics", Path(args.out) / "metrics.json")
    _print_summary("probe", metrics)


def vision_probe(settings: dict, args: argparse.Namespace) -> None:
    """SAIL's two predictors of alignability on the frozen vision features of each classification set:
    clustering quality (weighted k-NN) and linear separability (linear probe). Each set is split in
    half by key hash, one half the reference (training) set, the other the test set."""
    with _run("vision_probe", settings, encoder=args.encoder) as run:
        metrics = _vision_probes(settings, args)
        write_json(args.out, {"name": f"vision:{args.encoder}", "metrics": metrics})
        run.log_metrics(metrics)
        run.log_output("metrics", args.out)
    _print_summary("vision_probe", metrics)


def probe_matrix(settings: dict, args: argparse.Namespace) -> None:
    """Join every probe cell and vision probe: the table, correlations, heat map and scatter."""
    from vlalign.evaluate.probing import write_probing_matrix

    cells = []
    for folder in args.cells:
        image, _, text = Path(folder).name.partition("__")
        data = json.loads((Path(folder) / "metrics.json").read_text())
        cells.append({"image_encoder": image, "text_encoder": text, "metrics": data["metrics"]})
    vision = {Path(path).stem: json.loads(Path(path).read_text())["metrics"] for path in args.vision}
    with _run("probe_matrix", settings) as run:
        with atomic_dir(args.out) as tmp:
            metrics = write_probing_matrix(cells, vision, settings, tmp)
        run.log_metrics(metrics)
        outputs = ("matrix.csv", "correlations.csv", "probing.md", "alignment_heatmap.png", "alignment_vs_vision.png")
        for name in outputs:
            run.log_output(name.replace(".", "_"), Path(args.out) / name)
    _print_summary("probe_matrix", {k: v for k, v in metrics.items() if k.endswith(".all.pearson")})


def _vision_probes(settings: dict, args: argparse.Namespace) -> dict:
    from vlalign.data.sources import hash_fraction
    from vlalign.evaluate.probes import knn_accuracy, linear_probe_accuracy
    from vlalign.store.embeddings import open_embeddings

    if len(args.class_image_embeddings) != len(args.class_tables):
        raise ValueError("--class-image-embeddings and --class-tables must name the same sets")
    metrics = {}
    for folder, table_path in zip(args.class_image_embeddings, args.class_tables):
        store = open_embeddings(folder)
        categories = pd.read_parquet(table_path, columns=["key", "category"]).set_index("key")["category"]
        labels = categories.loc[store.keys]
        if labels.isna().any():
            raise ValueError(f"{table_path}: sample {labels[labels.isna()].index[0]!r} has no category")
        codes = labels.astype("category").cat.codes.to_numpy()
        # Salted: a source's eval split was itself drawn by the unsalted key hash.
        test = np.array([hash_fraction(f"vision-probe:{key}") < 0.5 for key in store.keys])
        if test.all() or not test.any():
            print(f"vlalign probe: {folder}: {len(test)} samples, too few to split for the vision probes", flush=True)
            continue
        features = store.to_numpy()
        found = knn_accuracy(features[~test], codes[~test], features[test], codes[test], ks=tuple(settings["knn_ks"]),
                             temperature=settings["knn_temperature"])  # fmt: skip
        found.update(linear_probe_accuracy(features[~test], codes[~test], features[test], codes[test]))
        metrics.update({f"{Path(folder).parent.name}.{k}": v for k, v in found.items()})
    return metrics


def evaluate(settings: dict, args: argparse.Namespace) -> None:
    from vlalign.evaluate.run import evaluate_checkpoint

    with _run("evaluate", settings, run=args.run) as run:
        metrics = evaluate_checkpoint(args.checkpoint, Path(args.eval_dir), settings)
        write_json(args.out, {"name": args.run, "metrics": metrics})
        run.log_metrics(metrics)
        run.log_output("metrics", args.out)
        train_run = _find_train_run(run, args.run)
        if train_run is not None:
            # Also on the trained model's own run, so the MLflow UI compares runs by their metrics.
            run.log_metrics(metrics, run_id=train_run)
    _print_summary("evaluate", metrics)


def _find_train_run(run, run_name: str) -> str | None:
    if run.run_id is None:
        return None
    try:
        experiment_id = run.client.get_run(run.run_id).info.experiment_id
        found = run.client.search_runs(
            [experiment_id],
            filter_string=f"tags.rule = 'train' and tags.`wildcard.run` = '{run_name}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    except Exception as exc:
        run.errors.append(f"finding the train run failed: {exc}")
        return None
    return found[0].info.run_id if found else None


def report(settings: dict, args: argparse.Namespace) -> None:
    from vlalign.evaluate.report import write_report

    out = Path(args.out)
    with _run("report", settings) as run:
        table = write_report([Path(p) for p in args.metrics], out,
                             train_dirs={Path(p).name: Path(p) for p in args.runs},
                             run_pools=settings.get("run_pools"),
                             pool_dirs={Path(p).name: Path(p) for p in args.pools},
                             probing_dir=Path(args.probing) if args.probing else None)  # fmt: skip
        for figure in sorted(out.glob("*.png")):
            run.log_output(figure.stem, figure)
        for name in ("summary.md", "summary.csv", "report.html"):
            run.log_output(name.replace(".", "_"), out / name)
    print(table, flush=True)
