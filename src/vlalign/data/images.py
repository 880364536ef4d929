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

# File and shard-member extensions read as images.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
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


def decode_rgb(image: bytes, background=(255, 255, 255)):
    """Decode image bytes to an RGB PIL image; transparency is composited on `background`."""
    img = Image.open(io.BytesIO(image))
    img.load()
    if img.mode in ("RGBA", "LA", "P", "PA") or "transparency" in img.info:
        img = img.convert("RGBA")
        canvas = Image.new("RGBA", img.size, background + (255,))
        canvas.alpha_composite(img)
        return canvas.convert("RGB")
    return img.convert("RGB")


def decode_errors(batch: list[bytes]) -> list[str | None]:
    """Why each image does not decode (None where it does); a worker-process entry."""
    errors = []
    for image in batch:
        try:
            decode_rgb(image)
            errors.append(None)
        except Exception as exc:  # any decoder failure means "skip and report", never a crash
            errors.append(f"{type(exc).__name__}: {exc}")
    return errors
