"""Embed stage: frozen-encoder features of a .beton's images or a table's captions, resumable."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .encoders import create_encoder
from .store.beton import image_loader
from .store.embeddings import EmbeddingWriter


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device")
    return device


def _read_table(table_path, columns: list[str]) -> pd.DataFrame:
    table = pd.read_parquet(table_path, columns=["row", *columns]).sort_values("row")
    if not np.array_equal(table["row"].to_numpy(), np.arange(len(table))):
        raise ValueError(f"{table_path}: rows are not 0..{len(table) - 1}")
    return table.reset_index(drop=True)


def _summary(writer: EmbeddingWriter, resumed_from: int, started: float) -> dict:
    meta = writer.close()
    seconds = time.perf_counter() - started
    new_rows = meta["count"] - resumed_from
    return {
        "count": meta["count"],
        "dim": meta["dim"],
        "resumed_from": resumed_from,
        "seconds": round(seconds, 3),
        "items_per_s": round(new_rows / seconds, 2) if seconds > 0 else 0.0,
    }


def embed_images(beton_path, table_path, encoder_spec: str, encoder_options: dict | None,
                 out_dir: str | os.PathLike, batch_size: int = 64, num_workers: int = 2,
                 device: str = "auto", progress: bool = True, rows_per_part: int = 65536) -> dict:
    """Image features of every row of the .beton into an embedding store keyed by the table."""
    started = time.perf_counter()
    encoder = create_encoder(encoder_spec, device=resolve_device(device), **(encoder_options or {}))
    keys = _read_table(table_path, ["key"])["key"].to_numpy()
    meta = {**encoder.describe(), "source": str(beton_path), "table": str(table_path)}
    writer = EmbeddingWriter(out_dir, encoder.dim, rows_per_part=rows_per_part, meta=meta, resume=True)
    start = writer.rows_done
    if start < len(keys):
        loader = image_loader(
            Path(beton_path), encoder.image_size, batch_size, num_workers,
            device=str(encoder.device), indices=np.arange(start, len(keys)),
        )
        if loader.reader.num_samples != len(keys):
            raise ValueError(f"{beton_path} holds {loader.reader.num_samples} images, {table_path} {len(keys)} rows")
        _embed_batches(encoder, loader, keys, writer, start, progress)
    return _summary(writer, start, started)


def _embed_batches(encoder, loader, keys: np.ndarray, writer: EmbeddingWriter, start: int, progress: bool) -> None:
    expected = start
    with tqdm(total=len(keys), initial=start, unit="img", desc=encoder.spec, disable=not progress) as bar:
        for images, rows in loader:
            rows = rows.view(-1).cpu().numpy()
            # The loader must hand rows back in order, or keys and features would drift apart.
            if not np.array_equal(rows, np.arange(expected, expected + len(rows))):
                raise ValueError(f"{loader.reader.file_name}: rows out of order at {expected} (got {rows[:4]}...)")
            writer.append(encoder(images).cpu().numpy(), keys[rows].tolist())
            expected += len(rows)
            bar.update(len(rows))


def embed_texts(table_path, encoder_spec: str, encoder_options: dict | None, out_dir: str | os.PathLike,
                batch_size: int = 256, device: str = "auto", progress: bool = True,
                rows_per_part: int = 65536) -> dict:
    """Caption features of every row of the table into an embedding store keyed like the images."""
    started = time.perf_counter()
    encoder = create_encoder(encoder_spec, device=resolve_device(device), **(encoder_options or {}))
    table = _read_table(table_path, ["key", "caption"])
    meta = {**encoder.describe(), "source": str(table_path), "table": str(table_path)}
    writer = EmbeddingWriter(out_dir, encoder.dim, rows_per_part=rows_per_part, meta=meta, resume=True)
    start = writer.rows_done
    # Chunks of many batches: the encoder sorts by length within a chunk, so bigger is better bucketing.
    chunk = 16 * batch_size
    with tqdm(total=len(table), initial=start, unit="text", desc=encoder.spec, disable=not progress) as bar:
        for begin in range(start, len(table), chunk):
            part = table.iloc[begin:begin + chunk]
            writer.append(encoder.encode(part["caption"].tolist(), batch_size=batch_size), part["key"].tolist())
            bar.update(len(part))
    return _summary(writer, start, started)
