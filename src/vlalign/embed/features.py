"""Frozen-encoder features of a dataset's images (one .beton, or the pool's partition .betons read as one) or a
table's captions into an embedding store, resumable; the store's rows are the table's.

A dataset can be split into `parts` contiguous row ranges (`part_rows`) that separate jobs embed
in parallel (N GPUs, N SLURM jobs), each opening only the .betons its rows are in;
`vlalign.store.embeddings.gather_embeddings` joins them into the store one pass would have written.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vlalign.devices import resolve_device
from vlalign.encoders import create_encoder, encoder_options
from vlalign.progress import Progress
from vlalign.schema import complete
from vlalign.store.beton import dataset_loader, read_texts
from vlalign.store.embeddings import EmbeddingWriter
from vlalign.store.tables import BetonRows, beton_rows, count_rows


def part_rows(count: int, part: int, parts: int) -> tuple[int, int]:
    """Rows [start, stop) of part `part` when `count` rows are split into `parts` near-equal ranges."""
    if parts < 1 or not 0 <= part < parts:
        raise ValueError(f"part {part} of {parts}: expected 0 <= part < parts")
    return count * part // parts, count * (part + 1) // parts


def _read_table(table_path, columns: list[str]) -> pd.DataFrame:
    table = pd.read_parquet(table_path, columns=["row", *columns]).sort_values("row")
    if not np.array_equal(table["row"].to_numpy(), np.arange(len(table))):
        raise ValueError(f"{table_path}: rows are not 0..{len(table) - 1}")
    return table.reset_index(drop=True)


def _load_encoder(encoder: dict, embed: dict | None, part: int):
    """The encoder of a config entry of `encoders` (with its `alias`, if given, for messages) on its device, its
    batch size, and the `embed` settings, both completed from the schema."""
    alias = encoder.get("alias")
    encoder = complete("encoders.*", {k: v for k, v in encoder.items() if k != "alias"}, what="encoder")
    embed = complete("embed", embed)
    model = create_encoder(encoder["spec"], device=resolve_device(embed["device"], part), alias=alias,
                           **encoder_options(encoder))  # fmt: skip
    return model, encoder["batch_size"], embed


def _open_writer(out_dir, encoder, source, table_path, count: int, part: int, parts: int, rows_per_part: int):
    start, stop = part_rows(count, part, parts)
    # The row range is part of the settings a resumed job must match: a changed split starts afresh.
    meta = {**encoder.describe(), "source": str(source), "table": str(table_path),
            "rows": [start, stop], "dataset_rows": count}  # fmt: skip
    writer = EmbeddingWriter(out_dir, encoder.dim, rows_per_part=rows_per_part, meta=meta, resume=True)
    return writer, start, stop


def _summary(writer: EmbeddingWriter, resumed_from: int, started: float, first_batch: tuple | None) -> dict:
    """Counts and rates; `first_batch` = (time it was written, rows) separates start-up (model load,
    loader compile) from the steady rate that scales to a large dataset."""
    finished = time.perf_counter()
    meta = writer.close()
    seconds = time.perf_counter() - started
    new_rows = meta["count"] - resumed_from
    summary = {
        "count": meta["count"],
        "dim": meta["dim"],
        "resumed_from": resumed_from,
        "seconds": round(seconds, 3),
        "items_per_s": round(new_rows / seconds, 2) if seconds > 0 else 0.0,
    }
    if first_batch is not None and new_rows > first_batch[1]:
        summary["startup_s"] = round(first_batch[0] - started, 3)
        summary["steady_items_per_s"] = round((new_rows - first_batch[1]) / (finished - first_batch[0]), 2)
    return summary


def embed_images(betons, table_path, encoder: dict, out_dir: str | os.PathLike, embed: dict | None = None,
                 part: int = 0, parts: int = 1, progress: bool = True, rows_per_part: int = 65536) -> dict:
    """Image features of the table's rows (all, or part `part` of `parts`) into an embedding store.

    `betons` is the .beton, or the list of .betons, holding the rows, where the table says (its `beton` and
    `beton_row`). `encoder` is a config entry of `encoders` ({"spec": ..., "batch_size": ..., ...}), `embed` the
    `embed` settings (loader workers, device); keys left out take the schema's defaults. Decoding, cropping and
    resizing run in ffcv's loader workers; normalisation, precision and memory layout are the encoder's,
    on the device. The summary's `betons` lists the files read.
    """
    started = time.perf_counter()
    betons = [Path(betons)] if isinstance(betons, (str, os.PathLike)) else [Path(b) for b in betons]
    encoder, batch_size, embed = _load_encoder(encoder, embed, part)
    source = str(betons[0]) if len(betons) == 1 else f"{len(betons)} .betons of {table_path}"
    writer, start, stop = _open_writer(out_dir, encoder, source, table_path, count_rows(table_path), part, parts,
                                       rows_per_part)  # fmt: skip
    done = writer.rows_done
    first_batch, runs = None, []
    if start + done < stop:
        runs, keys = beton_rows(table_path, start + done, stop)
        check_runs(runs, keys, betons, table_path)
        loader = dataset_loader(runs, encoder.image_size, batch_size, embed["num_workers"],
                                device=str(encoder.device), crop_ratio=encoder.crop_ratio)  # fmt: skip
        bar = Progress(f"embed {encoder.spec}", total=stop - start, unit="images", enabled=progress, initial=done)
        first_batch = _embed_batches(encoder, loader, keys, writer, start + done, bar)
        bar.close()
    return {**_summary(writer, done, started, first_batch), "betons": [str(run.path) for run in runs]}


def check_runs(runs: list[BetonRows], keys: np.ndarray, betons: list[Path], table_path) -> None:
    """Each file the table names is one of `betons`, and its first and last records hold the keys the table
    gives them: a table that does not describe these files fails here, not as mislabelled embeddings."""
    given = {beton.resolve() for beton in betons}
    offset = runs[0].start
    for run in runs:
        if run.path.resolve() not in given:
            raise ValueError(f"{table_path} names {run.path} for rows {run.start}..{run.stop - 1}, not one of "
                             f"the .betons given ({', '.join(map(str, betons[:3]))}, ...)")  # fmt: skip
        ends = [run.first, run.first + run.stop - run.start - 1]
        stored = [text["key"] for text in read_texts(run.path, ends)]
        expected = keys[[run.start - offset, run.stop - 1 - offset]].tolist()
        if stored != expected:
            raise ValueError(f"{run.path}: records {ends} hold keys {stored}, {table_path} says {expected}")


def _start_copy(features: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    """float16 features on their way to host memory; on CUDA the copy runs behind the next batch."""
    half = features.to(torch.float16)
    if half.device.type != "cuda":
        return half, None
    host = torch.empty(half.shape, dtype=half.dtype, pin_memory=True)
    host.copy_(half, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return host, event


def _embed_batches(encoder, loader, keys: np.ndarray, writer: EmbeddingWriter, first: int,
                   bar: Progress) -> tuple[float, int] | None:
    """Features of every batch into the writer (`keys` those of the rows from `first` on); returns (time, rows)
    when the first batch was encoded."""
    expected = first
    in_flight = []  # (host features, copy event, rows): written one batch late so the GPU never waits
    first_batch = None

    def write_oldest() -> None:
        host, event, rows = in_flight.pop(0)
        if event is not None:
            event.synchronize()
        writer.append(host.numpy(), keys[rows - first].tolist())
        bar.update(len(rows))

    for images, rows in loader:
        # The loader must hand rows back in order, or keys and features would drift apart.
        if not np.array_equal(rows, np.arange(expected, expected + len(rows))):
            raise ValueError(f"rows out of order at {expected} (got {rows[:4]}...)")
        expected += len(rows)
        in_flight.append((*_start_copy(encoder(images)), rows))
        first_batch = first_batch or (time.perf_counter(), len(rows))
        if len(in_flight) > 1:
            write_oldest()
    while in_flight:
        write_oldest()
    return first_batch


def _extra_captions(table_path, field: str) -> pd.DataFrame:
    """(key, caption) of the samples whose metadata holds a non-empty text under `field`, in row order."""
    table = _read_table(table_path, ["key", "meta_json"])
    texts = [json.loads(meta).get(field) for meta in table["meta_json"]]
    found = pd.DataFrame({"key": table["key"], "caption": texts})
    found = found[[isinstance(t, str) and t.strip() != "" for t in texts]]
    return found.reset_index(drop=True)


def embed_texts(table_path, encoder: dict, out_dir: str | os.PathLike, embed: dict | None = None,
                caption_field: str | None = None, part: int = 0, parts: int = 1, progress: bool = True,
                rows_per_part: int = 65536) -> dict:
    """Caption features of the table's rows (all, or part `part` of `parts`), keyed like the images;
    `encoder` and `embed` as for `embed_images`.

    `caption_field` embeds an extra caption set instead: the text each sample's metadata holds under
    that name (e.g. a URL list's `long_caption` column); samples without one are left out.
    """
    started = time.perf_counter()
    encoder, batch_size, _ = _load_encoder(encoder, embed, part)
    table = _read_table(table_path, ["key", "caption"]) if caption_field is None else _extra_captions(
        table_path, caption_field)
    source = table_path if caption_field is None else f"{table_path}#{caption_field}"
    writer, start, stop = _open_writer(out_dir, encoder, source, table_path, len(table), part, parts,
                                       rows_per_part)  # fmt: skip
    done = writer.rows_done
    bar = Progress(f"embed {encoder.spec}", total=stop - start, unit="texts", enabled=progress, initial=done)
    # Chunks of many batches: the encoder sorts by length within a chunk (bucketing), so padding stays
    # small; a chunk is also the unit a killed job loses at most.
    chunk = 16 * batch_size
    first_batch = None
    for begin in range(start + done, stop, chunk):
        texts = table.iloc[begin:min(begin + chunk, stop)]
        writer.append(encoder.encode(texts["caption"].tolist(), batch_size=batch_size), texts["key"].tolist())
        bar.update(len(texts))
        first_batch = first_batch or (time.perf_counter(), len(texts))
    bar.close()
    return _summary(writer, done, started, first_batch)
