"""Embedding store: one folder per (dataset, encoder), float16 parts memory-mapped on read.

Layout: `part-00000.npy`, ... (rows x dim, float16), `index.parquet` (row, key), `meta.json`.
A store is written in a work folder beside its destination (`.NAME.inprogress`) and renamed
into place when complete, so a killed job never leaves a folder that looks finished, and the
work folder survives the workflow manager clearing the destination before a re-run. There
`progress.json` and one `part-NNNNN.keys.npy` per part record the finished parts, so a killed
job resumes from the last finished part instead of from zero.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from vlalign.io import atomic_dir, atomic_path, link_or_copy, replace_dir, work_dir, write_json

DTYPE = np.float16
PROGRESS = "progress.json"


def _part_name(index: int) -> str:
    return f"part-{index:05d}.npy"


def _keys_name(index: int) -> str:
    return f"part-{index:05d}.keys.npy"


def _save_npy(path: Path, array: np.ndarray) -> None:
    # A file object, so np.save does not append ".npy" to the temp name.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


class EmbeddingWriter:
    """Appends (features, keys) in order; parts are written atomically as they fill."""

    def __init__(self, out_dir: str | os.PathLike, dim: int, rows_per_part: int = 65536,
                 meta: dict | None = None, resume: bool = False):
        self.out_dir = Path(out_dir)
        self.work_dir = work_dir(out_dir)
        self.dim = int(dim)
        self.rows_per_part = int(rows_per_part)
        self.meta = dict(meta or {})
        if self.meta.get("dim", self.dim) != self.dim:
            raise ValueError(f"{self.out_dir}: meta says dim {self.meta['dim']} but the writer has {self.dim}")
        self._parts: list[int] = []  # rows of each finished part
        self._buffer: list[np.ndarray] = []
        self._buffer_keys: list[str] = []
        self._buffered = 0
        if resume and (self.work_dir / PROGRESS).exists():
            self._load_progress()
        else:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)

    @property
    def rows_done(self) -> int:
        """Rows safely on disk in finished parts: where a resumed job restarts."""
        return sum(self._parts)

    def _settings(self) -> dict:
        return {"dim": self.dim, "rows_per_part": self.rows_per_part, "meta": self.meta}

    def _load_progress(self) -> None:
        progress = json.loads((self.work_dir / PROGRESS).read_text())
        expected = json.loads(json.dumps(self._settings(), default=str))  # as write_json stored it
        if {k: progress.get(k) for k in expected} != expected:
            raise ValueError(
                f"{self.work_dir}: unfinished embeddings were written with other settings "
                f"({progress.get('meta', {}).get('spec')}, dim {progress.get('dim')}, rows "
                f"{progress.get('meta', {}).get('rows')}); delete the folder or start without resume"
            )
        self._parts = list(progress["parts"])
        kept = {PROGRESS} | {_part_name(i) for i in range(len(self._parts))}
        kept |= {_keys_name(i) for i in range(len(self._parts))}
        # Anything else is from after the last finished part: it will be written again.
        for path in self.work_dir.iterdir():
            if path.name not in kept:
                path.unlink()

    def append(self, features: np.ndarray, keys: list[str]) -> None:
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"{self.out_dir}: expected features of shape (N, {self.dim}), got {features.shape}")
        if len(keys) != len(features):
            raise ValueError(f"{self.out_dir}: {len(features)} feature rows but {len(keys)} keys")
        with np.errstate(over="ignore"):  # overflow is reported just below, naming the store
            half = features.astype(DTYPE)
        if not np.isfinite(half).all():
            raise ValueError(f"{self.out_dir}: features are not finite in float16 (NaN, or beyond ±65504)")
        self._buffer.append(half)
        self._buffer_keys.extend(str(k) for k in keys)
        self._buffered += len(half)
        while self._buffered >= self.rows_per_part:
            self._flush(self.rows_per_part)

    def _flush(self, rows: int) -> None:
        block = np.concatenate(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        index = len(self._parts)
        _save_npy(self.work_dir / _keys_name(index), np.array(self._buffer_keys[:rows], dtype=str))
        _save_npy(self.work_dir / _part_name(index), block[:rows])
        self._parts.append(rows)
        write_json(self.work_dir / PROGRESS, {**self._settings(), "parts": self._parts})
        self._buffer = [block[rows:]] if rows < len(block) else []
        self._buffer_keys = self._buffer_keys[rows:]
        self._buffered -= rows

    def close(self) -> dict:
        """Write the last part, index.parquet and meta.json, then move the store into place."""
        if self._buffered:
            self._flush(self._buffered)
        keys = np.concatenate(
            [np.load(self.work_dir / _keys_name(i), allow_pickle=False) for i in range(len(self._parts))]
        ) if self._parts else np.array([], dtype=str)
        index = pd.DataFrame({"row": np.arange(len(keys), dtype=np.int64), "key": keys.astype(object)})
        index.to_parquet(self.work_dir / "index.parquet", index=False)
        meta = {
            **self.meta,
            "dim": self.dim,
            "count": self.rows_done,
            "dtype": np.dtype(DTYPE).name,
            "rows_per_part": self.rows_per_part,
            "parts": [{"file": _part_name(i), "rows": rows} for i, rows in enumerate(self._parts)],
        }
        write_json(self.work_dir / "meta.json", meta)
        for i in range(len(self._parts)):
            (self.work_dir / _keys_name(i)).unlink()
        (self.work_dir / PROGRESS).unlink(missing_ok=True)  # absent when no part was ever written
        replace_dir(self.work_dir, self.out_dir)
        return meta


class EmbeddingStore:
    """Read side: parts stay memory-mapped; `read` gathers rows, `to_numpy` materialises all."""

    def __init__(self, path: Path, meta: dict, parts: list[np.ndarray], keys: list[str]):
        self.path = path
        self.meta = meta
        self.dim = int(meta["dim"])
        self.keys = keys
        self._parts = parts
        self._starts = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def read(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"{self.path}: rows must be in [0, {len(self)})")
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        part_of = np.searchsorted(self._starts, rows, side="right") - 1
        for part in np.unique(part_of):
            chosen = part_of == part
            out[chosen] = self._parts[part][rows[chosen] - self._starts[part]]
        return out

    def rows(self, rows) -> "StoreRows":
        """A lazy selection: indexing it reads only the rows asked for (-1: a NaN row)."""
        return StoreRows(self, np.asarray(rows, dtype=np.int64))

    def to_numpy(self, dtype=np.float32) -> np.ndarray:
        out = np.empty((len(self), self.dim), dtype=dtype)
        for start, part in zip(self._starts[:-1], self._parts, strict=True):
            out[start:start + len(part)] = part
        return out


class StoreRows:
    """Rows of a store, read from its memory-mapped parts only when indexed: training on millions of
    pairs never holds more than a batch of them in memory. Row -1 reads as NaN (a missing item)."""

    def __init__(self, store: EmbeddingStore, rows: np.ndarray):
        self.store, self._rows = store, rows
        self.shape = (len(rows), store.dim)
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, idx) -> np.ndarray:
        rows = self._rows[idx]
        present = rows >= 0
        if present.all():
            return self.store.read(rows)
        out = np.full((len(rows), self.store.dim), np.nan, dtype=np.float32)
        out[present] = self.store.read(rows[present])
        return out


def open_embeddings(path: str | os.PathLike) -> EmbeddingStore:
    """Open a finished store; an unfinished or damaged one raises naming the folder or file."""
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{path}: no meta.json, so the embeddings are missing or unfinished")
    try:
        meta = json.loads(meta_path.read_text())
        dim, entries = int(meta["dim"]), [(entry["file"], int(entry["rows"])) for entry in meta["parts"]]
        dtype, count = np.dtype(meta["dtype"]), int(meta["count"])
    except (ValueError, KeyError, TypeError) as exc:  # cut short, or not written by EmbeddingWriter
        raise ValueError(f"{meta_path}: not a readable embeddings meta.json ({type(exc).__name__}: {exc})") from exc
    parts = []
    for file, rows in entries:
        part_path = path / file
        if not part_path.exists():
            raise FileNotFoundError(f"{part_path}: part listed in meta.json is missing")
        try:
            part = np.load(part_path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{part_path}: not a readable .npy part ({exc})") from exc
        if part.dtype != dtype or part.shape != (rows, dim):
            raise ValueError(f"{part_path}: expected {dtype} of shape ({rows}, {dim}), found {part.dtype} {part.shape}")
        parts.append(part)
    index_path = path / "index.parquet"
    try:
        index = pd.read_parquet(index_path, columns=["row", "key"]).sort_values("row")
    except (OSError, ValueError, KeyError) as exc:  # pyarrow's errors derive from these
        raise ValueError(f"{index_path}: not a readable index ({type(exc).__name__}: {exc})") from exc
    if len(index) != count or not np.array_equal(index["row"].to_numpy(), np.arange(count)):
        raise ValueError(f"{index_path}: rows do not match the {count} embeddings")
    if sum(len(p) for p in parts) != count:
        raise ValueError(f"{meta_path}: parts hold {sum(len(p) for p in parts)} rows, meta says {count}")
    return EmbeddingStore(path, meta, parts, index["key"].tolist())


def gather_embeddings(part_dirs: list[str | os.PathLike], out_dir: str | os.PathLike) -> dict:
    """Join finished part stores (the scatter's outputs, in part order) into the store one pass writes.

    Each part must come from the same encoder and dataset and cover the rows right after the
    previous one, from row 0 to the dataset's last; the result is written atomically.
    """
    stores = [open_embeddings(path) for path in part_dirs]
    if not stores:
        raise ValueError(f"{out_dir}: no embedding parts to gather")
    first = stores[0].meta
    part_fields = ("rows", "count", "parts", "rows_per_part", "items_per_s")
    common = {k: v for k, v in first.items() if k not in part_fields}
    expected_start = 0
    for store in stores:
        other = {k: v for k, v in store.meta.items() if k not in part_fields}
        if other != common:
            changed = sorted(k for k in common.keys() | other.keys() if common.get(k) != other.get(k))
            raise ValueError(f"{store.path}: differs from {stores[0].path} in {', '.join(changed)}")
        start, stop = store.meta.get("rows", [None, None])
        if start != expected_start or stop - start != len(store):
            raise ValueError(
                f"{store.path}: holds rows {store.meta.get('rows')} ({len(store)} embeddings), "
                f"expected the part starting at row {expected_start}"
            )
        expected_start = stop
    if expected_start != first.get("dataset_rows", expected_start):
        raise ValueError(
            f"{out_dir}: the parts cover rows 0..{expected_start}, the dataset has {first['dataset_rows']}"
        )

    files, keys = [], []
    for store in stores:
        files.extend(store.path / entry["file"] for entry in store.meta["parts"])
        keys.extend(store.keys)
    rows = [len(part) for store in stores for part in store._parts]
    with atomic_dir(out_dir) as tmp:
        for index, source in enumerate(files):
            link_or_copy(source, tmp / _part_name(index))
        table = pd.DataFrame({"row": np.arange(len(keys), dtype=np.int64), "key": keys})
        table.to_parquet(tmp / "index.parquet", index=False)
        meta = {
            **common,
            "rows": [0, expected_start],
            "count": len(keys),
            "rows_per_part": max(rows, default=0),
            "parts": [{"file": _part_name(i), "rows": n} for i, n in enumerate(rows)],
            "gathered_from": len(stores),
        }
        write_json(tmp / "meta.json", meta)
    return meta
