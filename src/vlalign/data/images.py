"""Checking untrusted image bytes, and the one conversion of any image to the RGB the workflow sees.

`inspect_image`: size limits from the header first, then a full decode. Every image that reaches
a shard has been decoded once here, so later stages never meet a file they cannot read; a
decompression bomb is refused from its header, before any pixel memory is allocated. It never
raises: whatever goes wrong becomes an ImageCheck error.

`to_rgb` (and `decode_rgb` = open + `to_rgb`) is the single way measure, convert, figures and the
model turn an image into 8-bit RGB, so they all see the same pixels. Its rules:

- EXIF orientation is applied (phones store photos sideways plus a tag saying so).
- Multi-frame files (GIF, APNG, TIFF pages): the first frame, where Image.open leaves them.
- 16-bit grey (I;16, I;16L, I;16B, I;16N) is scaled, round(v / 257): PIL's own convert clips
  at 255, which turns almost every 16-bit picture white.
- 32-bit integer (I): when every value lies in 0..65535 it is 16-bit data (how some PIL versions
  open 16-bit PNG/TIFF), scaled as above; otherwise there is no agreed white point, so
  min..max is stretched to 0..255 (a constant image gives 0).
- Float (F): values within [0, 1] are the usual normalised convention, scaled by 255; otherwise
  min..max of the finite values is stretched. NaN gives 0, +-inf clip to 255 / 0.
- 16-bit RGB, RGBA and grey+alpha PNGs PIL itself reads as 8-bit RGB/RGBA (each sample's high byte).
- Transparency of any kind (alpha channel, premultiplied alpha, a palette with alpha, a
  `transparency` key for P/1/L/RGB/I;16) is composited over `background` (white): models
  and people both see transparent areas as the page they sit on, never as hidden colour. A PNG
  key PIL leaves in other units than its pixels (16-bit RGB, 2/4-bit grey) is converted first.
- LAB (CIE L*a*b* D50, as TIFF stores it) goes to sRGB through LittleCMS without its lookup-table
  optimisation, which PIL's convert uses and which is off by up to ~30 levels in dark colours.
- Every other mode (1, L, P, RGB, CMYK, YCbCr, HSV...) goes through PIL's convert, which is
  exact for them (CMYK naively, R = 255 (1 - C/255)(1 - K/255), ignoring any ICC profile).
"""

from __future__ import annotations

import functools
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

# File and shard-member extensions read as images.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
# Formats the shards store as they came; others are re-encoded to PNG.
KEPT_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
# Modes Pillow's PNG writer stores without loss; other modes are stored as to_rgb gives them.
PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I;16B"}
# Leading bytes of formats PIL can read: such a file that PIL cannot open is broken, not foreign.
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"\x00\x00\x01\x00")
WHITE = (255, 255, 255)


@dataclass
class ImageCheck:
    width: int | None = None
    height: int | None = None
    data: bytes | None = None  # the bytes to store (re-encoded for formats not in KEPT_FORMATS)
    ext: str | None = None
    error: str | None = None  # class: not_an_image, decode_error, encode_error, too_many_pixels, too_small
    detail: str | None = None


def _looks_like_image(data: bytes) -> bool:
    return data.startswith(IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _failure(error: str, exc: Exception, size=(None, None)) -> ImageCheck:
    return ImageCheck(*size, error=error, detail=f"{type(exc).__name__}: {exc}")


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
        return _failure("decode_error", exc)
    with img:
        size = img.size
        if img.width * img.height > max_pixels:
            return ImageCheck(*size, error="too_many_pixels", detail=f"{img.width}x{img.height}")
        if min(size) < min_side:
            return ImageCheck(*size, error="too_small", detail=f"{img.width}x{img.height}")
        check = ImageCheck(*size, data=data, ext=KEPT_FORMATS.get(img.format))
        try:
            if decode or check.ext is None:  # re-encoding needs the pixels
                img.load()
            else:
                img.verify()
        except Exception as exc:  # truncated or corrupt data, of any format
            return _failure("decode_error", exc, size)
        if check.ext is None:
            # GIF, BMP, TIFF...: later stages read only KEPT_FORMATS. PNG keeps the pixels where
            # it can hold the mode, else stores what decode_rgb makes of them; the orientation is
            # applied first because the PNG carries no EXIF.
            try:
                pixels = _upright(img)
                if pixels.mode not in PNG_MODES:
                    pixels = to_rgb(pixels)
                buffer = io.BytesIO()
                pixels.save(buffer, format="PNG")
            except Exception as exc:  # e.g. a transparency key PNG cannot write for the mode
                return _failure("encode_error", exc, size)
            check.data, check.ext = buffer.getvalue(), "png"
    return check


def _upright(img: Image.Image) -> Image.Image:
    """`img` turned as its EXIF orientation says (itself when it has none, sparing a copy)."""
    if img.getexif().get(ExifTags.Base.Orientation, 1) == 1:
        return img
    return ImageOps.exif_transpose(img)


def _high_bit_to_8bit(img: Image.Image) -> Image.Image:
    """L (LA with a transparency key) from an I;16*, I or F image, by the rules in the module docstring."""
    values = np.asarray(img)
    if img.mode.startswith("I;16"):
        lo, hi = 0.0, 65535.0
    else:
        finite = values[np.isfinite(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        if img.mode == "I" and 0 <= lo and hi <= 65535:  # 16-bit data
            lo, hi = 0.0, 65535.0
        elif img.mode == "F" and 0 <= lo and hi <= 1:
            lo, hi = 0.0, 1.0
    # Clipping first sends +-inf to the ends; float32 keeps the memory of a big image down.
    scaled = (np.clip(values.astype(np.float32), lo, hi) - lo) * np.float32(255 / (hi - lo) if hi > lo else 0)
    grey = Image.fromarray(np.rint(np.nan_to_num(scaled, nan=0)).astype(np.uint8))
    key = img.info.get("transparency")
    if isinstance(key, int):  # a tRNS grey value, in the file's own 16-bit units
        grey.putalpha(Image.fromarray(np.where(values == key, 0, 255).astype(np.uint8)))
    return grey


@functools.cache
def _lab_to_srgb():
    """LittleCMS's LAB -> sRGB without the precomputed table that PIL's convert("RGB") uses, which
    is off by up to ~30 levels in dark colours."""
    from PIL import ImageCms

    lab, srgb = ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB")
    return ImageCms.buildTransform(lab, srgb, "LAB", "RGB", flags=ImageCms.Flags.NOOPTIMIZE)


def to_rgb(img: Image.Image, background=WHITE) -> Image.Image:
    """`img` as 8-bit RGB by the rules in the module docstring; `img` itself is left unchanged."""
    img = _upright(img)
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _high_bit_to_8bit(img)
    if img.mode == "LAB":
        return _lab_to_srgb().apply(img)
    if img.has_transparency_data:
        if img.mode == "La":  # PIL converts premultiplied grey only to LA
            img = img.convert("LA")
        canvas = Image.new("RGBA", img.size, (*background, 255))
        canvas.alpha_composite(img.convert("RGBA"))
        img = canvas
    return img.convert("RGB")


def _png_key_to_pixels(img: Image.Image, data: bytes) -> None:
    """PIL reads 16-bit RGB and 2/4-bit grey PNGs as 8-bit pixels but leaves their tRNS key in
    the file's units; bring the key to the pixels' (for 16-bit RGB: the high byte PIL keeps, so
    colours within 1/256 of the key turn transparent with it)."""
    depth = data[24] if data.startswith(b"\x89PNG") and len(data) > 24 else 8
    key = img.info.get("transparency")
    if img.mode == "RGB" and depth == 16 and isinstance(key, tuple):
        img.info["transparency"] = tuple(v >> 8 for v in key)
    elif img.mode == "L" and depth < 8 and isinstance(key, int):
        img.info["transparency"] = key * 255 // (2**depth - 1)


def decode_rgb(image: bytes, background=WHITE) -> Image.Image:
    """Decode image bytes to an RGB PIL image (see to_rgb)."""
    img = Image.open(io.BytesIO(image))
    img.load()
    _png_key_to_pixels(img, image)
    return to_rgb(img, background)


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
