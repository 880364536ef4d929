"""SAIL's two predictors of alignability, measured on a vision encoder's frozen features of classification sets:
clustering quality (weighted k-NN) and linear separability (linear probe)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vlalign.data.sources import hash_fraction
from vlalign.probe.classifiers import knn_accuracy, linear_probe_accuracy
from vlalign.store.embeddings import open_embeddings


def vision_probes(image_embeddings: list[str], tables: list[str], knn_ks: list[int], knn_temperature: float) -> dict:
    """`{set}.{measure}` for each classification set: its image embeddings and its .beton table (category per
    key). Each set is split in half by key hash, one half the reference (training) set, the other the test set."""
    if len(image_embeddings) != len(tables):
        raise ValueError("--class-image-embeddings and --class-tables must name the same sets")
    metrics = {}
    for folder, table_path in zip(image_embeddings, tables):
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
        found = knn_accuracy(features[~test], codes[~test], features[test], codes[test], ks=tuple(knn_ks),
                             temperature=knn_temperature)  # fmt: skip
        found.update(linear_probe_accuracy(features[~test], codes[~test], features[test], codes[test]))
        metrics.update({f"{Path(folder).parent.name}.{k}": v for k, v in found.items()})
    return metrics
