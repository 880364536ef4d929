"""Training inputs for tests: embedding stores of linearly related image/text pairs and a pool keeping them all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vlalign.store.embeddings import EmbeddingWriter


def write_pair_stores(folder: Path, pairs: int, image_dim: int, text_dim: int) -> Path:
    """`folder/img`, `folder/txt` (text = image times a fixed random matrix) and `folder/decisions.parquet`."""
    rng = np.random.default_rng(0)
    keys = [f"k{i:04d}" for i in range(pairs)]
    image = rng.standard_normal((pairs, image_dim)).astype(np.float32)
    text = image @ rng.standard_normal((image_dim, text_dim)).astype(np.float32)
    for name, array in (("img", image), ("txt", text)):
        writer = EmbeddingWriter(folder / name, array.shape[1], meta={"spec": "test"})
        writer.append(array, keys)
        writer.close()
    pd.DataFrame({"key": keys, "kept": True}).to_parquet(folder / "decisions.parquet")
    return folder
