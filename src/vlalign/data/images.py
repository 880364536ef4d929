"""Checking untrusted image bytes: size limits from the header first, then a full decode.

Every image that reaches a shard has been decoded once here, so later stages never meet
a file they cannot read; a decompression bomb is refused from its header, before any
pixel memory is allocated.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

# Formats the shards store as they came; others are re-encoded losslessly to PNG.
KEPT_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
PNG_MODES = {"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"}
# Leading bytes of formats PIL can read: such a file that PIL cannot open is broken, not foreign.
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"\x00\x00\x01\x00")


@dataclass
class ImageCheck:
    width: int | None = None
    height: int | None = None
    data: bytes | None = None  # the bytes to store (re-encoded for formats not in KEPT_FORMATS)
    ext: str | None = None
    error: str | None = None  # class: not_an_image, decode_error, too_many_pixels, too_small
    detail: str | None = None


def _looks_like_image(data: bytes) -> bool:
    return data.startswith(IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def inspect_image(data: bytes, max_pixels: int, min_side: int = 0, decode: bool = True) -> ImageCheck:
    """Dimensions, limits and decodability of `data`; `decode=False` only verifies the file structure."""
    try:
        with warnings.catch_warnings():
            # PIL only warns between its own limit and twice it; ours is checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        return ImageCheck(error="too_many_pixels", detail=str(exc))
    except UnidentifiedImageError:
        error = "decode_error" if _looks_like_image(data) else "not_an_image"
        return ImageCheck(error=error, detail=f"unidentified image, starts {data[:16]!r}")
    except Exception as exc:  # PIL raises many types for broken headers
        return ImageCheck(error="decode_error", detail=f"{type(exc).__name__}: {exc}")
    with img:
        check = ImageCheck(width=img.width, height=img.height, data=data, ext=KEPT_FORMATS.get(img.format))
        if img.width * img.height > max_pixels:
            return ImageCheck(img.width, img.height, error="too_many_pixels", detail=f"{img.width}x{img.height}")
        if min(img.width, img.height) < min_side:
            return ImageCheck(img.width, img.height, error="too_small", detail=f"{img.width}x{img.height}")
        try:
            if decode or check.ext is None:  # re-encoding needs the pixels
                img.load()
            else:
                img.verify()
        except Exception as exc:  # truncated or corrupt data, of any format
            return ImageCheck(img.width, img.height, error="decode_error", detail=f"{type(exc).__name__}: {exc}")
        if check.ext is None:
            # GIF, BMP, TIFF...: later stages read only KEPT_FORMATS; PNG keeps every pixel.
            buffer = io.BytesIO()
            pixels = img if img.mode in PNG_MODES else img.convert("RGBA" if "A" in img.mode else "RGB")
            pixels.save(buffer, format="PNG")
            check.data, check.ext = buffer.getvalue(), "png"
    return check
