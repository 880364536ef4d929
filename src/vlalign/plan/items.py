"""How many items each source gives, known cheaply: a finished download's manifest where there is one, else
the source itself (a URL table's rows, a folder's images, local shards' samples), else unknown (None).

Tables are never loaded whole: parquet row counts come from the file's metadata, CSV rows are counted
streaming, and captions (for their length in tokens) are read from the first rows only.
"""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.csv
import pyarrow.parquet as pq

from vlalign.config import experiment_dir
from vlalign.data.images import IMAGE_EXTENSIONS
from vlalign.plan.assumptions import Assumptions
from vlalign.progress import Progress


@dataclass
class SourceCount:
    name: str
    items: float | None  # source items the download reads (after max_items); None: unknown
    train: float | None  # samples expected in its train split
    eval: float | None  # samples expected in its eval split
    bytes_per_sample: float | None  # bytes a sample takes in the download's shards
    captions: dict[str, list[str]] = field(default_factory=dict)  # caption field -> the first captions


def count_source(name: str, source: dict, config: dict, assumptions: Assumptions) -> SourceCount:
    manifest = experiment_dir(config) / "download" / name / "manifest.parquet"
    if manifest.is_file():
        return _from_manifest(name, manifest, assumptions)
    items, size = _source_size(name, source, assumptions)
    if items is not None and source.get("max_items") is not None:
        items = min(items, source["max_items"])
    success = assumptions.value(f"download.success_rate.{'url_list' if source['type'] == 'url_list' else 'local'}")
    ok = None if items is None else items * success
    count = SourceCount(name, items, _split(ok, 1 - source["eval_fraction"]), _split(ok, source["eval_fraction"]),
                        size)  # fmt: skip
    if source["type"] == "url_list":
        count.bytes_per_sample = assumptions.value("download.bytes_per_sample.url_list")
        rows = assumptions.value("text.sample_rows")
        for column in {source["caption_col"], *config["captions"]["extra"]}:
            count.captions[column] = table_column(source["path"], column, rows)
        count.captions["caption"] = count.captions.pop(source["caption_col"])
    return count


def _split(ok: float | None, fraction: float) -> float | None:
    return None if ok is None else ok * fraction


def _from_manifest(name: str, path: Path, assumptions: Assumptions) -> SourceCount:
    manifest = pd.read_parquet(path, columns=["status", "split", "bytes", "caption"])
    ok = manifest[manifest["status"] == "ok"]
    rows = int(assumptions.value("text.sample_rows"))
    assumptions.note(f"items.{name}", f"{len(ok):,} of {len(manifest):,} items ok",
                     f"the manifest of the finished download ({path})")  # fmt: skip
    size = float(ok["bytes"].mean()) if len(ok) else None
    return SourceCount(name, len(manifest), float((ok["split"] == "train").sum()), float((ok["split"] == "eval").sum()),
                       size, {"caption": ok["caption"].head(rows).astype(str).tolist()})  # fmt: skip


def _source_size(name: str, source: dict, assumptions: Assumptions) -> tuple[float | None, float | None]:
    """(items, bytes per sample) of a source not yet downloaded, each None where it cannot be known cheaply."""
    kind = source["type"]
    if kind == "url_list":
        rows = table_rows(source["path"], source["url_col"])
        assumptions.note(f"items.{name}", f"{rows:,} rows", f"counted in {source['path']}")
        return rows, None
    if kind == "folder":
        return _folder_size(source)
    if kind == "webdataset":
        return _shards_size(name, source["urls"], assumptions)
    if kind == "synthetic_compositional":
        return source["scenes"], None
    if kind == "winoground":
        with open(Path(source["path"]) / "data" / "examples.jsonl", encoding="utf-8") as lines:
            return 2 * sum(1 for line in lines if line.strip()), None  # two samples an example
    if kind == "sugarcrepe":
        # Entries; a sample is an (image, true caption), which several entries may share: an upper bound.
        return sum(len(json.loads(p.read_text())) for p in Path(source["path"]).glob("*.json")), None
    if kind == "debian_fashion_mnist" and source.get("per_class"):
        return 10 * source["per_class"], None  # ten classes
    assumptions.note(f"items.{name}", "unknown", f"a {kind} source is counted once downloaded (run `vlalign "
                     f"download` for it, or give --samples for the pool)")  # fmt: skip
    return None, None


def table_rows(path: str | os.PathLike, url_col: str) -> int:
    """Rows of a URL table: parquet from its metadata, CSV/TSV (optionally .gz) streamed, one column parsed."""
    path = Path(path)
    if path.name.lower().endswith(".parquet"):
        return pq.ParquetFile(path).metadata.num_rows
    reader = pyarrow.csv.open_csv(
        path, read_options=pyarrow.csv.ReadOptions(block_size=1 << 24),
        parse_options=pyarrow.csv.ParseOptions(delimiter="\t" if ".tsv" in path.name.lower() else ",",
                                               newlines_in_values=True),
        convert_options=pyarrow.csv.ConvertOptions(include_columns=[url_col]),
    )  # fmt: skip
    progress = Progress(f"plan: counting rows of {path.name}", total=None, unit="rows", interval=5.0)
    for batch in reader:
        progress.update(batch.num_rows)
    progress.close()
    return progress.done


def table_column(path: str | os.PathLike, column: str, rows: int) -> list[str]:
    """The first `rows` values of a column of a URL table as text; [] when it has no such column."""
    path = Path(path)
    if path.name.lower().endswith(".parquet"):
        table = pq.ParquetFile(path)
        if column not in table.schema_arrow.names:
            return []
        batch = next(table.iter_batches(batch_size=rows, columns=[column]), None)
        return [] if batch is None else [str(v) for v in batch.column(0).to_pylist() if v is not None]
    sep = "\t" if ".tsv" in path.name.lower() else ","
    header = pd.read_csv(path, sep=sep, nrows=0).columns
    if column not in header:
        return []
    values = pd.read_csv(path, sep=sep, nrows=rows, usecols=[column], dtype=str, keep_default_na=False)[column]
    return values.tolist()


def _folder_size(source: dict) -> tuple[int, float | None]:
    per_category: dict[str, int] = {}
    total_bytes = 0
    root = Path(source["path"])
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        images = [f for f in files
                  if not f.startswith(".") and Path(f).suffix.lower().removeprefix(".") in IMAGE_EXTENSIONS]
        category = Path(folder).relative_to(root).parts[:1] or ("",)
        per_category[category[0]] = per_category.get(category[0], 0) + len(images)
        total_bytes += sum(os.path.getsize(os.path.join(folder, f)) for f in images)
    count = sum(per_category.values())
    if source.get("per_class"):
        count = sum(min(n, source["per_class"]) for n in per_category.values())
    images = sum(per_category.values())
    return count, total_bytes / images if images else None


def _shards_size(name: str, urls: list[str], assumptions: Assumptions) -> tuple[int | None, float | None]:
    """Samples (distinct keys) and bytes per sample of local shards; remote shards are not opened."""
    from vlalign.data.webdataset_source import expand_urls

    shards = expand_urls(urls)
    if any("://" in shard for shard in shards):
        assumptions.note(f"items.{name}", "unknown", "remote shards are counted once downloaded")
        return None, None
    keys = 0
    for shard in shards:
        with tarfile.open(shard) as tar:
            keys += len({member.name.split(".", 1)[0] for member in tar if member.isfile()})
    size = sum(Path(shard).stat().st_size for shard in shards)
    assumptions.note(f"items.{name}", f"{keys:,} samples", f"counted in its {len(shards)} local shards")
    return keys, size / keys if keys else None
