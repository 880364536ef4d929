"""Download stage: a source -> webdataset shards per split + a manifest with one row per source item.

Source types: the Debian demo packages, `folder` and `webdataset` (items read in one pass
and written here), and `url_list` (fetched in resumable chunks, `data/url_download.py`).
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

from vlalign.data.benchmarks import BENCHMARKS, benchmark_items
from vlalign.data.clip_benchmark import write_clip_benchmark_layout
from vlalign.data.debian import extract_deb, fetch_deb
from vlalign.data.folder import folder_items
from vlalign.data.images import inspect_image
from vlalign.data.manifest import manifest_frame, manifest_row
from vlalign.parallel import thread_map
from vlalign.data.shards import Sample, ShardWriter
from vlalign.data.sources import DEBIAN_SOURCES, SourceItem, hash_fraction, load_classnames, split_of
from vlalign.data.url_download import UrlListDownload
from vlalign.data.webdataset_source import webdataset_items
from vlalign.io import atomic_dir, atomic_path
from vlalign.progress import Progress

@dataclass
class Checks:
    """What an item must pass to be written, by how many threads at once. The Debian archives are
    curated, so their images are only structure-checked (a full decode of openclipart's 8k images
    would add ~25 s to the demo)."""

    max_pixels: int
    max_bytes: int | None = None
    min_side: int = 0
    decode: bool = True
    threads: int = 1


def select_items(items: list[SourceItem], max_items: int | None, per_class: int | None) -> set[str]:
    """Keys kept by the deterministic subset: lowest key hashes first, per class and overall."""
    ranked = sorted((hash_fraction(item.key), item.key, item.category) for item in items if item.error is None)
    taken: Counter = Counter()
    keys: list[str] = []
    for _, key, category in ranked:
        if per_class is not None and taken[category] >= per_class:
            continue
        taken[category] += 1
        keys.append(key)
    return set(keys[:max_items] if max_items is not None else keys)


def _outcome(item: SourceItem, name: str, selected: set[str] | None, checks: Checks, eval_fraction: float,
             extra_meta: dict) -> tuple[dict, Sample | None]:  # fmt: skip
    """The manifest row of one item, and its sample when it is usable; runs in a pool thread."""
    row = manifest_row(item.key, name, item.origin, item.caption, item.category)
    row.update(error=item.error, detail=item.detail)
    if item.error is not None:
        return row, None
    if selected is not None and item.key not in selected:
        row.update(status="skipped", error="not_in_subset")
        return row, None
    size = len(item.image) if item.image is not None else item.path.stat().st_size
    row["bytes"] = size
    if checks.max_bytes is not None and size > checks.max_bytes:
        row.update(error="too_large_bytes", detail=f"{size} > {checks.max_bytes} bytes")
        return row, None
    data = item.image if item.image is not None else item.path.read_bytes()
    check = inspect_image(data, checks.max_pixels, checks.min_side, checks.decode)
    row.update(width=check.width, height=check.height, error=check.error, detail=check.detail)
    if check.error is not None:
        return row, None
    split = split_of(item.key, eval_fraction)
    row.update(status="ok", split=split)
    meta = {**item.meta, "source": name, "origin": item.origin, "category": item.category,
            "width": check.width, "height": check.height, **extra_meta}  # fmt: skip
    return row, Sample(item.key, check.data, check.ext, item.caption, meta)


def write_items(name: str, items: Iterable[SourceItem], source: dict, out_dir: Path, samples_per_shard: int,
                checks: Checks, selected: set[str] | None, provenance: str, extra_meta: dict | None = None,
                total: int | None = None) -> pd.DataFrame:  # fmt: skip
    """Write `out_dir/{train,eval}/shard-*.tar`, `manifest.parquet` and `SOURCE` (`provenance`); the manifest."""

    def check(item: SourceItem) -> tuple[dict, Sample | None]:
        return _outcome(item, name, selected, checks, source["eval_fraction"], extra_meta or {})

    rows = []
    with atomic_dir(out_dir) as tmp:
        writers: dict[str, ShardWriter] = {}
        progress = Progress(f"download {name}", total=total)
        for row, sample in thread_map(check, items, checks.threads):
            if sample is not None:
                if row["split"] not in writers:
                    writers[row["split"]] = ShardWriter(tmp / row["split"], samples_per_shard)
                writers[row["split"]].write(sample)
            rows.append(row)
            progress.update(1)
        progress.close()
        for writer in writers.values():
            writer.close()
        if "eval" in writers:
            write_clip_benchmark_layout(tmp / "eval", default_templates())
        manifest = manifest_frame(rows)
        with atomic_path(tmp / "manifest.parquet") as part:
            manifest.to_parquet(part, index=False)
        (tmp / "SOURCE").write_text(provenance + "\n")
    return manifest


def default_templates() -> list[str]:
    """The zero-shot templates the evaluate stage uses unless configured otherwise."""
    from vlalign.config import load_schema

    return load_schema()["properties"]["evaluate"]["properties"]["templates"]["default"]


def download_debian(name: str, source: dict, out_dir: Path, deb_cache: Path, samples_per_shard: int) -> pd.DataFrame:
    default_package, reader = DEBIAN_SOURCES[source["type"]]
    package = source.get("package") or default_package
    deb = fetch_deb(package, deb_cache)
    with tempfile.TemporaryDirectory(prefix=f"vlalign-{name}-", dir=deb_cache) as extract_to:
        items = list(reader(extract_deb(deb, extract_to), source))
    seen: dict[str, str] = {}
    for item in items:
        if item.key in seen:
            raise ValueError(f"sources.{name}: items {seen[item.key]!r} and {item.origin!r} share key {item.key!r}")
        seen[item.key] = item.origin
    selected = select_items(items, source.get("max_items"), source.get("per_class"))
    # Package contents are trusted enough for a header check; a full decode of 8k images costs ~30 s.
    checks = Checks(max_pixels=source["max_pixels"], decode=False)
    return write_items(name, items, source, out_dir, samples_per_shard, checks, selected, f"{package} {deb.name}",
                       extra_meta={"package": package}, total=len(items))  # fmt: skip


def _checks(source: dict) -> Checks:
    return Checks(max_pixels=source["max_pixels"], max_bytes=source["max_bytes"], min_side=source["min_side"],
                  threads=source["threads"])  # fmt: skip


def _classnames(name: str, source: dict):
    if source.get("classnames") is None:
        return None
    return load_classnames(source["classnames"], f"sources.{name}.classnames")


def download_folder(name: str, source: dict, out_dir: Path, samples_per_shard: int) -> pd.DataFrame:
    # Paths only: cheap to hold for the subset.
    items = list(folder_items(source["path"], name, _classnames(name, source), source["caption_template"]))
    selected = select_items(items, source.get("max_items"), source.get("per_class"))
    return write_items(name, items, source, out_dir, samples_per_shard, _checks(source), selected,
                       f"folder {Path(source['path']).resolve()}", total=len(items))  # fmt: skip


def download_webdataset(name: str, source: dict, out_dir: Path, samples_per_shard: int) -> pd.DataFrame:
    if source.get("max_items") is not None or source.get("per_class") is not None:
        # A deterministic subset needs every key first; shards are read once, as a stream.
        raise ValueError(f"sources.{name}: max_items and per_class are not supported for webdataset sources")
    items = webdataset_items(source["urls"], name, source["max_bytes"], _classnames(name, source),
                             source["caption_template"])  # fmt: skip
    return write_items(name, items, source, out_dir, samples_per_shard, _checks(source), None,
                       "webdataset " + " ".join(source["urls"]))  # fmt: skip


def download_compositional(name: str, source: dict, out_dir: Path, samples_per_shard: int) -> pd.DataFrame:
    from vlalign.data.compositional import compositional_items

    items = compositional_items(name, source["scenes"], source["seed"])
    return write_items(name, items, source, out_dir, samples_per_shard, _checks(source), None,
                       f"synthetic compositional set, {source['scenes']} scenes, seed {source['seed']}",
                       total=source["scenes"])  # fmt: skip


def download_benchmark(name: str, source: dict, out_dir: Path, samples_per_shard: int) -> pd.DataFrame:
    items, provenance = benchmark_items(name, source)
    selected = select_items(items, source.get("max_items"), source.get("per_class"))
    return write_items(name, items, source, out_dir, samples_per_shard, _checks(source), selected, provenance,
                       total=len(items))  # fmt: skip


def summarize_manifest(manifest: pd.DataFrame, seconds: float = 0.0) -> dict:
    """Counts that always add up: items = ok + failed + skipped."""
    counts = manifest["status"].value_counts()
    summary = {
        "items": int(len(manifest)),
        "ok": int(counts.get("ok", 0)),
        "failed": int(counts.get("failed", 0)),
        "skipped": int(counts.get("skipped", 0)),
        "seconds": round(seconds, 2),
    }
    for split, count in manifest.loc[manifest["status"] == "ok", "split"].value_counts().items():
        summary[f"ok_{split}"] = int(count)
    for error, count in manifest.loc[manifest["status"] != "ok", "error"].value_counts().items():
        summary[f"error.{error}"] = int(count)
    assert summary["items"] == summary["ok"] + summary["failed"] + summary["skipped"]
    return summary


def run_download(name: str, source: dict, out_dir: str | Path, deb_cache: str | Path, samples_per_shard: int) -> dict:
    started = time.time()
    out_dir = Path(out_dir)
    kind = source["type"]
    if kind in DEBIAN_SOURCES:
        manifest = download_debian(name, source, out_dir, Path(deb_cache), samples_per_shard)
    elif kind == "url_list":
        manifest = UrlListDownload(name, source, out_dir, samples_per_shard).run()
    elif kind == "folder":
        manifest = download_folder(name, source, out_dir, samples_per_shard)
    elif kind == "webdataset":
        manifest = download_webdataset(name, source, out_dir, samples_per_shard)
    elif kind == "synthetic_compositional":
        manifest = download_compositional(name, source, out_dir, samples_per_shard)
    elif kind in BENCHMARKS:
        manifest = download_benchmark(name, source, out_dir, samples_per_shard)
    else:
        raise ValueError(f"sources.{name}.type: unknown source type {kind!r}")
    return summarize_manifest(manifest, seconds=time.time() - started)
