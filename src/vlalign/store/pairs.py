"""Frozen-encoder embeddings of paired samples: image and text stores joined row for row by key."""

from __future__ import annotations

import numpy as np

from vlalign.store.embeddings import open_embeddings


def paired_embeddings(image_dir: str, text_dir: str, keys: set[str] | None = None, lazy: bool = False):
    """Image and text embeddings of the same samples, row for row, and their keys; refuses stores
    that disagree.

    With `keys`, only those samples (a curated pool), in store order; embeddings are computed
    once for the whole pool and curated pools select from them. `lazy` returns `StoreRows`
    views that read rows from the memory-mapped store only when indexed, instead of arrays.
    """
    images, texts = open_embeddings(image_dir), open_embeddings(text_dir)
    stored = list(images.keys)
    if stored != list(texts.keys):
        raise ValueError(f"{image_dir} and {text_dir} do not hold the same samples in the same order")
    if keys is None:
        rows = np.arange(len(stored))
    else:
        rows = np.flatnonzero(np.isin(np.asarray(stored, dtype=object), list(keys)))
        if len(rows) == 0:
            raise ValueError(f"none of the {len(keys)} selected samples is in {image_dir}")
    selected = [stored[r] for r in rows]
    if lazy:
        return images.rows(rows), texts.rows(rows), selected
    if keys is None:
        return images.to_numpy(), texts.to_numpy(), selected
    return images.read(rows), texts.read(rows), selected


def keyed_rows(store_dir: str, keys: list[str]):
    """A lazy view of the store's rows for `keys`, in that order; NaN rows for keys the store does
    not hold (e.g. captions no negative-caption rule applied to)."""
    store = open_embeddings(store_dir)
    position = {key: row for row, key in enumerate(store.keys)}
    return store.rows([position.get(key, -1) for key in keys])
