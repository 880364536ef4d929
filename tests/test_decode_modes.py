"""Every image mode PIL opens decodes to correct 8-bit RGB on white (data.images.to_rgb).

Each case writes a real file in one mode with random pixels and compares decode_rgb with an
independent numpy conversion of the file's raw channels (as PIL reads them, before any
conversion), so that lossy formats are judged on what their decoder gave.
"""

from __future__ import annotations

import colorsys
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vlalign.data.images import decode_rgb, inspect_image, to_rgb

H, W = 9, 12  # not square, so a transposed result cannot pass


def _bytes(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _raw(data: bytes, mode: str) -> np.ndarray:
    """The file's pixels as PIL opens them, checked to be in `mode`."""
    img = Image.open(io.BytesIO(data))
    assert img.mode == mode
    return np.asarray(img).astype(np.float64)


def _png(values: np.ndarray, depth: int, colour_type: int, chunks: dict[bytes, bytes] | None = None) -> bytes:
    """A PNG written from scratch, for the bit depths and chunks Pillow's writer does not make."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    if depth < 8:  # pack the samples of each row into bytes, most significant bits first
        rows = [np.packbits(np.unpackbits(row.astype(np.uint8)[:, None], axis=1)[:, -depth:]) for row in values]
    else:
        rows = list(values.reshape(values.shape[0], -1).astype(">u2" if depth == 16 else np.uint8))
    scanlines = b"".join(b"\x00" + row.tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", values.shape[1], values.shape[0], depth, colour_type, 0, 0, 0)
    extra = b"".join(chunk(kind, body) for kind, body in (chunks or {}).items())
    body = chunk(b"IHDR", header) + extra + chunk(b"IDAT", zlib.compress(scanlines)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def _associated_alpha(data: bytes) -> bytes:
    """Pillow's TIFF with its alpha marked premultiplied (ExtraSamples 2 -> 1), which Pillow cannot write."""
    entry = struct.pack("<HHIHH", 338, 3, 1, 2, 0)
    assert data.count(entry) == 1
    return data.replace(entry, struct.pack("<HHIHH", 338, 3, 1, 1, 0))


def _grey(values) -> np.ndarray:
    return np.repeat(np.asarray(values, dtype=np.float64)[..., None], 3, axis=2)


def _over(colour, alpha) -> np.ndarray:
    """`colour` (0..255) with `alpha` (0..255) over white."""
    a = np.asarray(alpha, dtype=np.float64)[..., None] / 255
    return a * colour + (1 - a) * 255


def _lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """PIL's LAB bytes (L 0..255 for 0..100; a and b signed, as TIFF stores them), D50, to sRGB
    (the ICC profile's D50-adapted matrix)."""
    lightness = lab[..., 0] / 255 * 100
    a, b = (lab[..., 1:].astype(np.uint8).view(np.int8).astype(np.float64)).transpose(2, 0, 1)
    fy = (lightness + 16) / 116
    f = np.stack([fy + a / 500, fy, fy - b / 200], axis=-1)
    xyz = np.where(f**3 > 216 / 24389, f**3, (116 * f - 16) / (24389 / 27)) * [0.9642, 1.0, 0.8249]
    to_xyz = np.array([[0.4360, 0.3851, 0.1431], [0.2225, 0.7169, 0.0606], [0.0139, 0.0971, 0.7141]])
    linear = np.clip(xyz @ np.linalg.inv(to_xyz).T, 0, 1)
    return 255 * np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


def _ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """JFIF's full-range YCbCr to RGB."""
    y, cb, cr = ycc[..., 0], ycc[..., 1] - 128, ycc[..., 2] - 128
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1)
    return np.clip(rgb, 0, 255)


def _palette_image(rng, mode: str = "P", colours: int = 16) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    palette = rng.integers(0, 256, (colours, 3), dtype=np.uint8)
    index = rng.integers(0, colours, (H, W), dtype=np.uint8)
    if mode == "PA":
        alpha = rng.integers(0, 256, (H, W), dtype=np.uint8)
        img = Image.frombytes("PA", (W, H), np.dstack([index, alpha]).tobytes())
    else:
        img = Image.frombytes("P", (W, H), index.tobytes())
    img.putpalette(palette.tobytes())
    return img, palette.astype(np.float64), index


# Each case: rng -> (file bytes, expected RGB as float, tolerance).


def case_1(rng):
    data = _bytes(Image.fromarray(rng.random((H, W)) < 0.5), "PNG")
    return data, _grey(_raw(data, "1") * 255), 0


def case_L(rng):
    data = _bytes(Image.fromarray(rng.integers(0, 256, (H, W), dtype=np.uint8)), "PNG")
    return data, _grey(_raw(data, "L")), 0


def case_L_2bit_transparency(rng):
    # PIL scales 2-bit grey to 0, 85, 170, 255 but keeps the tRNS key as the 2-bit value.
    values = rng.integers(0, 4, (H, W))
    data = _png(values, 2, 0, {b"tRNS": struct.pack(">H", 1)})
    return data, np.where((values == 1)[..., None], 255, _grey(values * 85)), 0


def case_LA(rng):
    data = _bytes(Image.fromarray(rng.integers(0, 256, (H, W, 2), dtype=np.uint8), "LA"), "PNG")
    raw = _raw(data, "LA")
    return data, _over(_grey(raw[..., 0]), raw[..., 1]), 1


def case_La(rng):
    alpha = rng.integers(0, 256, (H, W))
    premultiplied = (rng.random((H, W)) * (alpha + 1)).astype(np.uint8)  # never above alpha
    la = Image.fromarray(np.dstack([premultiplied, alpha.astype(np.uint8)]), "LA")
    data = _associated_alpha(_bytes(la, "TIFF"))
    raw = _raw(data, "La")
    return data, _grey(raw[..., 0] + 255 - raw[..., 1]), 1  # premultiplied c over white: c + (1 - a) 255


def case_P(rng):
    img, palette, index = _palette_image(rng)
    data = _bytes(img, "PNG")
    assert "transparency" not in Image.open(io.BytesIO(data)).info
    return data, palette[index], 0


def case_P_alpha_per_entry(rng):
    img, palette, index = _palette_image(rng)
    alpha = rng.integers(0, 256, len(palette), dtype=np.uint8)
    data = _bytes(img, "PNG", transparency=alpha.tobytes())
    return data, _over(palette[index], alpha[index]), 1


def case_P_gif_transparent_index(rng):
    img, _, _ = _palette_image(rng)
    data = _bytes(img, "GIF", transparency=3)
    opened = Image.open(io.BytesIO(data))
    palette = np.array(opened.getpalette(), dtype=np.float64).reshape(-1, 3)
    index = np.asarray(opened)
    key = opened.info["transparency"]
    assert opened.mode == "P" and (index == key).any()
    return data, np.where((index == key)[..., None], 255, palette[index]), 0


def case_PA(rng):
    img, palette, _ = _palette_image(rng, "PA")
    data = _bytes(img, "TIFF")
    raw = _raw(data, "PA")
    return data, _over(palette[raw[..., 0].astype(int)], raw[..., 1]), 1


def case_RGB(rng):
    data = _bytes(Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)), "PNG")
    return data, _raw(data, "RGB"), 0


def case_RGB_transparency_key(rng):
    pixels = rng.integers(0, 4, (H, W, 3), dtype=np.uint8) * 60  # few colours, so the key recurs
    key = tuple(int(v) for v in pixels[0, 0])
    data = _bytes(Image.fromarray(pixels), "PNG", transparency=key)
    raw = _raw(data, "RGB")
    return data, np.where((raw == key).all(axis=2)[..., None], 255, raw), 0


def case_RGB_16bit_transparency_key(rng):
    # PIL keeps each 16-bit sample's high byte; the 16-bit tRNS key is matched on that byte.
    pixels = rng.integers(0, 3, (H, W, 3)) * 30000 + rng.integers(0, 200, (H, W, 3))
    key = (30000, 0, 60000)
    pixels[0, 0] = key
    data = _png(pixels, 16, 2, {b"tRNS": struct.pack(">HHH", *key)})
    high = pixels >> 8
    hidden = (high == np.array(key) >> 8).all(axis=2)[..., None]
    return data, np.where(hidden, 255, high), 0


def case_RGBA(rng):
    data = _bytes(Image.fromarray(rng.integers(0, 256, (H, W, 4), dtype=np.uint8)), "PNG")
    raw = _raw(data, "RGBA")
    return data, _over(raw[..., :3], raw[..., 3]), 1


def case_RGBa_tiff(rng):
    # Premultiplied RGB TIFF: PIL unpremultiplies it to RGBA while reading.
    alpha = rng.integers(1, 256, (H, W, 1))
    premultiplied = (rng.random((H, W, 3)) * (alpha + 1)).astype(np.uint8)
    rgba = Image.fromarray(np.dstack([premultiplied, alpha.astype(np.uint8)]), "RGBA")
    data = _associated_alpha(_bytes(rgba, "TIFF"))
    assert Image.open(io.BytesIO(data)).mode == "RGBA"
    return data, premultiplied + 255.0 - alpha, 1


def case_CMYK_jpeg(rng):
    data = _bytes(Image.frombytes("CMYK", (W, H), rng.integers(0, 256, (H, W, 4), dtype=np.uint8).tobytes()), "JPEG")
    raw = _raw(data, "CMYK") / 255
    return data, 255 * (1 - raw[..., :3]) * (1 - raw[..., 3:]), 1


def case_CMYK_tiff(rng):
    data = _bytes(Image.frombytes("CMYK", (W, H), rng.integers(0, 256, (H, W, 4), dtype=np.uint8).tobytes()), "TIFF")
    raw = _raw(data, "CMYK") / 255
    return data, 255 * (1 - raw[..., :3]) * (1 - raw[..., 3:]), 1


def case_YCbCr_tiff(rng):
    data = _bytes(Image.frombytes("YCbCr", (W, H), rng.integers(0, 256, (H, W, 3), dtype=np.uint8).tobytes()), "TIFF")
    return data, _ycbcr_to_rgb(_raw(data, "YCbCr")), 1


def case_YCbCr_jpeg(rng):
    # PIL opens a JPEG as RGB (libjpeg converts); draft() exposes the stored YCbCr to check it.
    data = _bytes(Image.frombytes("YCbCr", (W, H), rng.integers(0, 256, (H, W, 3), dtype=np.uint8).tobytes()), "JPEG")
    stored = Image.open(io.BytesIO(data))
    stored.draft("YCbCr", stored.size)
    assert stored.mode == "YCbCr"
    return data, _ycbcr_to_rgb(np.asarray(stored).astype(np.float64)), 2


def case_LAB_tiff(rng):
    # Random bytes: a and b span -128..127, so many colours lie outside sRGB and are clipped.
    data = _bytes(Image.frombytes("LAB", (W, H), rng.integers(0, 256, (H, W, 3), dtype=np.uint8).tobytes()), "TIFF")
    return data, _lab_to_srgb(_raw(data, "LAB")), 1


def _sixteen_bit(rng):
    return rng.integers(0, 65536, (H, W)).astype(np.uint16)


def case_I16_png(rng):
    values = _sixteen_bit(rng)
    data = _bytes(Image.frombytes("I;16", (W, H), values.astype("<u2").tobytes()), "PNG")
    assert (_raw(data, "I;16") == values).all()
    return data, _grey(np.round(values / 257)), 0


def case_I16_png_from_scratch(rng):
    values = _sixteen_bit(rng)
    data = _png(values, 16, 0)
    assert (_raw(data, "I;16") == values).all()  # Pillow 13 opens 16-bit grey PNG as I;16
    return data, _grey(np.round(values / 257)), 0


def case_I16_png_transparency_key(rng):
    values = rng.integers(0, 4, (H, W)) * 20000 + 1234
    data = _png(values, 16, 0, {b"tRNS": struct.pack(">H", 21234)})
    return data, np.where((values == 21234)[..., None], 255, _grey(np.round(values / 257))), 0


def case_LA16_png(rng):
    # Pillow 13 opens 16-bit grey+alpha PNG as 8-bit RGBA (each sample's high byte), hence +-2.
    values, alpha = _sixteen_bit(rng), _sixteen_bit(rng)
    data = _png(np.dstack([values, alpha]), 16, 4)
    assert Image.open(io.BytesIO(data)).mode == "RGBA"
    return data, _over(_grey(values / 257), alpha / 257), 2


def case_I16_tiff(rng):
    values = _sixteen_bit(rng)
    data = _bytes(Image.frombytes("I;16", (W, H), values.astype("<u2").tobytes()), "TIFF")
    assert (_raw(data, "I;16") == values).all()
    return data, _grey(np.round(values / 257)), 0


def case_I16B_tiff(rng):
    values = _sixteen_bit(rng)
    data = _bytes(Image.frombytes("I;16B", (W, H), values.astype(">u2").tobytes()), "TIFF")
    assert (_raw(data, "I;16B") == values).all()
    return data, _grey(np.round(values / 257)), 0


def case_I32_tiff_beyond_16bit(rng):
    values = rng.integers(-(2**31), 2**31, (H, W)).astype(np.int32)
    data = _bytes(Image.fromarray(values), "TIFF")
    assert (_raw(data, "I") == values).all()
    lo, hi = float(values.min()), float(values.max())
    return data, _grey((values - lo) / (hi - lo) * 255), 1


def case_I32_tiff_within_16bit(rng):
    values = _sixteen_bit(rng).astype(np.int32)
    data = _bytes(Image.fromarray(values), "TIFF")
    assert (_raw(data, "I") == values).all()
    return data, _grey(np.round(values / 257)), 0


def case_I32_tiff_constant(rng):
    data = _bytes(Image.fromarray(np.full((H, W), 100_000, dtype=np.int32)), "TIFF")
    return data, _grey(np.zeros((H, W))), 0


def case_F_tiff_unit_range(rng):
    values = rng.random((H, W)).astype(np.float32)
    data = _bytes(Image.fromarray(values), "TIFF")
    assert (_raw(data, "F") == values).all()
    return data, _grey(values * 255.0), 1


def case_F_tiff_outside_unit_range(rng):
    values = (rng.random((H, W)) * 1000 - 300).astype(np.float32)
    data = _bytes(Image.fromarray(values), "TIFF")
    lo, hi = values.min(), values.max()
    return data, _grey((values - lo) / (hi - lo) * 255.0), 1


def case_F_tiff_nan_and_inf(rng):
    values = (rng.random((H, W)) * 10).astype(np.float32)
    values[0, :3] = np.nan, np.inf, -np.inf
    finite = values[np.isfinite(values)]
    lo, hi = finite.min(), finite.max()
    expected = (np.clip(values, lo, hi) - lo) / (hi - lo) * 255.0
    expected[0, 0] = 0
    return _bytes(Image.fromarray(values), "TIFF"), _grey(expected), 1


def case_gif_first_frame(rng):
    frames = []
    for colour in [(200, 10, 10), (10, 200, 10)]:
        frame = Image.new("P", (W, H), 1)
        frame.putpalette([0, 0, 0, *colour])
        frames.append(frame)
    data = _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    return data, np.broadcast_to(np.array([200.0, 10, 10]), (H, W, 3)), 0


CASES = {name.removeprefix("case_"): case for name, case in dict(globals()).items() if name.startswith("case_")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_decode_mode(name):
    data, expected, tolerance = CASES[name](np.random.default_rng(sorted(CASES).index(name)))
    got = decode_rgb(data)
    assert got.mode == "RGB" and got.size == (W, H)
    difference = np.abs(np.asarray(got, dtype=np.float64) - np.round(expected))
    assert difference.max() <= tolerance, f"{name}: off by up to {difference.max()}"


@pytest.mark.parametrize("mode", ["I;16", "I;16L", "I;16B", "I;16N"])
def test_in_memory_16bit_modes(mode):
    # I;16L and I;16N come from no file Pillow 13 writes; they still reach to_rgb in memory.
    values = _sixteen_bit(np.random.default_rng(1))
    img = Image.frombytes(mode, (W, H), values.astype(">u2" if mode == "I;16B" else "=u2").tobytes())
    assert (np.asarray(img) == values).all()
    assert (np.asarray(to_rgb(img)) == _grey(np.round(values / 257))).all()


def test_in_memory_hsv_and_premultiplied():
    rng = np.random.default_rng(2)
    hsv = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    expected = np.array([colorsys.hsv_to_rgb(*(pixel / 255)) for pixel in hsv.reshape(-1, 3)]).reshape(H, W, 3) * 255
    got = np.asarray(to_rgb(Image.frombytes("HSV", (W, H), hsv.tobytes())), dtype=np.float64)
    assert np.abs(got - np.round(expected)).max() <= 1
    alpha = rng.integers(1, 256, (H, W, 1))
    premultiplied = (rng.random((H, W, 3)) * (alpha + 1)).astype(np.uint8)
    for mode, colour in [("RGBa", premultiplied), ("La", premultiplied[..., :1])]:
        img = Image.frombytes(mode, (W, H), np.dstack([colour, alpha.astype(np.uint8)]).tobytes())
        got = np.asarray(to_rgb(img), dtype=np.float64)
        assert np.abs(got - (colour + 255.0 - alpha)).max() <= 1, mode


def test_exif_rotated_jpeg_comes_out_upright():
    rng = np.random.default_rng(3)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: turn 90 degrees clockwise to view
    stored = Image.fromarray(rng.integers(0, 256, (16, 32, 3), dtype=np.uint8))
    data = _bytes(stored, "JPEG", exif=exif.tobytes())
    raw = _raw(data, "RGB")
    got = np.asarray(decode_rgb(data), dtype=np.float64)
    assert got.shape == (32, 16, 3)
    assert (got == np.rot90(raw, k=-1)).all()


# Files that inspect_image re-encodes to PNG: every case whose format is not JPEG, PNG or WEBP.
REENCODED = [name for name in sorted(CASES) if "tiff" in name or "gif" in name]


@pytest.mark.parametrize("name", REENCODED)
def test_inspect_reencodes_what_decode_gives(name):
    data, _, _ = CASES[name](np.random.default_rng(4))
    check = inspect_image(data, max_pixels=10**6)
    assert check.error is None, check.detail
    assert check.ext == "png" and check.data.startswith(b"\x89PNG")
    assert (np.asarray(decode_rgb(check.data)) == np.asarray(decode_rgb(data))).all()


def test_inspect_keeps_16bit_and_applies_tiff_orientation():
    values = _sixteen_bit(np.random.default_rng(5))
    img = Image.frombytes("I;16", (W, H), values.astype("<u2").tobytes())
    check = inspect_image(_bytes(img, "TIFF"), max_pixels=10**6)
    assert Image.open(io.BytesIO(check.data)).mode == "I;16"  # stored losslessly, not as 8-bit
    rotated = _bytes(img, "TIFF", tiffinfo={0x0112: 6})
    check = inspect_image(rotated, max_pixels=10**6)
    assert (np.asarray(decode_rgb(check.data)) == np.asarray(decode_rgb(rotated))).all()
    assert decode_rgb(check.data).size == (H, W)


def test_inspect_reports_encode_failure(monkeypatch):
    data, _, _ = case_F_tiff_unit_range(np.random.default_rng(6))

    def refuse(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", refuse)
    check = inspect_image(data, max_pixels=10**6)
    assert (check.error, check.detail) == ("encode_error", "OSError: disk full")


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about the truncated EXIF of cut TIFFs
def test_inspect_never_raises():
    rng = np.random.default_rng(7)
    samples = [CASES[name](rng)[0] for name in sorted(CASES)]
    for data in samples:
        for broken in [data[: len(data) // 2], data[:30], data[:8] + bytes(rng.integers(0, 256, 200, dtype=np.uint8))]:
            check = inspect_image(broken, max_pixels=10**6)
            assert check.error is None or check.detail


def test_every_consumer_sees_the_same_pixels(tmp_path):
    from vlalign import model
    from vlalign.curate.images import _decode
    from vlalign.data import images

    rng = np.random.default_rng(8)
    exif = Image.Exif()
    exif[0x0112] = 8
    samples = [CASES[name](rng)[0] for name in ["I16_png", "RGBA", "CMYK_jpeg", "F_tiff_outside_unit_range", "PA"]]
    photo = Image.fromarray(rng.integers(0, 256, (16, 32, 3), dtype=np.uint8))
    samples.append(_bytes(photo, "JPEG", exif=exif.tobytes()))
    for data in samples:
        expected = np.asarray(decode_rgb(data))
        measured, error = _decode(data)
        assert error is None and (np.asarray(measured) == expected).all()
        assert (np.asarray(model._rgb(Image.open(io.BytesIO(data)))) == expected).all()
        path = tmp_path / "image"
        path.write_bytes(data)
        assert (np.asarray(model._rgb(path)) == expected).all()
    # convert (the .beton) decodes with the same function.
    from vlalign.store import beton

    assert beton.decode_rgb is images.decode_rgb
