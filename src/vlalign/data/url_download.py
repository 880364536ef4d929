"""One partition of a URL list downloaded into split shards, from the outcome store where it can be.

The index (`url_index.py`) cut the list into chunks of `samples_per_shard` rows and the chunks into partitions.
Chunk i of a partition becomes `train/shard-{i:06d}.tar` and `eval/shard-{i:06d}.tar` (absent when empty), and
its rows' outcomes part of `manifest.parquet`. Each finished chunk goes to the outcome store
(`outcome_store.py`) at once, so a killed job, a re-partitioned or appended list, or a retry round fetches only
what no entry holds: a chunk made for the same plan is linked whole, a row whose key and URL an entry holds is
copied from it, and a row whose recorded failure was transient is fetched again only in a later
`retry_round`.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd
import pyarrow.parquet as pq

from vlalign.data.fetch import Fetcher, is_transient
from vlalign.data.images import inspect_image
from vlalign.data.manifest import manifest_frame, manifest_row, mark_unexpected
from vlalign.data.outcome_store import Entry, OutcomeStore
from vlalign.data.shards import Sample, ShardWriter, reorder_shard
from vlalign.data.sources import split_of
from vlalign.data.url_index import base_keys, in_subset, key_hashes, read_index, shaping, subset_rank, text
from vlalign.data.url_table import UrlTable, extras_as_json
from vlalign.io import atomic_dir, atomic_path, link_or_copy, sha256_json
from vlalign.parallel import thread_map_unordered
from vlalign.progress import Progress

@dataclass
class _Task:
    chunk: int
    position: int  # of the row in its chunk
    key: str
    url: str | None
    caption: str | None
    meta: dict
    decided: dict | None  # the outcome the row itself decides (no URL, a repeat, ...), else None
    stored: tuple[Entry, dict] | None  # an entry's outcome for the same key and URL, to copy
    retried: bool  # its recorded failure was transient, and this is a later retry round


def _read_rows(path: Path, name: str, first: int, stop: int) -> pd.DataFrame:
    """The rows of an index table whose `row` lies in [first, stop)."""
    return pq.read_table(path / name, filters=[("row", ">=", first), ("row", "<", stop)]).to_pandas()


class PartitionDownload:
    def __init__(self, name: str, source: dict, index_dir: str | Path, partition: int, out_dir: str | Path,
                 store_dir: str | Path):  # fmt: skip
        index_dir = Path(index_dir)
        self.name, self.source, self.out_dir, self.partition = name, source, Path(out_dir), partition
        self.index = read_index(index_dir)
        if self.index["partitions"] != source["partitions"]:
            raise ValueError(f"{index_dir}: made for {self.index['partitions']} partitions, not {source['partitions']}")
        chunks = pq.read_table(index_dir / "chunks.parquet", filters=[("partition", "==", partition)]).to_pandas()
        self.chunks = chunks.sort_values("chunk", ignore_index=True)
        first = int(self.chunks["row"].min()) if len(self.chunks) else 0
        stop = int((self.chunks["row"] + self.chunks["rows"]).max()) if len(self.chunks) else 0
        self.repeats = _read_rows(index_dir, "repeats.parquet", first, stop).set_index("row")
        self.reuse = _read_rows(index_dir, "reuse.parquet", first, stop).set_index("row")["entry"]
        self.table = UrlTable(source["path"], source["url_col"], source["caption_col"], source["key_col"])
        self.store = OutcomeStore(store_dir)
        self.round = source["retry_round"]
        self.fetcher = Fetcher(source["max_bytes"], source["timeout_s"], source["retries"],
                               allow_networks=source["allow_networks"])  # fmt: skip
        self.counts = Counter(dict.fromkeys(("linked_chunks", "reused", "fetched", "retried", "recovered"), 0))
        self.manifests: dict[int, pd.DataFrame] = {}

    # Planning: what each row of a chunk needs.

    def _plan(self, chunk) -> tuple[list[_Task], str]:
        """The tasks of a chunk's rows (in order), and its plan: what the rows alone decide, and their keys."""
        rows = self.table.read(json.loads(chunk.locator), chunk.rows)
        keys = base_keys(self.name, rows, self.source["key_col"])
        cut = self.index["subset_cut"]
        # Two more hashes a row, needed only where max_items cuts the list.
        hashes, ranks = (key_hashes(keys), subset_rank(keys)) if cut is not None else (None, None)
        metas = extras_as_json(rows, self.table.extras)
        problems = rows["row_error"] if "row_error" in rows.columns else [None] * len(rows)
        tasks = []
        for position, (key, url, caption, problem) in enumerate(zip(keys, rows["url"], rows["caption"], problems)):
            row_number = chunk.row + position
            url, caption = text(url), text(caption)
            repeat = self.repeats.loc[row_number] if row_number in self.repeats.index else None
            if repeat is not None:  # it keeps a key of its own, so the manifest holds one row per row
                key = f"{key}-{int(repeat['occurrence'])}"
            decided = None
            if problem is not None and not pd.isna(problem):
                decided = {"error": "bad_row", "detail": str(problem)[:300]}
            elif url is None:
                decided = {"error": "no_url"}
            elif caption is None:
                decided = {"error": "no_caption"}
            elif repeat is not None:
                decided = {"status": "skipped", "error": "duplicate_row",
                           "detail": f"same key as row {int(repeat['first_row'])} ({keys[position]})"}  # fmt: skip
            elif cut is not None and not in_subset(ranks[position], hashes[position], cut):
                decided = {"status": "skipped", "error": "not_in_subset"}
            tasks.append(_Task(chunk.chunk, position, key, url, caption, metas[position], decided, None, False))
        plan = sha256_json({"fingerprint": chunk.fingerprint, "keys": [t.key for t in tasks],
                            "decided": [t.decided for t in tasks]})  # fmt: skip
        return tasks, plan

    def _current(self, entry: Entry | None, plan: str) -> bool:
        """The entry holds this chunk as the plan wants it, with no failure this retry round should try again."""
        if entry is None or entry.record.get("plan") != plan:
            return False
        return entry.record["round"] >= self.round or entry.transient_rows() == 0

    def _attach_stored(self, tasks: list[_Task], chunk) -> None:
        """Give each row that needs an outcome the one an entry holds for its key and URL, if any."""
        candidates: dict[str, tuple[Entry, dict]] = {}
        sources = [self.store.entry(chunk.fingerprint)]
        sources += [self.store.entry(fp) for fp in set(self.reuse[self.reuse.index.isin(
            range(chunk.row, chunk.row + chunk.rows))])]  # fmt: skip
        for entry in filter(None, sources):
            for key, row in entry.outcomes().items():
                candidates.setdefault(key, (entry, row))
        for task in tasks:
            if task.decided is not None or task.key not in candidates:
                continue
            entry, row = candidates[task.key]
            if row["origin"] != task.url:
                continue
            if is_transient(row["error"]) and entry.record["round"] < self.round:
                task.retried = True
            else:
                task.stored = (entry, row)

    def _tasks(self, work: Path, progress: Progress) -> Iterator[_Task]:
        for chunk in self.chunks.itertuples():
            tasks, plan = self._plan(chunk)
            entry = self.store.entry(chunk.fingerprint)
            if self._current(entry, plan):
                for split, shard in entry.shards().items():
                    link_or_copy(shard, work / split / f"shard-{chunk.chunk:06d}.tar")
                self.manifests[chunk.chunk] = entry.manifest()
                self.counts["linked_chunks"] += 1
                progress.update(chunk.rows)
                continue
            self._attach_stored(tasks, chunk)
            self._writers[chunk.chunk] = _ChunkWriter(self, work, chunk, plan)
            yield from tasks

    # Outcomes: one per row, in a pool thread.

    def _outcome(self, task: _Task) -> tuple[_Task, dict, Sample | None]:
        """The task, manifest row and (when usable) sample of one input row; never raises: whatever goes wrong
        with one row is that row's status."""
        row = manifest_row(task.key, self.name, task.url, task.caption)
        try:
            if task.decided is not None:
                row.update(task.decided)
                return task, row, None
            if task.stored is not None:
                try:
                    return task, row, self._copied(task, row)
                except (OSError, KeyError):  # the entry went away since: fetch instead
                    row = manifest_row(task.key, self.name, task.url, task.caption)
            return task, row, self._fetched(task, row)
        except Exception as exc:  # noqa: BLE001
            mark_unexpected(row, exc)
            return task, row, None

    def _copied(self, task: _Task, row: dict) -> Sample | None:
        entry, stored = task.stored
        row.update({k: stored[k] for k in ("status", "split", "error", "detail", "bytes", "width", "height")})
        row.update({k: None for k in ("width", "height") if pd.isna(row[k])})
        if stored["status"] != "ok":
            return None
        members = entry.members()[task.key]
        ext = next(e for e in members if e not in ("txt", "json"))
        return self._sample(task, entry.read_member(task.key, ext), ext, int(stored["width"]), int(stored["height"]))

    def _fetched(self, task: _Task, row: dict) -> Sample | None:
        fetched_ = self.fetcher.fetch(task.url)
        row.update(bytes=fetched_.received, error=fetched_.error, detail=fetched_.detail)
        if fetched_.error is not None:
            return None
        check = inspect_image(fetched_.data, self.source["max_pixels"], self.source["min_side"])
        row.update(width=check.width, height=check.height, error=check.error, detail=check.detail)
        if check.error is not None:
            return None
        row.update(status="ok", split=split_of(task.key, self.source["eval_fraction"]))
        return self._sample(task, check.data, check.ext, check.width, check.height)

    def _sample(self, task: _Task, data: bytes, ext: str, width: int, height: int) -> Sample:
        meta = {**task.meta, "source": self.name, "origin": task.url, "width": width, "height": height}
        return Sample(task.key, data, ext, task.caption, meta)

    def run(self) -> dict:
        """Download every chunk of the partition into the output folder; the counts."""
        total = int(self.chunks["rows"].sum())
        progress = Progress(f"download {self.name} partition {self.partition}", total=total)
        self._writers: dict[int, _ChunkWriter] = {}
        with atomic_dir(self.out_dir) as work:
            # Rows are written as their outcomes come in, so a URL that is retried or times out holds back only its
            # own thread and chunk; a chunk is put in order, stored and linked when its last row is in.
            for task, row, sample in thread_map_unordered(self._outcome, self._tasks(work, progress),
                                                          self.source["threads"]):  # fmt: skip
                writer = self._writers[task.chunk]
                writer.add(task, row, sample)
                self.counts["reused"] += task.stored is not None
                self.counts["retried"] += task.retried
                self.counts["recovered"] += task.retried and row["status"] == "ok"
                self.counts["fetched"] += task.decided is None and task.stored is None
                if writer.done():
                    self.manifests[task.chunk] = self._writers.pop(task.chunk).finish()
                progress.update(1)
            progress.close()
            shutil.rmtree(work / "tmp", ignore_errors=True)
            print(f"download {self.name} partition {self.partition}: {self.counts['linked_chunks']} of "
                  f"{len(self.chunks)} chunks taken whole from the store, {self.counts['reused']} rows copied from "
                  f"it, {self.counts['fetched']} fetched ({self.counts['retried']} retried, "
                  f"{self.counts['recovered']} recovered)", file=sys.stderr, flush=True)  # fmt: skip
            empty = manifest_frame([])
            manifest = pd.concat([empty, *(self.manifests[c] for c in sorted(self.manifests))], ignore_index=True)
            with atomic_path(work / "manifest.parquet") as part:
                manifest.astype(empty.dtypes.to_dict()).to_parquet(part, index=False)
            (work / "SOURCE").write_text(f"url_list {' '.join(self.index['files'])} partition {self.partition}\n")
        return {"manifest": manifest, **self.counts}


class _ChunkWriter:
    """The shards of one chunk, written as its rows come in and put in input order, stored and linked into the
    partition's folder only when all its rows are in."""

    def __init__(self, download: PartitionDownload, work: Path, chunk, plan: str):
        self.download, self.work, self.chunk, self.plan = download, work, chunk, plan
        self.tmp = work / "tmp" / f"{chunk.chunk:06d}"
        self.writers: dict[str, ShardWriter] = {}
        self.rows: dict[int, dict] = {}
        self.started = time.time()

    def add(self, task: _Task, row: dict, sample: Sample | None) -> None:
        self.rows[task.position] = row
        if sample is not None:
            split = row["split"]
            if split not in self.writers:
                # One shard per split and chunk: it holds at most the chunk's rows.
                self.writers[split] = ShardWriter(self.tmp / split, max(self.chunk.rows, 1))
            self.writers[split].write(sample)

    def done(self) -> bool:
        return len(self.rows) == self.chunk.rows

    def finish(self) -> pd.DataFrame:
        rows = [self.rows[position] for position in sorted(self.rows)]
        shards = {}
        for split, writer in self.writers.items():
            (shard,) = writer.close()
            # The same shard, byte for byte, however the fetches were timed.
            reorder_shard(shard, [row["key"] for row in rows if row["split"] == split])
            shards[split] = self.work / split / f"shard-{self.chunk.chunk:06d}.tar"
            shards[split].parent.mkdir(exist_ok=True)
            shard.replace(shards[split])
        frame = manifest_frame(rows)
        record = {"fingerprint": self.chunk.fingerprint, "plan": self.plan, "round": self.download.round,
                  "shaping": shaping(self.download.source),
                  "chunk": self.chunk.chunk, "rows": [self.chunk.row, self.chunk.row + self.chunk.rows],
                  "seconds": round(time.time() - self.started, 2)}  # fmt: skip
        try:
            self.download.store.write(record, frame, shards)
        except OSError as exc:  # the store is a cache: the partition's output stands without it
            print(f"download: chunk {self.chunk.chunk} not stored ({exc})", file=sys.stderr, flush=True)
        return frame
