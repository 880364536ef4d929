"""A tiny pool and eval split that exercise every curation filter, written as real shards."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vlalign.data.shards import Sample, ShardWriter

BROKEN_PNG = b"\x89PNG\r\n\x1a\nnot really a png"


def png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def scene(seed: int, size=(128, 128)) -> Image.Image:
    """Random overlapping shapes: enough structure that every seed has its own pHash."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, tuple(int(c) for c in rng.integers(150, 256, 3)))
    draw = ImageDraw.Draw(img)
    w, h = size
    for _ in range(10):
        x0, y0 = rng.uniform(0, w * 0.8), rng.uniform(0, h * 0.8)
        box = (x0, y0, x0 + rng.uniform(w * 0.1, w * 0.5), y0 + rng.uniform(h * 0.1, h * 0.5))
        colour = tuple(int(c) for c in rng.integers(0, 200, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return img


def sign(text: str, size=(320, 120)) -> Image.Image:
    """Large dark text on white, as a poster or a screenshot would show it."""
    img = Image.new("RGB", size, "white")
    ImageDraw.Draw(img).text((12, size[1] // 3), text, fill="black", font=ImageFont.load_default(size=40))
    return img


def slightly_altered(img: Image.Image) -> Image.Image:
    """Rescaled and JPEG re-encoded, as a copy found elsewhere on the web: other bytes, same picture."""
    buffer = io.BytesIO()
    img.resize((img.width * 9 // 10, img.height * 9 // 10)).save(buffer, format="JPEG", quality=80)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


PICTURE = png(scene(1))
LEAKED = png(scene(2))
LEAKED_NEAR = scene(3)

# key -> (image bytes, caption): one sample per behaviour the tests check.
POOL = {
    "good": (png(scene(11)), "A yellow square on a white page."),
    "circle": (PICTURE, "A red circle drawn with a marker."),
    "circle_copy": (PICTURE, "Another red circle."),
    "circle_near": (png(slightly_altered(Image.open(io.BytesIO(PICTURE)).convert("RGB"))), "A red circle, scanned."),
    "sign": (png(sign("SUMMER SALE")), "Summer sale"),
    "german": (png(scene(12)), "Ein großer blauer Hund läuft schnell über die grüne Wiese"),
    "boilerplate": (png(scene(13)), "Image may contain: a black square"),
    "file_name": (png(scene(14)), "IMG_1234.jpg"),
    "url": (png(scene(15)), "green triangle from www.example.com today"),
    "non_utf8": (png(scene(16)), "caf\ufffd menu board with prices"),
    "short": (png(scene(17)), "x"),
    "tiny": (png(scene(18, (20, 20))), "A tiny black circle."),
    "wide": (png(scene(19, (400, 60))), "A long black banner."),
    "broken": (BROKEN_PNG, "A picture that never arrived."),
    "blank": (png(Image.new("RGB", (128, 128), "white")), "A white cloud on a white sky."),
    "leaked": (LEAKED, "Blue bars from the test set."),
    "leaked_near": (png(LEAKED_NEAR), "A green triangle like the test one."),
}
EVAL = {
    "eval_bars": (LEAKED, "Blue bars."),
    "eval_triangle": (png(slightly_altered(LEAKED_NEAR)), "A green triangle."),
}


def write_shards(folder: Path, samples: dict[str, tuple[bytes, str]], source: str, per_shard: int = 6) -> Path:
    with ShardWriter(folder, per_shard) as writer:
        for key, (image, caption) in samples.items():
            writer.write(Sample(key, image, "png", caption, {"source": source}))
    return folder
