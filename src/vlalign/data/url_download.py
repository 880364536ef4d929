"""A URL list downloaded into split shards, one chunk of input rows at a time, resumable after a kill.

Rows are cut into chunks of `samples_per_shard`. Chunk i becomes `train/shard-{i:06d}.tar`
and `eval/shard-{i:06d}.tar` (absent when empty), `chunks/{i:06d}.parquet` (the outcome of
each of its rows) and, written last, `chunks/{i:06d}.json`: the rows it covers, a
fingerprint of those rows and of the settings that shape the result, its shards' sizes and
its counts. A chunk whose record matches is finished and is never fetched again.
Everything lives in a work folder beside the output (Snakemake deletes an unfinished
output, not this folder), which is renamed onto the output once every chunk is finished.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd

from vlalign.data.fetch import Fetcher
from vlalign.data.images import inspect_image
from vlalign.data.manifest import manifest_frame, manifest_row, mark_unexpected
from vlalign.parallel import thread_map_unordered
from vlalign.data.shards import Sample, ShardWriter, reorder_shard
from vlalign.data.sources import deterministic_subset, safe_key, split_of
from vlalign.data.url_table import extras_as_json, read_url_table
from vlalign.io import atomic_path, sha256_json, work_dir
from vlalign.progress import Progress

SPLITS = ("train", "eval")
# Settings that change what a row's outcome is; a chunk finished under others is fetched again.
SHAPING_SETTINGS = ("eval_fraction", "max_bytes", "max_pixels", "min_side", "allow_networks")


@dataclass
class _Task:
    chunk: int
    position: int  # of the row in its chunk
    key: str
    url: str | None
    caption: str | None
    selected: bool
    meta: dict
    first_row: int | None  # the earlier row this one repeats (same key), if any


def row_keys(name: str, table: pd.DataFrame, key_col: str) -> tuple[list[str], list[int | None]]:
    """Each row's key, from its `key_col` value when the table has that column (DataComp's `uid`), else from
    its URL and caption, so that a key follows its row when the list is reordered, appended to or split
    differently; and, for a row repeating an earlier row's key, the position of that first row (else None).
    A repeat keeps its own key, suffixed by its occurrence, so the manifest still holds one row per row."""
    values = table[key_col] if key_col in table.columns else [None] * len(table)
    first: dict[str, int] = {}
    occurrences: Counter = Counter()
    keys, repeats = [], []
    for position, (value, url, caption) in enumerate(zip(values, table["url"], table["caption"])):
        if pd.isna(value):  # no key column, or no value in it: the row's content names it
            content = f"{_text(url) or ''}\n{_text(caption) or ''}".encode()
            key = f"{name}_{hashlib.sha1(content).hexdigest()[:20]}"
        else:
            key = safe_key(f"{name}_{value}")
        occurrences[key] += 1
        first.setdefault(key, position)
        keys.append(key if occurrences[key] == 1 else f"{key}-{occurrences[key]}")
        repeats.append(None if occurrences[key] == 1 else first[key])
    return keys, repeats


def _text(value) -> str | None:
    return None if value is None or pd.isna(value) or not str(value).strip() else str(value).strip()


class UrlListDownload:
    def __init__(self, name: str, source: dict, out_dir: Path, samples_per_shard: int):
        if source.get("per_class") is not None:
            raise ValueError(f"sources.{name}: per_class needs categories, which a url_list does not have")
        self.name, self.source, self.out_dir = name, source, out_dir
        self.work = work_dir(out_dir)
        self.chunk_size = samples_per_shard
        self.fetcher = Fetcher(source["max_bytes"], source["timeout_s"], source["retries"],
                               allow_networks=source["allow_networks"])
        table, self.extras = read_url_table(source["path"], source["url_col"], source["caption_col"],
                                            source["key_col"])  # fmt: skip
        if table.empty:
            raise ValueError(f"sources.{name}.path: {source['path']} has no rows")
        keys, self.repeats = row_keys(name, table, source["key_col"])
        table.insert(0, "key", keys)
        unrepeated = pd.Series([first is None for first in self.repeats], index=table.index)
        usable = table["url"].map(_text).notna() & table["caption"].map(_text).notna() & unrepeated
        table["selected"] = table["key"].isin(deterministic_subset(table.loc[usable, "key"], source["max_items"]))
        self.table = table
        self.n_chunks = math.ceil(len(table) / self.chunk_size)

    def rows(self, chunk: int) -> pd.DataFrame:
        return self.table.iloc[chunk * self.chunk_size : (chunk + 1) * self.chunk_size]

    def row_range(self, chunk: int) -> list[int]:
        """[first, last + 1]: the input rows (0-based, header not counted) that `chunk` covers."""
        return [chunk * self.chunk_size, min((chunk + 1) * self.chunk_size, len(self.table))]

    def fingerprint(self, chunk: int) -> str:
        settings = {key: self.source[key] for key in SHAPING_SETTINGS}
        rows = self.rows(chunk).to_json(orient="values")
        return sha256_json({"source": self.name, "settings": settings, "rows": rows})

    def record_path(self, chunk: int) -> Path:
        return self.work / "chunks" / f"{chunk:06d}.json"

    def _finished_files(self, chunk: int) -> list[Path] | None:
        """The files of `chunk` when its record matches the current rows and settings, else None."""
        record_path = self.record_path(chunk)
        if not record_path.exists():
            return None
        record = json.loads(record_path.read_text())
        shards = {self.work / split / f"shard-{chunk:06d}.tar": size for split, size in record["shard_bytes"].items()}
        current = record["fingerprint"] == self.fingerprint(chunk) and record["rows"] == self.row_range(chunk)
        # A shard cut short or replaced since (a copy gone wrong) makes the chunk unfinished again.
        intact = all(path.exists() and path.stat().st_size == size for path, size in shards.items())
        files = [record_path, record_path.with_suffix(".parquet"), *shards]
        return files if current and intact and files[1].exists() else None

    def _remove_stale(self, kept: set[Path]) -> None:
        """Files of unfinished chunks, of chunks an earlier, longer input had, or half-written ones."""
        shutil.rmtree(self.work / "tmp", ignore_errors=True)
        for folder in ("chunks", *SPLITS):
            for path in (self.work / folder).glob("*"):
                if path not in kept:
                    path.unlink()
        for leftover in ("manifest.parquet", "SOURCE"):
            (self.work / leftover).unlink(missing_ok=True)

    def _tasks(self, chunks: list[int]) -> Iterator[_Task]:
        for chunk in chunks:
            rows = self.rows(chunk)
            for position, ((_, row), meta) in enumerate(zip(rows.iterrows(), extras_as_json(rows, self.extras),
                                                            strict=True)):  # fmt: skip
                yield _Task(chunk, position, row["key"], _text(row["url"]), _text(row["caption"]),
                            bool(row["selected"]), meta, self.repeats[row.name])  # fmt: skip

    def _outcome(self, task: _Task) -> tuple[_Task, dict, Sample | None]:
        """The task, manifest row and (when usable) sample of one input row; runs in a pool thread and never
        raises: whatever goes wrong with one row is that row's status."""
        row = manifest_row(task.key, self.name, task.url, task.caption)
        try:
            return task, row, self._sample(task, row)
        except Exception as exc:  # noqa: BLE001
            mark_unexpected(row, exc)
            return task, row, None

    def _sample(self, task: _Task, row: dict) -> Sample | None:
        """Fill in `row` for `task`; the sample when the row is usable."""
        if task.url is None:
            row["error"] = "no_url"
        elif task.caption is None:
            row["error"] = "no_caption"
        elif task.first_row is not None:
            row.update(status="skipped", error="duplicate_row",
                       detail=f"same key as row {task.first_row} ({self.table['key'].iat[task.first_row]})")
        elif not task.selected:
            row.update(status="skipped", error="not_in_subset")
        else:
            fetched = self.fetcher.fetch(task.url)
            row.update(bytes=fetched.received, error=fetched.error, detail=fetched.detail)
            if fetched.error is None:
                check = inspect_image(fetched.data, self.source["max_pixels"], self.source["min_side"])
                row.update(width=check.width, height=check.height, error=check.error, detail=check.detail)
                if check.error is None:
                    split = split_of(task.key, self.source["eval_fraction"])
                    row.update(status="ok", split=split)
                    meta = {**task.meta, "source": self.name, "origin": task.url,
                            "width": check.width, "height": check.height}  # fmt: skip
                    return Sample(task.key, check.data, check.ext, task.caption, meta)
        return None

    def run(self) -> pd.DataFrame:
        """Fetch every unfinished chunk, then move the work folder onto the output; the manifest."""
        files = {chunk: self._finished_files(chunk) for chunk in range(self.n_chunks)}
        finished = {chunk for chunk, paths in files.items() if paths is not None}
        self._remove_stale({path for chunk in finished for path in files[chunk]})
        todo = [chunk for chunk in range(self.n_chunks) if chunk not in finished]
        if finished:
            print(f"download {self.name}: resuming, {len(finished)} of {self.n_chunks} chunks already finished",
                  file=sys.stderr, flush=True)  # fmt: skip
        progress = Progress(f"download {self.name}", total=len(self.table))
        progress.update(sum(len(self.rows(chunk)) for chunk in finished))
        # Each row is written as soon as it is fetched, into its chunk's shards, so a URL that is retried or
        # times out holds back only its own thread and chunk, and no fetched image waits in memory for it.
        # A chunk is put in order and in place when its last row is in.
        writers: dict[int, _ChunkWriter] = {}
        left = {chunk: len(self.rows(chunk)) for chunk in todo}
        for task, row, sample in thread_map_unordered(self._outcome, self._tasks(todo), self.source["threads"]):
            if task.chunk not in writers:
                writers[task.chunk] = _ChunkWriter(self, task.chunk)
            writers[task.chunk].add(task.position, row, sample)
            left[task.chunk] -= 1
            if left[task.chunk] == 0:
                writers.pop(task.chunk).finish()
            progress.update(1)
        progress.close()
        return self._finalize()

    def _finalize(self) -> pd.DataFrame:
        chunks = self.work / "chunks"
        manifest = pd.concat([pd.read_parquet(chunks / f"{chunk:06d}.parquet") for chunk in range(self.n_chunks)],
                             ignore_index=True)  # fmt: skip
        with atomic_path(self.work / "manifest.parquet") as part:
            manifest.to_parquet(part, index=False)
        (self.work / "SOURCE").write_text(f"url_list {Path(self.source['path']).resolve()}\n")
        shutil.rmtree(self.work / "tmp", ignore_errors=True)
        if self.out_dir.exists():
            shutil.rmtree(self.out_dir)
        os.replace(self.work, self.out_dir)
        return manifest


class _ChunkWriter:
    """The shards and records of one chunk, written in the order its rows are fetched and put in input order,
    and in place, only when all its rows are in."""

    def __init__(self, download: UrlListDownload, chunk: int):
        self.download, self.chunk = download, chunk
        self.tmp = download.work / "tmp" / f"{chunk:06d}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.writers: dict[str, ShardWriter] = {}
        self.rows: dict[int, dict] = {}
        self.started = time.time()

    def add(self, position: int, row: dict, sample: Sample | None) -> None:
        self.rows[position] = row
        if sample is not None:
            split = row["split"]
            if split not in self.writers:
                # One shard per split and chunk: it holds at most the chunk's rows.
                self.writers[split] = ShardWriter(self.tmp / split, self.download.chunk_size)
            self.writers[split].write(sample)

    def finish(self) -> None:
        work, chunk = self.download.work, self.chunk
        rows = [self.rows[position] for position in sorted(self.rows)]
        shard_bytes = {}
        for split, writer in self.writers.items():
            (shard,) = writer.close()
            # The same shard, byte for byte, however the fetches were timed.
            reorder_shard(shard, [row["key"] for row in rows if row["split"] == split])
            shard_bytes[split] = shard.stat().st_size
            (work / split).mkdir(parents=True, exist_ok=True)
            os.replace(shard, work / split / f"shard-{chunk:06d}.tar")
        frame = manifest_frame(rows)
        (work / "chunks").mkdir(parents=True, exist_ok=True)
        with atomic_path(work / "chunks" / f"{chunk:06d}.parquet") as part:
            frame.to_parquet(part, index=False)
        record = {
            "chunk": chunk,
            "rows": self.download.row_range(chunk),
            "fingerprint": self.download.fingerprint(chunk),
            "shard_samples": {split: writer.total for split, writer in self.writers.items()},
            "shard_bytes": shard_bytes,
            "status": {status: int(n) for status, n in frame["status"].value_counts().items()},
            "seconds": round(time.time() - self.started, 2),
        }
        # The record comes last: its presence is what marks the chunk finished.
        with atomic_path(self.download.record_path(chunk)) as part:
            part.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        shutil.rmtree(self.tmp, ignore_errors=True)
