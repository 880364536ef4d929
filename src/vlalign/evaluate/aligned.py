"""Frozen-encoder embeddings of paired samples, and their projection through a trained aligner."""

from __future__ import annotations

import numpy as np


def paired_embeddings(image_dir: str, text_dir: str, keys: set[str] | None = None, lazy: bool = False):
    """Image and text embeddings of the same samples, row for row, and their keys; refuses stores
    that disagree.

    With `keys`, only those samples (a curated pool), in store order; embeddings are computed
    once for the whole pool and curated pools select from them. `lazy` returns `StoreRows`
    views that read rows from the memory-mapped store only when indexed, instead of arrays.
    """
    from vlalign.store.embeddings import open_embeddings

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
    from vlalign.store.embeddings import open_embeddings

    store = open_embeddings(store_dir)
    position = {key: row for row, key in enumerate(store.keys)}
    return store.rows([position.get(key, -1) for key in keys])


def project(model, image_emb: np.ndarray | None, text_emb: np.ndarray | None,
            name: str = "the aligner") -> tuple[np.ndarray | None, ...]:  # fmt: skip
    """The aligner's towers on frozen features: L2-normalised shared-space embeddings (None stays None).
    Features of another width than the aligner was trained on (other encoders) are refused, naming `name`."""
    import torch

    device = next(model.parameters()).device

    def run(tower, features):
        if features is None:
            return None
        side = "image" if tower == model.encode_image else "text"
        expected = model.settings[f"{side}_dim"]
        if features.ndim != 2 or features.shape[1] != expected:
            raise ValueError(f"{name} was trained on {expected}-d {side} features, but these {side} embeddings are "
                             f"{tuple(features.shape)}: they come from another {side} encoder")
        with torch.inference_mode():
            return tower(torch.as_tensor(features, dtype=torch.float32, device=device)).float().cpu().numpy()

    return run(model.encode_image, image_emb), run(model.encode_text, text_emb)
