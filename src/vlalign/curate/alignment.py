"""Alignment score (CLIPScore-style): the cosine of each pair under a trained vlalign aligner, or a score
the source already carries.

The first is the bootstrap of the guide's section 3.1: an aligner trained on heuristically filtered data
scores the whole pool, and the score then filters the pool for the next run. The second reads a per-sample
score from the shards' metadata, such as the CLIP ViT-L/14 cosine DataComp publishes with its pools.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def alignment_scores(checkpoint: str | Path, image_dir: str | Path, text_dir: str | Path, device: str = "cpu",
                     batch_size: int = 65536) -> pd.DataFrame:  # fmt: skip
    """One row per pair of the embedding stores: key, alignment_score (cosine in [-1, 1])."""
    from vlalign.align.checkpoint import load_checkpoint
    from vlalign.align.projection import project
    from vlalign.store.pairs import paired_embeddings

    model, _ = load_checkpoint(checkpoint, device=device)
    model.eval()
    images, texts, keys = paired_embeddings(str(image_dir), str(text_dir))
    scores = np.empty(len(keys), dtype=np.float32)
    for start in range(0, len(keys), batch_size):
        stop = start + batch_size
        z_img, z_txt = project(model, images[start:stop], texts[start:stop], name=f"checkpoint {checkpoint}")
        scores[start:stop] = (z_img * z_txt).sum(axis=1)
    return pd.DataFrame({"key": keys, "alignment_score": scores})


def metadata_scores(shard_folders: list[Path], field: str) -> pd.DataFrame:
    """One row per pool sample: key, alignment_score = the number its metadata holds under `field` (NaN where it
    holds none, or something that is not a number)."""
    from vlalign.data.shards import folder_shards, iter_samples

    keys, scores = [], []
    for sample in iter_samples(folder_shards(shard_folders)):
        value = sample.meta.get(field)
        keys.append(sample.key)
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        scores.append(float(value) if numeric else np.nan)
    return pd.DataFrame({"key": keys, "alignment_score": np.asarray(scores, dtype=np.float32)})
