"""Test data for the store and embed tests: tiny webdataset shards with awkward images."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from vlalign.data.shards import Sample, ShardWriter


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _transparent_png() -> bytes:
    image = Image.new("RGBA", (40, 40), (0, 0, 255, 0))  # fully transparent: must come out white
    image.paste((0, 0, 255, 255), (10, 10, 30, 30))
    return _encode(image, "PNG")


def _gradient(width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height))
    image.putdata([((x * 7) % 256, (y * 5) % 256, (x + y) % 256) for y in range(height) for x in range(width)])
    return image


# (key, image bytes, extension, caption, meta); "broken" does not decode.
SAMPLES = [
    ("wide", _encode(Image.new("RGB", (300, 40), (255, 0, 0)), "JPEG"), "jpg", "a long red bar",
     {"source": "tuxpaint", "category": "shapes"}),
    ("alpha", _transparent_png(), "png", "a blue square", {"source": "tuxpaint", "category": "shapes"}),
    ("tall", _encode(_gradient(20, 200), "PNG"), "png", "a tall striped pole", {"category": "objects"}),
    ("broken", b"\xff\xd8\xff not really a jpeg", "jpg", "nothing to see", {}),
    ("tiny", _encode(Image.new("RGB", (1, 1), (0, 128, 0)), "PNG"), "png", "a green dot", {}),
    ("palette", _encode(_gradient(64, 48).convert("P"), "PNG"), "png", "a colourful card", {"note": "p"}),
    ("photo", _encode(_gradient(120, 90), "JPEG"), "jpg", "a cat sitting on a mat", {"source": "web"}),
    ("square", _encode(_gradient(50, 50), "JPEG"), "jpg", "a dog running in a park", {}),
    ("big", _encode(_gradient(400, 300), "JPEG"), "jpg", "a large photo of a beach", {"category": None}),
    ("flat", _encode(Image.new("RGB", (80, 30), (200, 200, 0)), "PNG"), "png", "a yellow sign", {}),
    ("late", _encode(_gradient(33, 77), "JPEG"), "jpg", "a tree by a river", {}),
]
BROKEN = {"broken"}


def write_test_shards(root: Path) -> list[Path]:
    """Two folders (sources "first" and "second"), the first split over two shards."""
    folders = [root / "first", root / "second"]
    for folder, chunk, per_shard in ((folders[0], SAMPLES[:6], 4), (folders[1], SAMPLES[6:], 10)):
        with ShardWriter(folder, samples_per_shard=per_shard) as writer:
            for key, data, ext, caption, meta in chunk:
                writer.write(Sample(key=key, image=data, image_ext=ext, caption=caption, meta=meta))
    return folders
