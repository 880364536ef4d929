"""The sample table beside .beton files: one row per stored sample, saying which .beton holds it and where.

Columns: `row` (the dataset's row), key, caption, source, category, meta_json, `beton` (the file, relative to
the table's folder) and `beton_row` (the record in it). A converted dataset has one .beton; the pool has one per
download partition, and `gather_tables` joins their tables into the pool's, rows numbered in partition order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vlalign.io import atomic_path

SCHEMA = pa.schema([
    ("row", pa.int64()), ("key", pa.string()), ("caption", pa.string()), ("source", pa.string()),
    ("category", pa.string()), ("meta_json", pa.string()), ("beton", pa.string()), ("beton_row", pa.int64()),
])  # fmt: skip


@dataclass(frozen=True)
class BetonRows:
    """Rows [start, stop) of a dataset: records first, first + 1, ... of the .beton at `path`."""

    path: Path
    start: int
    stop: int
    first: int

    def indices(self) -> np.ndarray:
        return np.arange(self.first, self.first + self.stop - self.start)


def write_table(rows: list[dict], table_path: Path, beton_path: Path) -> None:
    """The table of a .beton's records (`rows` in record order, without the `beton` columns)."""
    frame = pd.DataFrame(rows, columns=[name for name in SCHEMA.names if not name.startswith("beton")])
    frame["beton"] = os.path.relpath(beton_path, Path(table_path).parent)
    frame["beton_row"] = frame["row"]
    pq.write_table(pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False), table_path)


def count_rows(table_path) -> int:
    """The table's rows, from the parquet footer."""
    return pq.ParquetFile(table_path).metadata.num_rows


def read_rows(table_path, start: int, stop: int, columns: list[str]) -> pa.Table:
    """Rows [start, stop) of a table stored in row order, reading only the row groups that hold them: a part of
    a pool of 10^8 samples never loads the other parts' keys."""
    file = pq.ParquetFile(table_path)
    missing = sorted(set(columns) - set(file.schema_arrow.names))
    if missing:
        raise ValueError(f"{table_path}: no {', '.join(missing)} column (written before .betons were partitioned?): "
                         "convert it again, e.g. `snakemake --forcerun convert`")
    sizes = [file.metadata.row_group(i).num_rows for i in range(file.num_row_groups)]
    begins = np.cumsum([0, *sizes])
    groups = [i for i in range(len(sizes)) if begins[i] < stop and begins[i + 1] > start]
    if not groups:
        return SCHEMA.empty_table().select(columns)
    rows = file.read_row_groups(groups, columns=["row", *columns]).slice(start - begins[groups[0]], stop - start)
    if not np.array_equal(rows["row"].to_numpy(), np.arange(start, start + len(rows))):
        raise ValueError(f"{table_path}: rows {start}..{stop - 1} are not stored in row order")
    return rows.select(columns)


def beton_rows(table_path, start: int, stop: int) -> tuple[list[BetonRows], np.ndarray]:
    """Where rows [start, stop) of the table's dataset are stored (consecutive records of one .beton after
    another), and their keys."""
    rows = read_rows(table_path, start, stop, ["key", "beton", "beton_row"])
    records = rows["beton_row"].to_numpy()
    # Records of one .beton follow each other; a jump (to the next .beton's record 0) starts another file.
    begins = np.flatnonzero(np.diff(records, prepend=records[:1] - 2) != 1)
    ends = [*begins[1:], len(records)]
    folder = Path(table_path).parent
    names = rows["beton"].take(pa.array(begins)).to_pylist()
    runs = [BetonRows(folder / name, start + int(b), start + int(e), int(records[b]))
            for name, b, e in zip(names, begins, ends)]  # fmt: skip
    return runs, rows["key"].to_numpy(zero_copy_only=False)


def gather_tables(tables: list[str | os.PathLike], out: str | os.PathLike) -> dict:
    """Join partition tables (in partition order) into one table at `out`: `row` numbers every sample, `beton`
    names each sample's .beton relative to `out`'s folder. A partition with no sample adds nothing; a key in two
    partitions is refused. Streams one partition at a time; `out` appears only on success."""
    out = Path(out)
    hashes, written, start = [], [], 0
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, SCHEMA) as writer:
        for path in map(Path, tables):
            part = pq.read_table(path, schema=SCHEMA)
            if part.num_rows == 0:
                continue
            writer.write_table(_renumbered(part, path, start, out.parent))
            hashes.append(pd.util.hash_array(part["key"].to_numpy(zero_copy_only=False)))
            written.append(path)
            start += part.num_rows
        if not start:
            raise ValueError(f"{out}: no sample in any of the {len(tables)} partition tables")
        _refuse_duplicate_keys(written, hashes)
    return {"rows": start, "partitions": len(tables), "empty_partitions": len(tables) - len(written)}


def _renumbered(part: pa.Table, path: Path, start: int, folder: Path) -> pa.Table:
    """A partition's table with rows from `start` and its .beton named from `folder`."""
    betons = part["beton"].unique().to_pylist()
    records = part["beton_row"].to_numpy()
    if len(betons) != 1 or not np.array_equal(records, np.arange(len(records))):
        raise ValueError(f"{path}: not the table of one .beton (names {betons[:3]}, records not 0..{len(records) - 1})")
    beton = os.path.relpath(path.parent / betons[0], folder)
    part = part.set_column(SCHEMA.get_field_index("row"), "row", pa.array(np.arange(start, start + len(part))))
    return part.set_column(SCHEMA.get_field_index("beton"), "beton", pa.repeat(pa.scalar(beton), len(part)))


def _refuse_duplicate_keys(tables: list[Path], hashes: list[np.ndarray]) -> None:
    """Raise on a key in two rows. 64-bit hashes (8 bytes a sample) find the candidates; only their keys are
    then compared, so 10^8 keys are never held as strings."""
    ordered = np.sort(np.concatenate(hashes))
    candidates = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if not len(candidates):
        return
    seen: dict[str, Path] = {}
    for path, part_hashes in zip(tables, hashes):
        keys = pq.read_table(path, columns=["key"])["key"].to_numpy(zero_copy_only=False)
        for key in keys[np.isin(part_hashes, candidates)]:
            if key in seen:
                raise ValueError(f"duplicate key {key!r} in {seen[key]} and {path}")
            seen[key] = path
