"""FFCV `.beton` of the images (square, padded on white) plus a parquet table of everything else.

The .beton holds `image`, `row` and `text` (JSON: key and caption); row r of the table (key,
caption, source, category, the sample's full json; see `vlalign.store.tables`) describes the record
stored with row r. Several .betons (the pool's partitions) are read as one dataset by `dataset_loader`.

ffcv's DatasetWriter waits forever on a worker that raised, so images are decoded once up
front: undecodable ones are skipped and reported, and only the good ones reach ffcv.
"""

from __future__ import annotations

import json
import multiprocessing
import tempfile
from collections import deque
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from vlalign.data.images import decode_errors, decode_rgb
from vlalign.data.shards import Sample, iter_samples, shard_paths
from vlalign.io import atomic_path, remove_leftovers
from vlalign.parallel import batched, process_map
from vlalign.schema import complete
from vlalign.store.tables import BetonRows, write_table

WHITE = (255, 255, 255)


def square_on_white(image: Image.Image, max_resolution: int) -> Image.Image:
    """Shrink so the longer side is at most max_resolution, then pad to a centred square on white,
    so that a later center crop keeps the whole picture."""
    scale = max_resolution / max(image.size)
    if scale < 1:
        size = tuple(max(1, round(side * scale)) for side in image.size)
        image = image.resize(size, Image.Resampling.LANCZOS)
    side = max(image.size)
    canvas = Image.new("RGB", (side, side), WHITE)
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


class _SpilledImages:
    """ffcv's indexable dataset over image bytes spilled to one file (offsets kept in memory)."""

    def __init__(self, spill: Path, offsets: np.ndarray, texts: list[dict], max_resolution: int, failures):
        self.spill = spill
        self.offsets = offsets
        self.texts = texts
        self.max_resolution = max_resolution
        self.failures = failures

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: int):
        try:
            with open(self.spill, "rb") as f:
                f.seek(self.offsets[row])
                data = f.read(self.offsets[row + 1] - self.offsets[row])
            image = square_on_white(decode_rgb(data), self.max_resolution)
        except Exception:
            # Already decoded once, so this is an I/O fault; raising here would hang ffcv, so
            # count it and let write_beton fail after the writer returns.
            with self.failures.get_lock():
                self.failures.value += 1
            image = Image.new("RGB", (1, 1), WHITE)
        return np.asarray(image), row, self.texts[row]


def _page_size(max_resolution: int) -> int:
    # A page must hold the largest encoded image; a JPEG stays below twice the raw pixels.
    from ffcv.writer import MIN_PAGE_SIZE

    needed = max(MIN_PAGE_SIZE, 2 * 3 * max_resolution**2)
    return 1 << (needed - 1).bit_length()


def write_beton(shard_folders: list[Path], beton_path: Path, table_path: Path, allow_empty: bool = False,
                **convert) -> dict:
    """Write the decodable images of the shards to `beton_path` and their table to `table_path`.

    `convert` are the keys of the config's `convert` (max_resolution, write_mode "jpg" (compact) or "raw"
    (lossless pixels, larger), jpeg_quality, num_workers), the others taking the schema's defaults.
    Returns {"written": n, "skipped": [{"key", "reason"}]}. Both outputs appear only on success.
    No decodable image is an error unless `allow_empty` (a download partition whose rows all failed): then the
    table has no row and the .beton is an empty file, since ffcv cannot write a .beton of no samples; no
    table row names it, so no reader opens it.
    """
    from ffcv.fields import IntField, JSONField, RGBImageField
    from ffcv.writer import DatasetWriter

    convert = complete("convert", convert)
    max_resolution, num_workers = convert["max_resolution"], convert["num_workers"]

    beton_path, table_path = Path(beton_path), Path(table_path)
    beton_path.parent.mkdir(parents=True, exist_ok=True)
    rows, skipped, seen = [], [], {}
    remove_leftovers(beton_path, "spill")  # a killed writer's copy of every image
    spill_at = {"prefix": f".{beton_path.name}.", "suffix": ".spill", "dir": beton_path.parent}
    with tempfile.TemporaryDirectory(**spill_at) as spill_dir:
        spill = Path(spill_dir) / "images.bin"
        offsets = [0]
        samples = (
            (sample, Path(folder).name)
            for folder in shard_folders for sample in iter_samples(shard_paths(folder, allow_empty=True))
        )
        pending: deque = deque()  # the batches in the workers, in order: their results come back in that order

        def image_batches():
            for batch in batched(samples, 64):
                pending.append(batch)
                yield [sample.image for sample, _ in batch]

        checked = ((*item, reason) for errors in process_map(decode_errors, image_batches(), num_workers)
                   for item, reason in zip(pending.popleft(), errors))  # fmt: skip
        with open(spill, "wb") as out:
            for sample, source, reason in tqdm(checked, desc="decode", unit="img"):
                if sample.key in seen:
                    raise ValueError(f"duplicate key {sample.key!r} in {seen[sample.key]} and {source}")
                seen[sample.key] = source
                if reason is not None:
                    skipped.append({"key": sample.key, "reason": reason})
                    continue
                out.write(sample.image)
                offsets.append(offsets[-1] + len(sample.image))
                rows.append(_table_row(len(rows), sample, source))
        if not rows and not allow_empty:
            raise ValueError(f"no decodable images in {[str(f) for f in shard_folders]}")

        failures = multiprocessing.Value("i", 0)
        texts = [{"key": r["key"], "caption": r["caption"]} for r in rows]
        dataset = _SpilledImages(spill, np.array(offsets, dtype=np.int64), texts, max_resolution, failures)
        fields = {
            "image": RGBImageField(write_mode=convert["write_mode"], max_resolution=max_resolution,
                                   jpeg_quality=convert["jpeg_quality"]),
            "row": IntField(),
            "text": JSONField(),
        }
        # Both land together: the table is renamed right after the .beton, never before it.
        with atomic_path(table_path) as table_tmp, atomic_path(beton_path) as beton_tmp:
            write_table(rows, table_tmp, beton_path)
            if rows:  # else the temporary file stays empty
                writer = DatasetWriter(str(beton_tmp), fields, page_size=_page_size(max_resolution),
                                       num_workers=num_workers)
                writer.from_indexed_dataset(dataset)
            if failures.value:
                raise OSError(f"{beton_path}: {failures.value} images failed when re-read from {spill}")
    return {"written": len(rows), "skipped": skipped}


def _table_row(row: int, sample: Sample, folder: str) -> dict:
    return {
        "row": row,
        "key": sample.key,
        "caption": sample.caption,
        # The sample's own source name when the downloader recorded one, else its shard folder.
        "source": str(sample.meta.get("source") or folder),
        "category": None if sample.meta.get("category") is None else str(sample.meta["category"]),
        "meta_json": json.dumps(sample.meta, sort_keys=True),
    }


def _field_metadata(reader, name: str) -> np.ndarray:
    """Per-sample metadata of one field (ffcv names the record's columns f0, f1, ... by position)."""
    return reader.metadata[f"f{reader.field_names.index(name)}"]


FIELDS = ("image", "row", "text")


def _check_beton(path: Path):
    """Structural check, so a truncated or foreign file fails here naming it, not deep in ffcv; returns its
    ffcv Reader."""
    from ffcv.reader import Reader

    try:
        reader = Reader(str(path))
    except Exception as exc:
        raise ValueError(f"{path}: not a readable .beton ({type(exc).__name__}: {exc})") from exc
    problems = []
    if len(reader.metadata) != reader.num_samples:
        problems.append(f"{len(reader.metadata)} of {reader.num_samples} sample records")
    if set(reader.field_names) != set(FIELDS):
        problems.append(f"fields {reader.field_names}, expected {', '.join(FIELDS)}")
    elif not np.isin(_field_metadata(reader, "image")["data_ptr"], reader.alloc_table["ptr"]).all():
        problems.append("image data missing from the allocation table (truncated?)")
    end = reader.alloc_table["ptr"] + reader.alloc_table["size"]
    if len(end) and end.max() > reader.header["alloc_table_ptr"]:
        problems.append("image data runs past the data region")
    if problems:
        raise ValueError(f"{path}: damaged .beton: {'; '.join(problems)}")
    return reader


def image_loader(beton_path: Path, image_size: int, batch_size: int, num_workers: int,
                 device: str = "cpu", indices=None, crop_ratio: float = 1.0):
    """ffcv Loader yielding (uint8 NCHW image_size² images, int rows) in row order, last batch kept.

    Each image is a centre crop of `crop_ratio` of its shorter side, resized to image_size (a
    model's resize-then-crop evaluation transform). `indices` restricts to those rows (still in
    order), e.g. to resume after the rows done or to embed one part of a scattered dataset.
    Batches are views into buffers ffcv reuses: consume or copy each before the next.
    """
    import torch
    from ffcv.fields.decoders import CenterCropRGBImageDecoder, IntDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import ToDevice, ToTensor, ToTorchImage

    beton_path = Path(beton_path)
    if not beton_path.exists():
        raise FileNotFoundError(f"{beton_path}: no such .beton")
    _check_beton(beton_path)
    image_pipeline = [CenterCropRGBImageDecoder((image_size, image_size), ratio=crop_ratio), ToTensor()]
    row_pipeline = [IntDecoder(), ToTensor()]
    if torch.device(device).type == "cuda":
        image_pipeline.append(ToDevice(torch.device(device), non_blocking=True))
    image_pipeline.append(ToTorchImage())
    return Loader(
        str(beton_path),
        batch_size=batch_size,
        num_workers=num_workers,
        order=OrderOption.SEQUENTIAL,
        drop_last=False,  # ffcv's default drops the last partial batch
        indices=None if indices is None else np.asarray(indices),
        pipelines={"image": image_pipeline, "row": row_pipeline, "text": None},
    )


def dataset_loader(runs: list[BetonRows], image_size: int, batch_size: int, num_workers: int, device: str = "cpu",
                   crop_ratio: float = 1.0):
    """Batches (uint8 NCHW images, int64 numpy dataset rows) of the rows in `runs`, their .betons read one after
    another as one dataset, each opened only when reached (`image_loader` over each, so the same images).

    Every batch is full but the last: a file's short last batch is completed from the next file, so an encoder
    compiled for one batch shape meets no other. Consume each batch before asking for the next.
    """
    batches = (
        (images, rows.view(-1).numpy() - run.first + run.start)
        for run in runs
        for images, rows in image_loader(run.path, image_size, batch_size, num_workers, device=device,
                                         indices=run.indices(), crop_ratio=crop_ratio)
    )  # fmt: skip
    return _full_batches(batches, batch_size)


def _full_batches(batches, batch_size: int):
    """`batches` re-cut to `batch_size` rows; a full batch with nothing held back passes through uncopied."""
    import torch

    held = None  # rows short of a batch, copied: ffcv reuses the buffers they came in
    for images, rows in batches:
        if held is not None:
            images, rows = torch.cat([held[0], images]), np.concatenate([held[1], rows])
            held = None
        elif len(rows) < batch_size:
            held = (images.clone(), rows.copy())
            continue
        while len(rows) >= batch_size:
            yield images[:batch_size], rows[:batch_size]
            images, rows = images[batch_size:], rows[batch_size:]
        if len(rows):
            held = (images, rows)  # the rest of a concatenation: memory of our own
    if held is not None:
        yield held


def read_texts(beton_path: Path, records=slice(None)) -> list[dict]:
    """The `text` records (key, caption) of every record, or of `records`, read back from the file itself."""
    reader = _check_beton(beton_path)
    pointers = _field_metadata(reader, "text")
    try:
        pointers = pointers[records]
    except IndexError:
        raise ValueError(f"{beton_path}: holds {reader.num_samples} records, asked for {records}") from None
    data = np.memmap(beton_path, dtype=np.uint8, mode="r")
    return [json.loads(bytes(data[p : p + n]).split(b"\0", 1)[0]) for p, n in zip(pointers["ptr"], pointers["size"])]


def verify_beton(beton_path: Path, table_path: Path, num_workers: int, image_size: int = 32) -> dict:
    """Read every record back (images decoded through ffcv's Loader, texts from the file) and check
    them against the table: same count, rows in order, same keys and captions."""
    beton_path = Path(beton_path)
    table = pd.read_parquet(table_path, columns=["row", "key", "caption"])
    if table.empty and beton_path.stat().st_size == 0:  # a partition without images (see write_beton)
        return {"verified": 0}
    decoded = 0
    expected_row = 0
    for images, rows in image_loader(beton_path, image_size, 256, num_workers):
        rows = rows.reshape(-1).numpy()
        if not np.array_equal(rows, np.arange(expected_row, expected_row + len(rows))):
            raise ValueError(f"{beton_path}: rows out of order near row {expected_row}")
        expected_row += len(rows)
        decoded += len(images)
    texts = read_texts(beton_path)
    problems = []
    if decoded != len(table) or len(texts) != len(table):
        problems.append(f"{decoded} images and {len(texts)} texts read back, table {table_path} has {len(table)} rows")
    else:
        for (key, caption), text in zip(table[["key", "caption"]].itertuples(index=False), texts):
            if text != {"key": key, "caption": caption}:
                problems.append(f"row of {key!r} holds {text}")
                break
    if problems:
        raise ValueError(f"{beton_path}: verification failed: {'; '.join(problems)}")
    return {"verified": decoded}
