"""Bytes on disk per stored item: a `.beton` record (measured by encoding a photograph as convert does) and an
embedding-store row (float16, exact)."""

from __future__ import annotations

import cv2
import numpy as np
from matplotlib import cbook
from PIL import Image

from vlalign.plan.assumptions import Assumptions
from vlalign.store.beton import square_on_white
from vlalign.store.embeddings import DTYPE


def beton_bytes_per_image(convert: dict, assumptions: Assumptions) -> float:
    """One image as `vlalign convert` stores it: padded square, at most `max_resolution`, JPEG at `jpeg_quality`
    (or raw pixels); the JPEG size is that of a real photograph so stored (one photo, not an average)."""
    photo_name = assumptions.value("convert.photo")
    with Image.open(cbook.get_sample_data(photo_name)) as photo:
        square = square_on_white(photo.convert("RGB"), convert["max_resolution"])
    if convert["write_mode"] == "raw":
        return float(square.width * square.height * 3)
    quality = [cv2.IMWRITE_JPEG_QUALITY, convert["jpeg_quality"]]
    _, encoded = cv2.imencode(".jpg", np.asarray(square)[:, :, ::-1], quality)  # BGR, as ffcv's writer encodes
    assumptions.note("convert.bytes_per_image", f"{len(encoded):,}", f"{photo_name} stored at "
                     f"{square.width} px, JPEG quality {convert['jpeg_quality']}")  # fmt: skip
    return float(len(encoded))


def store_bytes(rows: float, dim: int) -> float:
    """An embedding store's parts: rows × dim float16 values (the key index beside them is not counted)."""
    return rows * dim * np.dtype(DTYPE).itemsize
