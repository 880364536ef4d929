"""Download stage: a source -> webdataset shards per split + a manifest with one row per source item."""

from __future__ import annotations

import io
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import pandas as pd
from PIL import Image

from vlalign.data.debian import extract_deb, fetch_deb
from vlalign.data.shards import Sample, ShardWriter
from vlalign.data.sources import DEBIAN_SOURCES, SourceItem, hash_fraction, split_of
from vlalign.data.url_download import UrlListDownload
from vlalign.io import atomic_dir, atomic_path
from vlalign.progress import Progress

# Decompression bombs: refuse images with more pixels than this before decoding them.
MAX_IMAGE_PIXELS = 64_000_000


def check_image(data: bytes) -> tuple[int, int, str | None]:
    """(width, height, error) without a full decode; error is None for a usable image."""
    try:
        with warnings.catch_warnings():
            # PIL only warns between its limit and twice it; ours is lower, so count it ourselves.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        with img:
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                return width, height, "too_many_pixels"
            img.verify()
        return width, height, None
    except Image.DecompressionBombError:
        return 0, 0, "too_many_pixels"
    except Exception as exc:  # PIL raises many types for broken files
        return 0, 0, f"decode_error:{type(exc).__name__}"


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


def download_debian(name: str, source: dict, out_dir: Path, deb_cache: Path, samples_per_shard: int) -> dict:
    """Write `out_dir/{train,eval}/shard-*.tar` and `out_dir/manifest.parquet` for one Debian source."""
    default_package, reader = DEBIAN_SOURCES[source["type"]]
    package = source.get("package") or default_package
    started = time.time()
    deb = fetch_deb(package, deb_cache)
    with tempfile.TemporaryDirectory(prefix=f"vlalign-{name}-", dir=deb_cache) as extract_to:
        items = list(reader(extract_deb(deb, extract_to), source))
    seen: dict[str, str] = {}
    for item in items:
        if item.key in seen:
            raise ValueError(f"sources.{name}: items {seen[item.key]!r} and {item.origin!r} share key {item.key!r}")
        seen[item.key] = item.origin
    selected = select_items(items, source.get("max_items"), source.get("per_class"))

    rows = []
    with atomic_dir(out_dir) as tmp:
        writers: dict[str, ShardWriter] = {}
        progress = Progress(f"download {name}", total=len(items))
        for item in items:
            row = {
                "key": item.key, "source": name, "origin": item.origin, "split": None,
                "status": "failed", "error": item.error, "bytes": len(item.image or b""),
                "width": None, "height": None, "caption": item.caption, "category": item.category,
            }  # fmt: skip
            if item.error is None and item.key not in selected:
                row.update(status="skipped", error="not_in_subset")
            elif item.error is None:
                width, height, error = check_image(item.image)
                row.update(width=width, height=height, error=error)
                if error is None:
                    split = split_of(item.key, source["eval_fraction"])
                    if split not in writers:
                        writers[split] = ShardWriter(tmp / split, samples_per_shard)
                    meta = {**item.meta, "source": name, "origin": item.origin, "category": item.category,
                            "width": width, "height": height, "package": package}  # fmt: skip
                    writers[split].write(Sample(item.key, item.image, item.image_ext, item.caption, meta))
                    row.update(status="ok", split=split)
            rows.append(row)
            progress.update(1)
        progress.close()
        for writer in writers.values():
            writer.close()
        manifest = pd.DataFrame(rows)
        with atomic_path(tmp / "manifest.parquet") as part:
            manifest.to_parquet(part, index=False)
        (tmp / "SOURCE").write_text(f"{package} {deb.name}\n")

    return summarize_manifest(manifest, seconds=time.time() - started)


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
    if source["type"] in DEBIAN_SOURCES:
        return download_debian(name, source, Path(out_dir), Path(deb_cache), samples_per_shard)
    if source["type"] == "url_list":
        started = time.time()
        manifest = UrlListDownload(name, source, Path(out_dir), samples_per_shard).run()
        return summarize_manifest(manifest, seconds=time.time() - started)
    raise ValueError(f"sources.{name}.type: unknown source type {source['type']!r}")
