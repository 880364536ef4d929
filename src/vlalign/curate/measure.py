"""Measure every sample of the pool once; curated pools are then selections over the table.

Image work (decode, hashes, OCR with `ocr: all`) runs in worker processes; then each measurement of
MEASUREMENTS adds its columns to the table, in order: caption heuristics, language, concepts, the hash
comparisons (within the pool and against the eval images), OCR of the survivors. A filter that needs a new
column adds a measurement there.

A measurement of one sample (`scope="sample"`) runs where its images are, one job per partition
(`measure_samples`); one that compares samples (`scope="pool"`) runs once over every partition's table
(`measure_set`), which reads images again only for OCR of the survivors. `measure_pool` is both in one call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd

from vlalign.curate.captions import measure_captions
from vlalign.curate.concepts import load_entries, match_concepts
from vlalign.curate.dedup import NO_HASH, greedy_duplicates, phash_codes
from vlalign.curate.hamming_index import nearest_within
from vlalign.curate.filters import FILTERS
from vlalign.curate.images import measure_batch, ocr_batch
from vlalign.curate.language import measure_language
from vlalign.curate.ocr import bundled_ocr_models, caption_overlap
from vlalign.data.shards import Sample, folder_shards, iter_samples, shard_paths
from vlalign.parallel import batched, process_map
from vlalign.progress import Progress
from vlalign.schema import complete

# The columns of the image phase, in order.
IMAGE_COLUMNS = {
    "key": "sample key", "source": "source name (shard metadata)", "caption": "caption text",
    "category": "category (shard metadata), if any",
    "width": "image width (pixels; header size when the image does not decode)", "height": "image height",
    "min_side": "shorter side (pixels)", "aspect_ratio": "longer side / shorter side",
    "decode_ok": "the image decodes fully", "decode_error": "why it does not",
    "pixel_std": "grey-level standard deviation at 32x32 (0: blank)",
    "image_sha256": "sha256 of the image bytes", "phash": "64-bit perceptual hash (hex), None if undecodable or blank",
}  # fmt: skip


@dataclass(frozen=True)
class Context:
    """What a measurement may read besides the table: the settings and the shard folders."""

    settings: dict
    folders: list[Path]
    eval_folders: list[Path]


@dataclass(frozen=True)
class Measurement:
    """A phase of `measure_pool`: `measure(pool, context)` returns the table with `columns` added."""

    phase: str  # its name in `attrs["seconds"]`
    columns: dict[str, str]  # column -> meaning, in table order
    measure: Callable[[pd.DataFrame, Context], pd.DataFrame]
    scope: str = "sample"  # "sample": each row alone, per partition; "pool": rows compared, over all partitions


def check_settings(settings: dict) -> dict:
    """The measurement settings completed with the schema's defaults (`curate.measure`)."""
    return complete("curate.measure", settings, what="curate measurement settings")


def _pool_samples(folders: list[Path]) -> Iterator[Sample]:
    return iter_samples(folder_shards(folders))


def _run_batches(fn, tasks: Iterable, s: dict, label: str, total: int | None) -> pd.DataFrame:
    """fn over batches of tasks in the worker processes, rows in task order, with progress lines."""
    progress = Progress(label, total=total, unit="images", enabled=s["progress"])
    rows = []
    for result in process_map(fn, batched(tasks, s["batch_size"]), s["workers"]):
        rows.extend(result)
        progress.update(len(result))
    progress.close()
    return pd.DataFrame(rows)


def _measure_images(folders: list[Path], s: dict, ocr_side: int | None, label: str) -> pd.DataFrame:
    """Key, source, caption, category and the image measurements of every sample, in shard order."""
    captions = []

    def tasks():
        for sample in _pool_samples(folders):
            captions.append({"key": sample.key, "source": sample.meta.get("source"), "caption": sample.caption,
                             "category": sample.meta.get("category")})  # fmt: skip
            yield sample.key, sample.image, ocr_side

    images = _run_batches(measure_batch, tasks(), s, label, None)
    return pd.DataFrame(captions).join(images.drop(columns="key")) if captions else images


def _ocr(folders: list[Path], keys: set[str], s: dict) -> pd.DataFrame:
    tasks = ((sample.key, sample.image, s["ocr_max_side"]) for sample in _pool_samples(folders) if sample.key in keys)
    read = _run_batches(ocr_batch, tasks, s, "curate: OCR (text spotting)", len(keys))
    return read.reindex(columns=["key", "ocr_text", "ocr_error", "ocr_seconds"])


def _duplicates(pool: pd.DataFrame, max_hamming: int) -> pd.DataFrame:
    exact = greedy_duplicates(pool["image_sha256"], pool["phash"], exact=True, near=False)["of"]
    unique = pool[exact.isna()]
    near = greedy_duplicates(unique["image_sha256"], unique["phash"], exact=False, near=True,
                             max_hamming=max_hamming)["of"]  # fmt: skip
    codes, valid = phash_codes(pool["phash"])
    distance, _ = nearest_within(codes[valid], codes[valid], max_hamming, exclude_same_index=True)
    nearest_hamming = np.full(len(pool), np.nan)
    nearest_hamming[valid] = np.where(distance == NO_HASH, np.nan, distance)
    key_of = pool["key"]
    return pd.DataFrame({
        "duplicate_of": exact.map(lambda label: None if label is None else key_of[label]),
        "near_duplicate_of": near.map(lambda label: None if label is None else key_of[label]).reindex(pool.index),
        "nearest_hamming": nearest_hamming,
    }, index=pool.index)  # fmt: skip


def _contamination(pool: pd.DataFrame, evals: pd.DataFrame, max_hamming: int) -> pd.DataFrame:
    """Nearest eval image of each pool image within max_hamming pHash bits (or with identical bytes): key,
    distance, byte-identical or not."""
    out = pd.DataFrame({"eval_nearest": None, "eval_hamming": np.nan, "eval_exact": False}, index=pool.index)
    if len(evals):
        exact_key = evals.drop_duplicates("image_sha256").set_index("image_sha256")["key"]
        codes, valid = phash_codes(pool["phash"])
        eval_codes, eval_valid = phash_codes(evals["phash"])
        eval_keys = evals["key"].to_numpy()[eval_valid]
        distance, index = nearest_within(codes[valid], eval_codes[eval_valid], max_hamming)
        has = distance != NO_HASH
        rows = pool.index[valid][has]
        out.loc[rows, "eval_nearest"] = eval_keys[index[has]]
        out.loc[rows, "eval_hamming"] = distance[has].astype(float)
        exact = pool["image_sha256"].map(exact_key)
        out["eval_exact"] = exact.notna()
        out.loc[exact.notna(), "eval_nearest"] = exact[exact.notna()]
        out.loc[exact.notna(), "eval_hamming"] = 0.0
    near = out["eval_exact"] | (out["eval_hamming"] <= max_hamming)
    out["contaminates"] = out["eval_nearest"].where(near, None)
    return out


def _ocr_targets(measured: pd.DataFrame, s: dict) -> set[str]:
    """The samples that pass the filters OCR reads the survivors of (every decodable one without filters)."""
    from vlalign.curate.decide import decide

    filters = s["filters"] or []
    names = [f["name"] for f in filters]
    before = filters[: names.index("text_spotting")] if "text_spotting" in names else filters
    cheap = [f for f in before if FILTERS[f["name"]].before_ocr]
    decided = decide(measured, cheap)
    return set(decided.loc[decided["kept"] & decided["decode_ok"], "key"])


def _captions(pool: pd.DataFrame, run: Context) -> pd.DataFrame:
    return pool.join(measure_captions(pool["caption"], run.settings["boilerplate"]))


def _language(pool: pd.DataFrame, run: Context) -> pd.DataFrame:
    return pool.join(measure_language(pool["caption"]))


def _concepts(pool: pd.DataFrame, run: Context) -> pd.DataFrame:
    return pool.assign(concepts=match_concepts(pool["caption"], load_entries(run.settings["concepts"])))


def _pool_duplicates(pool: pd.DataFrame, run: Context) -> pd.DataFrame:
    return pool.join(_duplicates(pool, run.settings["max_hamming"]))


def _eval_contamination(pool: pd.DataFrame, run: Context) -> pd.DataFrame:
    evals = (_measure_images(run.eval_folders, run.settings, None, "curate: measuring eval images")
             if run.eval_folders else pd.DataFrame(columns=["key", "image_sha256", "phash"]))  # fmt: skip
    return pool.join(_contamination(pool, evals, run.settings["max_hamming"]))


def _text_in_images(pool: pd.DataFrame, run: Context) -> pd.DataFrame:
    """OCR of the survivors (with `ocr: all` it ran in the images phase) and the caption words it found."""
    s = run.settings
    if s["ocr"] == "survivors":
        pool = pool.merge(_ocr(run.folders, _ocr_targets(pool, s), s), on="key", how="left")
    for column in ("ocr_text", "ocr_error", "ocr_seconds"):
        if column not in pool.columns:  # ocr: off, or not one image could be read
            pool[column] = None
    pool["ocr_seconds"] = pool["ocr_seconds"].astype(float)
    read = pool["ocr_text"].notna()
    pool["caption_ocr_overlap"] = np.nan
    pool.loc[read, "caption_ocr_overlap"] = [caption_overlap(c, t) for c, t in
                                             zip(pool.loc[read, "caption"], pool.loc[read, "ocr_text"])]  # fmt: skip
    return pool


MEASUREMENTS = (
    Measurement("captions", {
        "n_words": "whitespace-separated words", "n_chars": "characters, surrounding space stripped",
        "complexity": "distinct content words (see captions.py)",
        "boilerplate": "first stock phrase matched, 'file_name' for a bare file name, else None",
        "url_like": "contains a URL or domain", "non_utf8": "contains U+FFFD (bytes that were not UTF-8)",
    }, _captions),
    Measurement("language", {"language": "fastText lid.176 top language (None without letters)",
                             "language_confidence": "its probability"}, _language),
    Measurement("concepts", {"concepts": "concept entries the caption mentions"}, _concepts),
    Measurement("dedup", {
        "duplicate_of": "first earlier sample with the same bytes",
        "near_duplicate_of": "earlier kept sample within max_hamming pHash bits (exact copies aside)",
        "nearest_hamming": "pHash distance to the nearest other pool image, if within max_hamming",
    }, _pool_duplicates, scope="pool"),
    Measurement("decontamination", {
        "eval_nearest": "nearest eval image within max_hamming (key)",
        "eval_hamming": "its pHash distance (0 for identical bytes)",
        "eval_exact": "identical bytes to an eval image", "contaminates": "eval key when exact or within max_hamming",
    }, _eval_contamination, scope="pool"),
    Measurement("ocr", {
        "ocr_text": "text OCR read in the image (None: not read)", "ocr_error": "why OCR failed",
        "ocr_seconds": "OCR time for this image on one core", "caption_ocr_overlap": "caption words written in the image",
    }, _text_in_images, scope="pool"),
)  # fmt: skip
# Every column of the measurements, in order.
COLUMNS = {**IMAGE_COLUMNS, **{column: meaning for m in MEASUREMENTS for column, meaning in m.columns.items()}}


def measure_pool(shard_folders: list[Path], eval_folders: list[Path], settings: dict | None = None,
                 progress: bool = True) -> pd.DataFrame:  # fmt: skip
    """One row per pool sample, in shard order, with every filter's measured columns (see COLUMNS): the
    partition's and the pool's measurements in one call. `settings` are the keys of `curate.measure`, the
    others taking the schema's defaults."""
    samples = measure_samples(shard_folders, settings, progress)
    return measure_set([samples], shard_folders, eval_folders, settings, progress)


def _timer(seconds: dict[str, float]) -> Callable[[str], None]:
    started = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal started
        seconds[phase] = round(seconds.get(phase, 0.0) + time.perf_counter() - started, 3)
        started = time.perf_counter()

    return lap


def measure_samples(shard_folders: list[Path], settings: dict | None = None, progress: bool = True) -> pd.DataFrame:
    """The measurements of each sample alone (the image phase and every `scope="sample"` measurement) of the
    shards in the folders (a partition's), in shard order; empty folders give an empty table.

    `attrs["seconds"]` holds each phase's wall time (with `ocr: all`, OCR runs inside the images phase).
    """
    s = {**check_settings(settings), "progress": progress}
    if s["ocr"] == "all":
        bundled_ocr_models()  # a missing model fails here, before any work
    seconds: dict[str, float] = {}
    lap = _timer(seconds)
    folders = [Path(f) for f in shard_folders]
    if not any(shard_paths(folder, allow_empty=True) for folder in folders):  # a partition whose rows all failed
        pool = pd.DataFrame(columns=list(IMAGE_COLUMNS))
    else:
        pool = _measure_images(folders, s, s["ocr_max_side"] if s["ocr"] == "all" else None,
                               "curate: measuring pool images")  # fmt: skip
        pool["min_side"] = pool[["width", "height"]].min(axis=1, skipna=False)
        pool["aspect_ratio"] = pool[["width", "height"]].max(axis=1, skipna=False) / pool["min_side"].clip(lower=1)
    lap("images")
    run = Context(s, folders, [])
    for measurement in MEASUREMENTS:
        if measurement.scope == "sample":
            pool = measurement.measure(pool, run)
            lap(measurement.phase)
    pool.attrs["seconds"] = seconds
    return pool


def measure_set(tables: list[pd.DataFrame], shard_folders: list[Path], eval_folders: list[Path],
                settings: dict | None = None, progress: bool = True) -> pd.DataFrame:  # fmt: skip
    """The pool's measurements over every partition's `measure_samples` table (in partition order): the ones
    that compare samples, with each other and with the eval images, and OCR of the survivors, which reads the
    pool's shard folders again. `attrs["seconds"]` adds up the partitions' phases and the pool's;
    `attrs["ocr_samples"]` counts the images OCR read."""
    s = {**check_settings(settings), "progress": progress}
    if s["ocr"] != "off":
        bundled_ocr_models()
    seconds: dict[str, float] = {}
    for table in tables:
        for phase, value in table.attrs.get("seconds", {}).items():
            seconds[phase] = round(seconds.get(phase, 0.0) + value, 3)
    lap = _timer(seconds)
    folders = [Path(f) for f in shard_folders]
    if not any(len(t) for t in tables):
        raise ValueError(f"no samples in {', '.join(map(str, folders))}")
    # A column one partition has only None in comes back as objects: typed again from all of the pool's values.
    pool = pd.concat([t for t in tables if len(t)], ignore_index=True).infer_objects()
    if pool["key"].duplicated().any():
        dup = pool.loc[pool["key"].duplicated(), "key"].iloc[0]
        raise ValueError(f"sample key {dup!r} occurs twice in {', '.join(map(str, folders))}")
    run = Context(s, folders, [Path(f) for f in eval_folders])
    for measurement in MEASUREMENTS:
        if measurement.scope == "pool":
            pool = measurement.measure(pool, run)
            lap(measurement.phase)
    pool = pool[list(COLUMNS)]
    pool.attrs["seconds"] = seconds
    pool.attrs["ocr_samples"] = int(pool["ocr_seconds"].notna().sum())
    return pool
