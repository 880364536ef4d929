"""Evaluate a trained aligner on the eval splits: retrieval and zero-shot classification."""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from vlalign.config import eval_dataset
from vlalign.schema import complete


def expand_templates(templates: list[str]) -> list[str]:
    """The configured templates with the entry `imagenet80` replaced by CLIP's 80 ImageNet templates."""
    shipped = (resources.files("vlalign.evaluate") / "imagenet_templates.txt").read_text().splitlines()
    return [t for entry in templates for t in (shipped if entry == "imagenet80" else [entry])]


def class_prompts(classnames: list[str], templates: list[str]) -> list[str]:
    return [template.replace("{}", name) for name in classnames for template in templates]


def class_embeddings(model, text_encoder, classnames: list[str], templates: list[str]) -> np.ndarray:
    """One aligned embedding per class: the normalised mean of its normalised prompt embeddings."""
    from vlalign.align.projection import project

    _, aligned = project(model, None, text_encoder.encode(class_prompts(classnames, templates)))
    per_class = aligned.reshape(len(classnames), len(templates), -1).mean(axis=1)
    return per_class / np.linalg.norm(per_class, axis=1, keepdims=True)


def caption_sets(table: pd.DataFrame) -> tuple[list[str], np.ndarray] | None:
    """Every caption of a retrieval set whose samples list several (`captions` in their metadata, as
    COCO/Flickr30k Karpathy splits have five), with the row of the image each describes; None when
    every sample has just its own caption."""
    lists = [json.loads(meta).get("captions") for meta in table["meta_json"]]
    if not any(isinstance(c, list) and len(c) > 1 for c in lists):
        return None
    texts, owners = [], []
    for row, (caption, captions) in enumerate(zip(table["caption"], lists)):
        captions = captions if isinstance(captions, list) and captions else [caption]
        texts += [str(c) for c in captions]
        owners += [row] * len(captions)
    return texts, np.asarray(owners, dtype=np.int64)


def compositional_metrics(z_img: np.ndarray, metas: list[dict], encode) -> dict[str, float]:
    """Caption selection against each image's typed hard negatives and Winoground scores, for images
    (aligned, row for row with `metas`, their samples' metadata) of a synthetic_compositional set.
    `encode(texts)` gives aligned caption embeddings."""
    from vlalign.evaluate.compositional import caption_selection_accuracy, winoground_scores

    rows, positives, negatives, types = [], [], [], []
    for row, meta in enumerate(metas):
        for negative in meta.get("negatives", []):
            rows.append(row), positives.append(meta["caption"]), negatives.append(negative["caption"])
            types.append(negative["type"])
    pairs: dict[str, dict] = {}
    for row, meta in enumerate(metas):
        if "winoground" in meta:
            pairs.setdefault(meta["winoground"]["pair"], {})[meta["winoground"]["role"]] = row
    pairs = {k: v for k, v in pairs.items() if set(v) == {"a", "b"}}
    paired = {metas[row]["caption"] for pair in pairs.values() for row in pair.values()}
    texts = sorted(set(positives) | set(negatives) | paired)
    z_text = dict(zip(texts, encode(texts)))
    found = {}
    if rows:
        positive_emb, negative_emb = (np.stack([z_text[t] for t in group]) for group in (positives, negatives))
        found.update(caption_selection_accuracy(z_img[rows], positive_emb, negative_emb, negative_types=types))
    if pairs:
        # sim[n, image, caption]: caption c is the true caption of image c.
        images = np.stack([[z_img[p["a"]], z_img[p["b"]]] for p in pairs.values()])
        captions = np.stack([[z_text[metas[p["a"]]["caption"]], z_text[metas[p["b"]]["caption"]]]
                             for p in pairs.values()])  # fmt: skip
        found.update(winoground_scores(np.einsum("nid,ncd->nic", images, captions)))
        found["winoground_pairs"] = float(len(pairs))
    return found


def evaluation_inputs(results_dir: Path, towers: dict, evaluate: dict | None = None) -> dict[str, dict[str, Path]]:
    """What evaluating reads of each set of `evaluate` (keys left out taking the schema's defaults), by dataset:
    the image and text embedding stores of the trained towers (`towers`: the checkpoint's `encoders`) and the table."""
    ev = complete("evaluate", evaluate)
    datasets = dict.fromkeys(eval_dataset(s) for kind in ("retrieval", "compositional", "zeroshot") for s in ev[kind])
    return {dataset: {"image": results_dir / "embeddings" / dataset / towers["image"]["alias"],
                      "text": results_dir / "embeddings" / dataset / towers["text"]["alias"],
                      "table": results_dir / "beton" / f"{dataset}.parquet"} for dataset in datasets}  # fmt: skip


def evaluate_checkpoint(checkpoint: str | Path, results_dir: Path, evaluate: dict | None = None,
                        device: str = "auto") -> dict:
    """Metrics named `{dataset}.{metric}` for every retrieval, compositional and zero-shot set of `evaluate` (the
    config's `evaluate`, keys left out taking the schema's defaults), read from `results_dir`."""
    from vlalign.align.checkpoint import load_checkpoint
    from vlalign.align.projection import project
    from vlalign.devices import resolve_device
    from vlalign.store.pairs import paired_embeddings
    from vlalign.encoders import create_encoder, encoder_options
    from vlalign.evaluate.metrics import retrieval_recall, zeroshot_accuracy

    device = resolve_device(device)
    model, info = load_checkpoint(checkpoint, device=device)
    model.eval()
    towers = info["encoders"]
    ev = complete("evaluate", evaluate)
    # The pool size travels with the metrics so a curation sweep can be read from one table.
    metrics: dict[str, float] = {"train_pairs": float(info["train_pairs"])}
    inputs = evaluation_inputs(results_dir, towers, ev)

    def embeddings(dataset: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        return paired_embeddings(str(inputs[dataset]["image"]), str(inputs[dataset]["text"]))

    @functools.cache
    def text_encoder():
        text = towers["text"]
        # The caption embeddings' own options (precision included), so prompts are embedded alike.
        return create_encoder(text["spec"], device=device, alias=text.get("alias"), **encoder_options(text))

    for source in ev["retrieval"]:
        dataset = eval_dataset(source)
        image_emb, text_emb, keys = embeddings(dataset)
        table = pd.read_parquet(inputs[dataset]["table"]).set_index("key").loc[keys].reset_index()
        several = caption_sets(table)
        if several is None:
            z_img, z_txt = project(model, image_emb, text_emb)
            text_to_image = np.arange(len(z_txt))
        else:  # several captions per image: all of them are embedded here (eval sets are small)
            texts, text_to_image = several
            (z_img, _), (_, z_txt) = project(model, image_emb, None), project(model, None, text_encoder().encode(texts))
        found = retrieval_recall(z_img, z_txt, text_to_image, ks=tuple(ev["ks"]))
        metrics.update({f"{dataset}.{k}": v for k, v in found.items()})

    for source in ev["compositional"]:
        dataset = eval_dataset(source)
        image_emb, _, keys = embeddings(dataset)
        table = pd.read_parquet(inputs[dataset]["table"]).set_index("key").loc[keys]
        metas = [{**json.loads(meta), "caption": text} for meta, text in zip(table["meta_json"], table["caption"])]
        z_img, _ = project(model, image_emb, None)

        def encode(texts: list[str]) -> np.ndarray:
            return project(model, None, text_encoder().encode(texts))[1]

        found = compositional_metrics(z_img, metas, encode)
        metrics.update({f"{dataset}.{k}": v for k, v in found.items()})

    if ev["zeroshot"]:
        for source in ev["zeroshot"]:
            dataset = eval_dataset(source)
            table = pd.read_parquet(inputs[dataset]["table"])
            image_emb, _, keys = embeddings(dataset)
            categories = table.set_index("key").loc[keys, "category"]
            if categories.isna().any():
                missing = categories[categories.isna()].index[0]
                raise ValueError(f"{dataset}: sample {missing!r} has no category; zero-shot needs one per sample")
            classnames = sorted(categories.unique())
            labels = categories.map({name: i for i, name in enumerate(classnames)}).to_numpy()
            z_img, _ = project(model, image_emb, None)
            class_emb = class_embeddings(model, text_encoder(), classnames, expand_templates(ev["templates"]))
            found = zeroshot_accuracy(z_img, labels, class_emb)
            metrics.update({f"{dataset}.zeroshot_{k}": v for k, v in found.items()})
            metrics[f"{dataset}.zeroshot_chance"] = 1.0 / len(classnames)
    return metrics
