"""Evaluate a trained aligner on the eval splits: retrieval, zero-shot classification and compositionality, with
the outcome of every evaluation item."""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from vlalign.config import eval_dataset
from vlalign.evaluate.metrics import Scores
from vlalign.schema import complete

# per_sample_table's file, beside the evaluation's metrics.json (where the report looks for it).
PER_SAMPLE_NAME = "per_sample.parquet"


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


def compositional_outcomes(z_img: np.ndarray, metas: list[dict], keys: list[str], encode) -> Scores:
    """Caption selection against each image's typed hard negatives and Winoground scores, for images
    (aligned, row for row with `metas`, their samples' metadata, and `keys`, their sample keys) of a
    synthetic_compositional set. `encode(texts)` gives aligned caption embeddings. Caption selection's items
    are (image, negative) pairs, named `{key}#{n}` for the image's n-th negative; Winoground's are its pairs,
    named by pair id."""
    from vlalign.evaluate.compositional import caption_selection_outcomes, winoground_outcomes

    rows, positives, negatives, types, names = [], [], [], [], []
    for row, meta in enumerate(metas):
        for n, negative in enumerate(meta.get("negatives", [])):
            rows.append(row), positives.append(meta["caption"]), negatives.append(negative["caption"])
            types.append(negative["type"]), names.append(f"{keys[row]}#{n}")
    pairs: dict[str, dict] = {}
    for row, meta in enumerate(metas):
        if "winoground" in meta:
            pairs.setdefault(meta["winoground"]["pair"], {})[meta["winoground"]["role"]] = row
    pairs = {k: v for k, v in pairs.items() if set(v) == {"a", "b"}}
    paired = {metas[row]["caption"] for pair in pairs.values() for row in pair.values()}
    texts = sorted(set(positives) | set(negatives) | paired)
    z_text = dict(zip(texts, encode(texts)))
    found = Scores()
    if rows:
        positive_emb, negative_emb = (np.stack([z_text[t] for t in group]) for group in (positives, negatives))
        found.update(caption_selection_outcomes(z_img[rows], positive_emb, negative_emb, negative_types=types,
                                                items=names))  # fmt: skip
    if pairs:
        # sim[n, image, caption]: caption c is the true caption of image c.
        images = np.stack([[z_img[p["a"]], z_img[p["b"]]] for p in pairs.values()])
        captions = np.stack([[z_text[metas[p["a"]]["caption"]], z_text[metas[p["b"]]["caption"]]]
                             for p in pairs.values()])  # fmt: skip
        found.update(winoground_outcomes(np.einsum("nid,ncd->nic", images, captions), items=[str(p) for p in pairs]))
        found.values["winoground_pairs"] = float(len(pairs))
    return found


def compositional_metrics(z_img: np.ndarray, metas: list[dict], encode) -> dict[str, float]:
    """`compositional_outcomes`' metrics, for images named by row."""
    return compositional_outcomes(z_img, metas, [str(row) for row in range(len(metas))], encode).metrics()


def evaluation_inputs(results_dir: Path, towers: dict, evaluate: dict | None = None) -> dict[str, dict[str, Path]]:
    """What evaluating reads of each set of `evaluate` (keys left out taking the schema's defaults), by dataset:
    the image and text embedding stores of the trained towers (`towers`: the checkpoint's `encoders`) and the table."""
    ev = complete("evaluate", evaluate)
    datasets = dict.fromkeys(eval_dataset(s) for kind in ("retrieval", "compositional", "zeroshot") for s in ev[kind])
    return {dataset: {"image": results_dir / "embeddings" / dataset / towers["image"]["alias"],
                      "text": results_dir / "embeddings" / dataset / towers["text"]["alias"],
                      "table": results_dir / "beton" / f"{dataset}.parquet"} for dataset in datasets}  # fmt: skip


def evaluate_checkpoint(checkpoint: str | Path, results_dir: Path, evaluate: dict | None = None,
                        device: str = "auto") -> Scores:
    """Metrics named `{dataset}.{metric}` for every retrieval, compositional and zero-shot set of `evaluate` (the
    config's `evaluate`, keys left out taking the schema's defaults), read from `results_dir`; those that are
    means over items with every item's outcome, the items named by sample key (see `per_sample_table`)."""
    from vlalign.align.checkpoint import load_checkpoint
    from vlalign.align.projection import project
    from vlalign.devices import resolve_device
    from vlalign.store.pairs import paired_embeddings
    from vlalign.encoders import create_encoder, encoder_options
    from vlalign.evaluate.metrics import retrieval_outcomes, zeroshot_outcomes

    device = resolve_device(device)
    model, info = load_checkpoint(checkpoint, device=device)
    model.eval()
    towers = info["encoders"]
    ev = complete("evaluate", evaluate)
    # The pool size travels with the metrics so a curation sweep can be read from one table.
    scores = Scores(values={"train_pairs": float(info["train_pairs"])})
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
            text_to_image, text_items = np.arange(len(z_txt)), keys
        else:  # several captions per image: all of them are embedded here (eval sets are small)
            texts, text_to_image = several
            (z_img, _), (_, z_txt) = project(model, image_emb, None), project(model, None, text_encoder().encode(texts))
            # The n-th caption of its sample: the owners are in row order, so n counts from the sample's first.
            nth = np.arange(len(text_to_image)) - np.searchsorted(text_to_image, text_to_image)
            text_items = [f"{keys[row]}#{n}" for row, n in zip(text_to_image, nth)]
        found = retrieval_outcomes(z_img, z_txt, text_to_image, ks=tuple(ev["ks"]), image_items=keys,
                                   text_items=text_items)  # fmt: skip
        scores.update(found, prefix=f"{dataset}.")

    for source in ev["compositional"]:
        dataset = eval_dataset(source)
        image_emb, _, keys = embeddings(dataset)
        table = pd.read_parquet(inputs[dataset]["table"]).set_index("key").loc[keys]
        metas = [{**json.loads(meta), "caption": text} for meta, text in zip(table["meta_json"], table["caption"])]
        z_img, _ = project(model, image_emb, None)

        def encode(texts: list[str]) -> np.ndarray:
            return project(model, None, text_encoder().encode(texts))[1]

        scores.update(compositional_outcomes(z_img, metas, keys, encode), prefix=f"{dataset}.")

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
        scores.update(zeroshot_outcomes(z_img, labels, class_emb, items=keys), prefix=f"{dataset}.zeroshot_")
        scores.values[f"{dataset}.zeroshot_chance"] = 1.0 / len(classnames)
    return scores


def per_sample_table(scores: Scores) -> pd.DataFrame:
    """Every item's outcome of every metric that is a mean over items: columns `metric` (its name in the
    metrics), `item` (the item's name, as text) and `value`; the metric is the mean of its rows, in order."""
    frames = [pd.DataFrame({"metric": name, "item": np.asarray(found.items).astype(str), "value": found.values})
              for name, found in scores.outcomes.items()]  # fmt: skip
    if not frames:
        return pd.DataFrame({"metric": pd.Series(dtype=str), "item": pd.Series(dtype=str),
                             "value": pd.Series(dtype=float)})  # fmt: skip
    return pd.concat(frames, ignore_index=True)
