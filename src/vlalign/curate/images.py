"""Per-image measurements, run in worker processes: size, full decode, content hash, pHash, OCR.

A broken image never raises here: it gets `decode_ok` False and the reason in
`decode_error`, and the measurements that need pixels stay empty.
"""

from __future__ import annotations

import hashlib
import io
import time
import warnings

import numpy as np

from vlalign.data.images import decode_rgb
from vlalign.schema import default

# Refuse to decode larger images (decompression bombs): the download stage's default limit, checked
# again because pool shards may come from elsewhere.
MAX_PIXELS = default("sources.*.max_pixels")
# Below this grey-level standard deviation (at the 32x32 size pHash works on) an image is
# blank: white-on-transparent art composited on white, empty placeholders. Its pHash would
# be rounding noise that matches every other blank image, so it gets none.
BLANK_STD = 1.0


def _header_size(image: bytes) -> tuple[int | None, int | None]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(image)) as img:
            return img.size
    except Exception:  # the header itself is unreadable; PIL raises many types
        return None, None


def _decode(image: bytes):
    """(RGB image, None) or (None, reason)."""
    from PIL import Image

    width, height = _header_size(image)
    if width is None:
        return None, "unreadable header"
    if width * height > MAX_PIXELS:
        return None, f"too many pixels ({width}x{height})"
    try:
        with warnings.catch_warnings():
            # Our pixel limit is checked above; PIL's own warning would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return decode_rgb(image), None
    except Exception as exc:  # truncated data, bad chunks, unsupported modes: PIL raises many types
        return None, f"{type(exc).__name__}: {exc}"[:200]


def measure_image(image: bytes, ocr_max_side: int | None = None) -> dict:
    """Measured columns of one image; OCR runs only when `ocr_max_side` is given."""
    import imagehash

    width, height = _header_size(image)
    row = {
        "image_sha256": hashlib.sha256(image).hexdigest(),
        "width": width,
        "height": height,
        "decode_ok": False,
        "decode_error": None,
        "pixel_std": None,
        "phash": None,
    }
    rgb, error = _decode(image)
    if rgb is None:
        row["decode_error"] = error
        return row
    from PIL import Image

    grey = np.asarray(rgb.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float32)
    pixel_std = float(grey.std())
    row.update(width=rgb.width, height=rgb.height, decode_ok=True, pixel_std=pixel_std,
               phash=str(imagehash.phash(rgb)) if pixel_std >= BLANK_STD else None)  # fmt: skip
    if ocr_max_side is not None:
        row.update(read_text_timed(rgb, ocr_max_side))
    return row


def read_text_timed(rgb, max_side: int) -> dict:
    """`ocr_text`, `ocr_error` and `ocr_seconds`; a failure is recorded, never raised.

    The bundled models are checked once before any worker starts, so what fails here is
    this image (or the whole engine, which then shows as the same error on every row).
    """
    from vlalign.curate.ocr import engine, read_text

    engine(max_side)  # loading the models (once per process) is not this image's cost
    started = time.perf_counter()
    try:
        text, error = read_text(rgb, max_side), None
    except Exception as exc:  # onnxruntime and OpenCV raise many types on odd inputs
        text, error = None, f"{type(exc).__name__}: {exc}"[:200]
    return {"ocr_text": text, "ocr_error": error, "ocr_seconds": time.perf_counter() - started}


def measure_batch(batch: list[tuple[str, bytes, int | None]]) -> list[dict]:
    """Worker entry: [(key, image bytes, OCR max side or None)] -> rows with `key`."""
    return [{"key": key, **measure_image(image, ocr_max_side)} for key, image, ocr_max_side in batch]


def ocr_batch(batch: list[tuple[str, bytes, int]]) -> list[dict]:
    """Worker entry for OCR on images measured before: [(key, image bytes, max side)] -> rows."""
    rows = []
    for key, image, max_side in batch:
        rgb, _ = _decode(image)
        rows.append({"key": key, **(read_text_timed(rgb, max_side) if rgb is not None else {})})
    return rows
