"""Download: a source -> webdataset shards per split + a manifest with one row per source item.

SOURCE_TYPES says how each `type` of the config's `sources` is read and checked: the Debian demo
packages, `folder`, `webdataset`, the evaluation sets (read in one pass and written here), and
`url_list` (fetched in resumable chunks, `data/url_download.py`). A source type's keys and their
defaults are its entry in the schema (`sources`).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from vlalign.data.address_policy import network_problems
from vlalign.data.benchmarks import benchmark_items, layout_problems
from vlalign.data.clip_benchmark import write_clip_benchmark_layout
from vlalign.data.debian import extract_deb, fetch_deb
from vlalign.data.folder import folder_items
from vlalign.data.images import inspect_image
from vlalign.data.manifest import manifest_frame, manifest_row, mark_unexpected
from vlalign.data.planted import PlantedSource, planted_problems
from vlalign.data.shards import Sample, ShardWriter
from vlalign.data.sources import DEBIAN_SOURCES, SourceItem, deterministic_subset, load_classnames, split_of
from vlalign.data.url_download import PartitionDownload
from vlalign.data.url_index import index_url_list
from vlalign.data.url_table import expand_paths
from vlalign.data.webdataset_source import shard_problems, webdataset_items
from vlalign.io import atomic_dir, atomic_path, work_dir
from vlalign.parallel import thread_map
from vlalign.progress import Progress
from vlalign.schema import complete, default


@dataclass(frozen=True)
class Target:
    """Where a download writes: its output folder, the shard size, the Debian package cache; for a URL list, the
    partition, the list's index and its outcome store."""

    out_dir: Path
    samples_per_shard: int
    deb_cache: Path | None  # None for sources that are not Debian packages
    partition: int = 0
    index_dir: Path | None = None
    store_dir: Path | None = None


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
    """Keys of the usable items that the deterministic subset keeps."""
    usable = [item for item in items if item.error is None]
    return deterministic_subset([item.key for item in usable], max_items, per_class, [item.category for item in usable])


def _outcome(item: SourceItem, name: str, selected: set[str] | None, checks: Checks, eval_fraction: float,
             extra_meta: dict) -> tuple[dict, Sample | None]:  # fmt: skip
    """The manifest row of one item, and its sample when it is usable; runs in a pool thread and never raises."""
    row = manifest_row(item.key, name, item.origin, item.caption, item.category)
    try:
        return row, _sample(item, row, name, selected, checks, eval_fraction, extra_meta)
    except Exception as exc:  # noqa: BLE001
        mark_unexpected(row, exc)
        return row, None


def _sample(item: SourceItem, row: dict, name: str, selected: set[str] | None, checks: Checks, eval_fraction: float,
            extra_meta: dict) -> Sample | None:  # fmt: skip
    """Fill in `row` for `item`; its sample when it is usable."""
    row.update(error=item.error, detail=item.detail)
    if item.error is not None:
        return None
    if selected is not None and item.key not in selected:
        row.update(status="skipped", error="not_in_subset")
        return None
    size = len(item.image) if item.image is not None else item.path.stat().st_size
    row["bytes"] = size
    if checks.max_bytes is not None and size > checks.max_bytes:
        row.update(error="too_large_bytes", detail=f"{size} > {checks.max_bytes} bytes")
        return None
    data = item.image if item.image is not None else item.path.read_bytes()
    check = inspect_image(data, checks.max_pixels, checks.min_side, checks.decode)
    row.update(width=check.width, height=check.height, error=check.error, detail=check.detail)
    if check.error is not None:
        return None
    split = split_of(item.key, eval_fraction)
    row.update(status="ok", split=split)
    meta = {**item.meta, "source": name, "origin": item.origin, "category": item.category,
            "width": check.width, "height": check.height, **extra_meta}  # fmt: skip
    return Sample(item.key, check.data, check.ext, item.caption, meta)


def write_items(name: str, items: Iterable[SourceItem], source: dict, target: Target, checks: Checks,
                selected: set[str] | None, provenance: str, extra_meta: dict | None = None,
                total: int | None = None) -> pd.DataFrame:  # fmt: skip
    """Write `{out_dir}/{train,eval}/shard-*.tar`, `manifest.parquet` and `SOURCE` (`provenance`); the manifest."""

    def check(item: SourceItem) -> tuple[dict, Sample | None]:
        return _outcome(item, name, selected, checks, source["eval_fraction"], extra_meta or {})

    rows = []
    with atomic_dir(target.out_dir) as tmp:
        writers: dict[str, ShardWriter] = {}
        progress = Progress(f"download {name}", total=total)
        for row, sample in thread_map(check, items, checks.threads):
            if sample is not None:
                if row["split"] not in writers:
                    writers[row["split"]] = ShardWriter(tmp / row["split"], target.samples_per_shard)
                writers[row["split"]].write(sample)
            rows.append(row)
            progress.update(1)
        progress.close()
        for writer in writers.values():
            writer.close()
        if "eval" in writers:
            write_clip_benchmark_layout(tmp / "eval", default("evaluate.templates"))
        manifest = manifest_frame(rows)
        with atomic_path(tmp / "manifest.parquet") as part:
            manifest.to_parquet(part, index=False)
        (tmp / "SOURCE").write_text(provenance + "\n")
    return manifest


def download_debian(name: str, source: dict, target: Target) -> pd.DataFrame:
    default_package, reader = DEBIAN_SOURCES[source["type"]]
    package = source.get("package") or default_package
    deb = fetch_deb(package, target.deb_cache)
    with tempfile.TemporaryDirectory(prefix=f"vlalign-{name}-", dir=target.deb_cache) as extract_to:
        items = list(reader(extract_deb(deb, extract_to), source))
    seen: dict[str, str] = {}
    for item in items:
        if item.key in seen:
            raise ValueError(f"sources.{name}: items {seen[item.key]!r} and {item.origin!r} share key {item.key!r}")
        seen[item.key] = item.origin
    selected = select_items(items, source.get("max_items"), source.get("per_class"))
    # Package contents are trusted enough for a header check; a full decode of 8k images costs ~30 s.
    checks = Checks(max_pixels=source["max_pixels"], decode=False)
    return write_items(name, items, source, target, checks, selected, f"{package} {deb.name}",
                       extra_meta={"package": package}, total=len(items))  # fmt: skip


def _checks(source: dict) -> Checks:
    return Checks(max_pixels=source["max_pixels"], max_bytes=source["max_bytes"], min_side=source["min_side"],
                  threads=source["threads"])  # fmt: skip


def _classnames(name: str, source: dict):
    if source.get("classnames") is None:
        return None
    return load_classnames(source["classnames"], f"sources.{name}.classnames")


def download_folder(name: str, source: dict, target: Target) -> pd.DataFrame:
    # Paths only: cheap to hold for the subset.
    items = list(folder_items(source["path"], name, _classnames(name, source), source["caption_template"]))
    selected = select_items(items, source.get("max_items"), source.get("per_class"))
    return write_items(name, items, source, target, _checks(source), selected,
                       f"folder {Path(source['path']).resolve()}", total=len(items))  # fmt: skip


def download_webdataset(name: str, source: dict, target: Target) -> pd.DataFrame:
    items = webdataset_items(source["urls"], name, source["max_bytes"], _classnames(name, source),
                             source["caption_template"])  # fmt: skip
    return write_items(name, items, source, target, _checks(source), None,
                       "webdataset " + " ".join(source["urls"]))  # fmt: skip


def download_compositional(name: str, source: dict, target: Target) -> pd.DataFrame:
    from vlalign.data.compositional import compositional_items

    items = compositional_items(name, source["scenes"], source["seed"])
    return write_items(name, items, source, target, _checks(source), None,
                       f"synthetic compositional set, {source['scenes']} scenes, seed {source['seed']}",
                       total=source["scenes"])  # fmt: skip


def download_benchmark(name: str, source: dict, target: Target) -> pd.DataFrame:
    items, provenance = benchmark_items(name, source)
    selected = select_items(items, source.get("max_items"), source.get("per_class"))
    return write_items(name, items, source, target, _checks(source), selected, provenance,
                       total=len(items))  # fmt: skip


def download_planted(name: str, source: dict, target: Target) -> pd.DataFrame:
    # The sources it is made from were downloaded beside it (the rule's inputs): {downloads}/{source}/part-NNNN/.
    planted = PlantedSource(name, source, target.out_dir.parent.parent)
    # Every image is decoded (so a broken one of `from` fails here), but `from` had its own size limits: a copy of
    # a sample it wrote is not refused for its size.
    checks = Checks(max_pixels=source["max_pixels"], threads=source["threads"])
    manifest = write_items(name, planted.items(), source, target, checks, None, planted.provenance,
                           total=len(planted.truth))  # fmt: skip
    planted.write_truth(target.out_dir / "planted.parquet", manifest)
    return manifest


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


def download_url_list(name: str, source: dict, target: Target) -> pd.DataFrame:
    store_dir = target.store_dir or work_dir(target.out_dir, "store")
    if target.index_dir is not None:
        counts = PartitionDownload(name, source, target.index_dir, target.partition, target.out_dir, store_dir).run()
    else:  # a call from Python, not the workflow: the list is indexed first, for this call alone
        with tempfile.TemporaryDirectory(prefix=f"vlalign-{name}-index-") as tmp:
            index_url_list(name, source, target.samples_per_shard, Path(tmp) / "index", store_dir, progress=False)
            counts = PartitionDownload(name, source, Path(tmp) / "index", target.partition, target.out_dir,
                                       store_dir).run()  # fmt: skip
    manifest = counts.pop("manifest")
    manifest.attrs["counts"] = counts
    return manifest


@dataclass(frozen=True)
class SourceType:
    """How one `type` of source is downloaded, and what the config check asks of its entry."""

    download: Callable[[str, dict, Target], pd.DataFrame]  # (name, source, target) -> manifest
    path: str | None = None  # what `path` names: "files" (brace-expanded), "folder" (the rule's input), None: not used
    required: tuple[str, ...] = ()  # keys that must be set
    # An evaluation set only (eval_fraction 1), scored by evaluate.compositional.
    evaluation: bool = False
    # Subset keys it cannot honour, and why.
    unsupported: dict[str, str] = field(default_factory=dict)
    problems: Callable[[dict], list[str]] | None = None  # `key: problem` lines about its local files


_STREAMED = "not supported for webdataset sources (read once, as a stream)"
_RENDERED = "not supported for synthetic_compositional sources (`scenes` sets the size)"
_PLANTED = "not supported for planted sources (they copy every train sample of `from`: subset that source)"
SOURCE_TYPES: dict[str, SourceType] = {
    **{kind: SourceType(download_debian) for kind in DEBIAN_SOURCES},
    "url_list": SourceType(download_url_list, path="files", required=("path",),
                           unsupported={"per_class": "needs categories, which a url_list does not have"}),
    "folder": SourceType(download_folder, path="folder", required=("path",)),
    "webdataset": SourceType(download_webdataset, required=("urls",), problems=shard_problems,
                             unsupported={"max_items": _STREAMED, "per_class": _STREAMED}),
    "synthetic_compositional": SourceType(download_compositional, evaluation=True,
                                          unsupported={"max_items": _RENDERED, "per_class": _RENDERED}),
    "sugarcrepe": SourceType(download_benchmark, path="folder", required=("path",), evaluation=True,
                             problems=layout_problems),
    "winoground": SourceType(download_benchmark, path="folder", required=("path",), evaluation=True,
                             problems=layout_problems),
    "planted": SourceType(download_planted, required=("from",), problems=planted_problems,
                          unsupported={"max_items": _PLANTED, "per_class": _PLANTED}),
}  # fmt: skip


def _key_problems(source: dict) -> list[str]:
    kind = SOURCE_TYPES[source["type"]]
    problems = [f"{key}: required for type {source['type']}" for key in kind.required if not source.get(key)]
    if source["type"] != "url_list" and source.get("partitions", 1) != 1:
        problems.append(f"partitions: only a url_list is downloaded in partitions, not a {source['type']}")
    problems += network_problems(source.get("allow_networks") or (), "allow_networks")
    return problems + [f"{key}: {why}" for key, why in kind.unsupported.items() if source.get(key) is not None]


def source_paths(source: dict) -> list[str]:
    """The local files or folder that `path` names (a URL list's shards brace-expanded), the download's input."""
    kind = SOURCE_TYPES[source["type"]].path
    if kind is None or not source.get("path") or "://" in source["path"]:
        return []
    return [str(p) for p in expand_paths(source["path"])] if kind == "files" else [source["path"]]


def source_problems(source: dict) -> list[str]:
    """What is wrong with a source entry (defaults filled in), as `key: problem` lines, known before any
    download: keys its type needs or cannot honour, and local files and folders that are missing."""
    kind = SOURCE_TYPES[source["type"]]
    problems = _key_problems(source)
    wanted = [("classnames", source.get("classnames"), "file")]
    if kind.path == "folder":
        wanted.append(("path", source.get("path"), "folder"))
    elif kind.path == "files" and source.get("path") and "://" not in source["path"]:
        try:
            expand_paths(source["path"])
        except (ValueError, FileNotFoundError) as exc:
            problems.append(f"path: {exc}")
    exists = {"file": Path.is_file, "folder": Path.is_dir}
    problems += [f"{key}: {path} is not a {what}" for key, path, what in wanted
                 if path and "://" not in str(path) and not exists[what](Path(path))]  # fmt: skip
    if not problems and kind.problems is not None:
        problems += kind.problems(source)
    return problems


def run_download(name: str, source: dict, out_dir: str | Path, deb_cache: str | Path | None,
                 samples_per_shard: int, partition: int = 0, index_dir: str | Path | None = None,
                 store_dir: str | Path | None = None) -> dict:  # fmt: skip
    """Download the source `name` (a config entry of `sources`, keys left out taking the schema's defaults), or
    one partition of a URL list, into `out_dir`; the manifest's counts (and a URL list's reused, fetched,
    retried and recovered rows)."""
    started = time.time()
    source = complete("sources.*", source, what=f"sources.{name}")
    problems = _key_problems(source)  # missing files are the readers' to name, as they meet them
    if problems:
        raise ValueError("; ".join(f"sources.{name}.{problem}" for problem in problems))
    if not 0 <= partition < source["partitions"]:
        raise ValueError(f"sources.{name}: partition {partition} of {source['partitions']}")
    target = Target(Path(out_dir), samples_per_shard, None if deb_cache is None else Path(deb_cache), partition,
                    *(None if p is None else Path(p) for p in (index_dir, store_dir)))  # fmt: skip
    manifest = SOURCE_TYPES[source["type"]].download(name, source, target)
    return {**summarize_manifest(manifest, seconds=time.time() - started), **manifest.attrs.get("counts", {})}
