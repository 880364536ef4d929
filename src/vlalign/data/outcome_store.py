"""The outcome store of a URL list: every chunk's fetched rows, kept outside any Snakemake output.

Snakemake deletes a job's outputs before it runs the job again (a new partitioning, a retry round, a longer
list), so what was fetched lives here, under `download/{source}/store/`, and downloads start from it. An entry
is one chunk's rows as the list held them, named by the chunk's fingerprint (its rows and the settings that
shape an outcome): `manifest.parquet` (every row's outcome), `{split}.tar` (the chunk's shards, in output
form) and, written last, `record.json`. A partition links an entry's shards into its output when the entry was
made for the same plan (keys, subset, repeats); otherwise it copies single rows' outcomes and image bytes from
any entry that holds the same key for the same URL (a reordered list), and fetches only the rest.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from vlalign.data.fetch import is_transient
from vlalign.data.shards import member_key
from vlalign.io import atomic_path, link_or_copy

RECORD = "record.json"
# Outcomes decided from the row itself, never by a fetch: recomputed, never taken from the store.
ROW_ERRORS = {"bad_row", "no_url", "no_caption", "duplicate_row", "not_in_subset"}


def fetched(manifest: pd.DataFrame) -> pd.Series:
    """The rows whose outcome a fetch decided (ok, or a failure met while fetching or checking the image)."""
    return (manifest["status"] != "skipped") & ~manifest["error"].isin(ROW_ERRORS).fillna(False).astype(bool)


@dataclass
class Entry:
    """A finished entry: its record, and lazily its manifest and the byte ranges of its samples' members."""

    path: Path
    record: dict

    @property
    def fingerprint(self) -> str:
        return self.record["fingerprint"]

    def manifest(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / "manifest.parquet")

    def outcomes(self) -> dict[str, dict]:
        """key -> manifest row of every row a fetch decided, read once per entry (a reordered list's chunks each
        take rows from many entries)."""
        if not hasattr(self, "_outcomes"):
            manifest = self.manifest()
            self._outcomes = {row["key"]: row for row in manifest[fetched(manifest)].to_dict("records")}
        return self._outcomes

    def shards(self) -> dict[str, Path]:
        return {split: self.path / f"{split}.tar" for split in self.record["shard_bytes"]}

    def transient_rows(self) -> int:
        return int(self.record.get("transient", 0))

    def members(self) -> dict[str, dict[str, tuple[Path, int, int]]]:
        """key -> extension -> (shard, offset, size) of every member, read once per entry."""
        if not hasattr(self, "_members"):
            found: dict[str, dict[str, tuple[Path, int, int]]] = {}
            for path in self.shards().values():
                with tarfile.open(path, "r") as tar:
                    for member in tar:
                        key, ext = member_key(member.name)
                        found.setdefault(key, {})[ext] = (path, member.offset_data, member.size)
            self._members = found
        return self._members

    def read_member(self, key: str, ext: str) -> bytes:
        path, offset, size = self.members()[key][ext]
        with open(path, "rb") as f:
            return os.pread(f.fileno(), size, offset)


class OutcomeStore:
    """The entries under `root`, each `{fingerprint[:2]}/{fingerprint}/`."""

    def __init__(self, root: str | os.PathLike, cached_entries: int = 64):
        self.root = Path(root)
        self._cache: OrderedDict[str, Entry | None] = OrderedDict()
        self._cached_entries = cached_entries

    def path(self, fingerprint: str) -> Path:
        return self.root / fingerprint[:2] / fingerprint

    def entry(self, fingerprint: str) -> Entry | None:
        """The finished entry of a fingerprint, or None (absent, half-written, or a shard changed since)."""
        if fingerprint in self._cache:
            self._cache.move_to_end(fingerprint)
            return self._cache[fingerprint]
        found = self._read(self.path(fingerprint))
        self._cache[fingerprint] = found
        if len(self._cache) > self._cached_entries:
            self._cache.popitem(last=False)
        return found

    @staticmethod
    def _read(path: Path) -> Entry | None:
        try:
            record = json.loads((path / RECORD).read_text())
        except (OSError, ValueError):
            return None
        entry = Entry(path, record)
        intact = all(p.exists() and p.stat().st_size == record["shard_bytes"][split]
                     for split, p in entry.shards().items())  # fmt: skip
        return entry if intact and (path / "manifest.parquet").exists() else None

    def entries(self) -> list[Entry]:
        """Every finished entry (for the index's look-up of keys across entries)."""
        # `.{fingerprint}.*.part` folders are entries being written (or left by a killed job): never read.
        found = (self._read(path) for path in sorted(self.root.glob("*/[!.]*")) if path.is_dir())
        return [entry for entry in found if entry is not None]

    def write(self, record: dict, manifest: pd.DataFrame, shards: dict[str, Path]) -> None:
        """Put an entry (the chunk's manifest, links to its finished shards) in place of any older one of the same
        fingerprint: built beside it, renamed over it."""
        target = self.path(record["fingerprint"])
        with atomic_path(target, folder=True) as tmp:
            for split, shard in shards.items():
                link_or_copy(shard, tmp / f"{split}.tar")
            manifest.to_parquet(tmp / "manifest.parquet", index=False)
            transient = sum(map(is_transient, manifest["error"].dropna()))
            record = {**record, "shard_bytes": {split: (tmp / f"{split}.tar").stat().st_size for split in shards},
                      "transient": transient}  # fmt: skip
            (tmp / RECORD).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        self._cache.pop(record["fingerprint"], None)

