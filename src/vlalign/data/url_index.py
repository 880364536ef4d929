"""The index of a URL list: its chunks, their partitions, repeated keys, the subset, and what the store holds.

One job reads the list once, a chunk of `samples_per_shard` rows at a time, and writes `download/{source}/index/`:

- `chunks.parquet`: one row per chunk (never spanning two files of a sharded list): its number, file, first
  row in the file and in the list, row count, where a reader can start it (`locator`), its fingerprint (its
  rows and the settings that shape an outcome) and its partition; a partition is a contiguous range of chunks;
- `repeats.parquet`: rows whose key an earlier row has (`row`, `first_row`, `occurrence`), over the whole list;
- `reuse.parquet`: rows of chunks the store has no entry for, whose key an entry holds (`row`, `entry`): a
  reordered list takes them from there;
- `index.json`: the counts, and the subset's cut when `max_items` is set.

Memory grows with the list (two 64-bit key hashes, the subset rank and positions a row, plus the sort's
copies): 86-145 bytes a row measured at 10^7 rows (docs/PERFORMANCE.md), so 9-15 GB for 10^8 rows, in one job.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from vlalign.data.outcome_store import OutcomeStore, fetched
from vlalign.data.sources import hash_fraction, safe_key
from vlalign.data.url_table import UrlTable
from vlalign.io import atomic_dir, sha256_json
from vlalign.progress import Progress

# Settings that change what a row's outcome is; a chunk fetched under others is fetched again.
SHAPING_SETTINGS = ("eval_fraction", "max_bytes", "max_pixels", "min_side", "allow_networks")


def text(value) -> str | None:
    return None if value is None or pd.isna(value) or not str(value).strip() else str(value).strip()


def base_keys(name: str, rows: pd.DataFrame, key_col: str) -> list[str]:
    """Each row's key before repeats are told apart: from its `key_col` value when the list has that column
    (DataComp's `uid`), else from its URL and caption (a malformed row: from the reader's message, which names
    its line), so that a key follows its row when the list is reordered, appended to or partitioned anew."""
    values = rows[key_col] if key_col in rows.columns else [None] * len(rows)
    problems = rows["row_error"] if "row_error" in rows.columns else [None] * len(rows)
    keys = []
    for value, url, caption, problem in zip(values, rows["url"], rows["caption"], problems):
        if value is not None and not pd.isna(value):
            keys.append(safe_key(f"{name}_{value}"))
            continue
        content = problem if problem is not None and not pd.isna(problem) else f"{text(url) or ''}\n{text(caption) or ''}"
        keys.append(f"{name}_{hashlib.sha1(content.encode()).hexdigest()[:20]}")
    return keys


def key_hashes(keys: list[str]) -> np.ndarray:
    """(n, 2) uint64: a 128-bit hash per key, to find repeats among 10^8 keys without holding the strings."""
    digests = b"".join(hashlib.blake2b(key.encode(), digest_size=16).digest() for key in keys)
    return np.frombuffer(digests, dtype=np.uint64).reshape(-1, 2)


def usable(rows: pd.DataFrame) -> np.ndarray:
    """Rows with a URL and a caption and no reader's complaint: the ones a subset may choose."""
    ok = rows["url"].map(text).notna() & rows["caption"].map(text).notna()
    if "row_error" in rows.columns:
        ok &= rows["row_error"].isna()
    return ok.to_numpy()


def subset_rank(keys: list[str]) -> np.ndarray:
    """The subset's order: lowest `hash_fraction` first, as every source's deterministic subset."""
    return np.array([hash_fraction(key) for key in keys], dtype=np.float64)


def shaping(source: dict) -> str:
    """A digest of the settings that shape an outcome: an entry made under others is never reused."""
    return sha256_json({key: source[key] for key in SHAPING_SETTINGS})


def chunk_fingerprint(name: str, source: dict, rows: pd.DataFrame) -> str:
    return sha256_json({"source": name, "settings": shaping(source), "rows": rows.to_json(orient="values")})


def read_index(index_dir: str | Path) -> dict:
    return json.loads((Path(index_dir) / "index.json").read_text())


def index_url_list(name: str, source: dict, samples_per_shard: int, out_dir: str | Path, store_dir: str | Path,
                   progress: bool = True) -> dict:  # fmt: skip
    """Write the index of the URL list of source `name` (a `sources` entry, defaults filled) into `out_dir`;
    its summary."""
    table = UrlTable(source["path"], source["url_col"], source["caption_col"], source["key_col"])
    chunks, hashes, ranks = [], [], []
    shown = Progress(f"index {name}", total=None, unit="rows", enabled=progress)
    row = 0
    for number, chunk in enumerate(table.scan(samples_per_shard)):
        keys = base_keys(name, chunk.rows, source["key_col"])
        hashes.append(key_hashes(keys))
        rank = subset_rank(keys)
        rank[~usable(chunk.rows)] = np.nan
        ranks.append(rank)
        chunks.append({"chunk": number, "file": chunk.file, "file_row": chunk.first_row, "row": row,
                       "rows": len(chunk.rows), "locator": json.dumps(chunk.locator, sort_keys=True),
                       "fingerprint": chunk_fingerprint(name, source, chunk.rows)})  # fmt: skip
        row += len(chunk.rows)
        shown.update(len(chunk.rows))
    shown.close()
    if not row:
        raise ValueError(f"sources.{name}.path: {source['path']} has no rows")
    frame = pd.DataFrame(chunks)
    frame["partition"] = partition_of(len(frame), source["partitions"])
    all_hashes = np.concatenate(hashes)
    repeats = find_repeats(all_hashes)
    rank = np.concatenate(ranks)
    rank[repeats["row"].to_numpy()] = np.nan  # a repeat is skipped, never chosen
    cut = subset_cut(rank, all_hashes, source["max_items"])
    store = OutcomeStore(store_dir)
    reuse = reusable_rows(store, frame, all_hashes, shaping(source))
    with atomic_dir(out_dir) as tmp:
        frame.to_parquet(tmp / "chunks.parquet", index=False)
        repeats.to_parquet(tmp / "repeats.parquet", index=False)
        reuse.to_parquet(tmp / "reuse.parquet", index=False)
        summary = {"source": name, "files": [str(f) for f in table.files], "rows": row, "chunks": len(frame),
                   "partitions": source["partitions"], "repeats": len(repeats), "subset_cut": cut,
                   "selectable": int(np.isfinite(rank).sum()), "reusable_rows": len(reuse),
                   "stored_chunks": int(sum(store.entry(fp) is not None for fp in frame["fingerprint"]))}
        (tmp / "index.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def partition_of(n_chunks: int, partitions: int) -> np.ndarray:
    """Partition p holds chunks [p·n/P, (p+1)·n/P): contiguous, sizes differing by at most one chunk."""
    return (np.arange(n_chunks) * partitions) // max(n_chunks, 1)


def find_repeats(hashes: np.ndarray) -> pd.DataFrame:
    """Rows whose key an earlier row has: the row, the first row with that key, and which occurrence it is."""
    n = len(hashes)
    order = np.lexsort((np.arange(n), hashes[:, 1], hashes[:, 0]))
    ordered = hashes[order]
    starts = np.ones(n, dtype=bool)
    starts[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    run_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    repeat = ~starts
    frame = pd.DataFrame({"row": order[repeat], "first_row": order[run_start[repeat]],
                          "occurrence": (np.arange(n) - run_start + 1)[repeat]})  # fmt: skip
    return frame.sort_values("row", ignore_index=True)


def subset_cut(rank: np.ndarray, hashes: np.ndarray, max_items: int | None) -> list | None:
    """The last (rank, hash) a subset of `max_items` keeps (rows not selectable have rank NaN); None: all."""
    selectable = np.flatnonzero(np.isfinite(rank))
    if max_items is None or len(selectable) <= max_items:
        return None
    # Ties of the 48-bit rank (a few among 10^8 rows) are broken by the key's hash, so the cut is one row.
    order = np.lexsort((hashes[selectable, 1], hashes[selectable, 0], rank[selectable]))
    last = selectable[order[max_items - 1]]
    return [float(rank[last]), int(hashes[last, 0]), int(hashes[last, 1])]


def in_subset(rank: float, hash_pair: np.ndarray, cut: list) -> bool:
    """Whether a row of this rank and key hash is at or before the subset's cut (`subset_cut`)."""
    return (rank, int(hash_pair[0]), int(hash_pair[1])) <= tuple(cut)


def reusable_rows(store: OutcomeStore, chunks: pd.DataFrame, hashes: np.ndarray, shaped_by: str) -> pd.DataFrame:
    """Rows of chunks the store lacks whose key some entry made under the same shaping settings holds a fetched
    outcome for (the partition checks the URL is the same): `row` (in the list) and `entry` (its fingerprint)."""
    missing = [c for c in chunks.itertuples() if store.entry(c.fingerprint) is None]
    empty = pd.DataFrame({"row": pd.Series(dtype="int64"), "entry": pd.Series(dtype="string")})
    current = set(chunks["fingerprint"])
    entries = [e for e in store.entries() if e.fingerprint not in current and e.record.get("shaping") == shaped_by]
    entries = entries if missing else []
    if not entries:
        return empty
    rows = np.concatenate([np.arange(c.row, c.row + c.rows) for c in missing])
    wanted = hashes[rows].copy().view("V16").ravel()
    found: dict[int, str] = {}
    for entry in entries:
        manifest = entry.manifest()
        stored = key_hashes(list(manifest.loc[fetched(manifest), "key"])).copy().view("V16").ravel()
        for position in np.flatnonzero(np.isin(wanted, stored)):
            found.setdefault(int(rows[position]), entry.fingerprint)
    if not found:
        return empty
    return pd.DataFrame({"row": list(found), "entry": pd.Series(list(found.values()), dtype="string")})
