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

from vlalign.config import experiment_dir
from vlalign.data.images import IMAGE_EXTENSIONS
from vlalign.plan.assumptions import Assumptions
from vlalign.data.url_table import UrlTable


@dataclass
class SourceCount:
    name: str
    items: float | None  # source items the download reads (after max_items); None: unknown
    train: float | None  # samples expected in its train split
    eval: float | None  # samples expected in its eval split
    bytes_per_sample: float | None  # bytes a sample takes in the download's shards
    captions: dict[str, list[str]] = field(default_factory=dict)  # caption field -> the first captions


def count_source(name: str, source: dict, config: dict, assumptions: Assumptions) -> SourceCount:
    partitions = [experiment_dir(config) / "download" / name / f"part-{p:04d}" / "manifest.parquet"
                  for p in range(source["partitions"])]  # fmt: skip
    if all(manifest.is_file() for manifest in partitions):
        return _from_manifest(name, partitions, assumptions)
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
            count.captions[column] = table_column(source, column, rows)
        count.captions["caption"] = count.captions.pop(source["caption_col"])
    return count


def _split(ok: float | None, fraction: float) -> float | None:
    return None if ok is None else ok * fraction


def _from_manifest(name: str, paths: list[Path], assumptions: Assumptions) -> SourceCount:
    manifest = pd.concat([pd.read_parquet(p, columns=["status", "split", "bytes", "caption"]) for p in paths])
    ok = manifest[manifest["status"] == "ok"]
    rows = int(assumptions.value("text.sample_rows"))
    assumptions.note(f"items.{name}", f"{len(ok):,} of {len(manifest):,} items ok",
                     f"the manifests of the finished download ({paths[0].parent.parent})")  # fmt: skip
    size = float(ok["bytes"].mean()) if len(ok) else None
    return SourceCount(name, len(manifest), float((ok["split"] == "train").sum()), float((ok["split"] == "eval").sum()),
                       size, {"caption": ok["caption"].head(rows).astype(str).tolist()})  # fmt: skip


def _source_size(name: str, source: dict, assumptions: Assumptions) -> tuple[float | None, float | None]:
    """(items, bytes per sample) of a source not yet downloaded, each None where it cannot be known cheaply."""
    kind = source["type"]
    if kind == "url_list":
        rows = UrlTable(source["path"], source["url_col"], source["caption_col"], source["key_col"]).count_rows()
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


def table_column(source: dict, column: str, rows: int) -> list[str]:
    """The first `rows` values of a column of a URL list as text; [] when it has no such column."""
    table = UrlTable(source["path"], source["url_col"], source["caption_col"], source["key_col"])
    name = "caption" if column == source["caption_col"] else column
    if name != "caption" and name not in table.extras:
        return []
    first = next(table.scan(rows), None)
    return [] if first is None else [str(v) for v in first.rows[name].dropna()]


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
