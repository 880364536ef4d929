"""Readers that turn a source into items: (key, image bytes, caption, metadata) or a failure.

Each reader yields `SourceItem`s; the download stage writes the good ones to shards and
every one of them, good or failed, to the manifest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

FASHION_MNIST_CLASSES = [
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]  # fmt: skip


@dataclass
class SourceItem:
    key: str
    origin: str  # path or URL of the item in its source
    caption: str = ""
    category: str | None = None
    image: bytes | None = None
    image_ext: str = "png"
    error: str | None = None  # set when the item cannot be used: "no_caption", ...
    meta: dict = field(default_factory=dict)
    path: Path | None = None  # where `image` is read from when it is None: large sources load lazily
    detail: str | None = None  # what exactly went wrong, beside the error class


def load_classnames(path: str | Path, key: str) -> list[str] | dict[str, str]:
    """A class-name file: `id<TAB>name` lines map folder names or label ids to names (ImageNet's
    wnids); plain lines list the names in label order (clip_benchmark's classnames.txt)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{key}: {path} is not a file")
    lines = [line.strip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if lines and all("\t" in line for line in lines):
        return dict(line.split("\t", 1) for line in lines)
    return [line.strip() for line in lines]


def caption_lines(text: str) -> list[str]:
    """The captions of a caption text: one per non-empty line (a retrieval set's `txt` lists an image's
    captions a line each, as clip_benchmark's COCO/Flickr webdatasets do)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def class_caption(template: str | None, classname: str | None) -> str:
    """The caption of a classification item that has none: the template with its class name, or ""."""
    return template.replace("{}", classname) if template and classname else ""


def safe_key(text: str) -> str:
    """A webdataset key: no dots or slashes, stable for the same text, distinct for distinct texts.

    Where characters had to be replaced, a short hash of the original keeps `a+` and `a`
    apart.
    """
    key = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")
    if key != text:
        key += "_" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return key


def hash_fraction(key: str) -> float:
    """A deterministic number in [0, 1) per key, for splits and subsets that never change with order."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) / float(1 << 48)


def deterministic_subset(keys: Iterable[str], max_items: int | None, per_class: int | None = None,
                         categories: Iterable[str | None] | None = None) -> set[str]:
    """The keys a subset keeps: lowest key hashes first, at most `per_class` per category and `max_items` in
    all, so the subset never changes with the order of the items (None: no limit)."""
    keys = list(keys)
    ranked = sorted(zip(map(hash_fraction, keys), keys, categories if categories is not None else [None] * len(keys)))
    taken: Counter = Counter()
    kept: list[str] = []
    for _, key, category in ranked:
        if per_class is not None and taken[category] >= per_class:
            continue
        taken[category] += 1
        kept.append(key)
    return set(kept[:max_items] if max_items is not None else kept)


def split_of(key: str, eval_fraction: float) -> str:
    return "eval" if hash_fraction("split:" + key) < eval_fraction else "train"


def tuxpaint_items(root: Path, options: dict) -> Iterator[SourceItem]:
    """Tux Paint stamps: `stamps/{category}/.../{name}.png` with the English caption in `{name}.txt`."""
    stamps = root / "usr/share/tuxpaint/stamps"
    for png in sorted(stamps.rglob("*.png")):
        rel = png.relative_to(stamps)
        category = rel.parts[0]
        item = SourceItem(key=safe_key(f"tuxpaint_{rel.with_suffix('')}"), origin=str(rel), category=category)
        txt = png.with_suffix(".txt")
        caption = ""
        if txt.exists():
            # The first line is English; the others are `lang.utf8=` translations.
            lines = [l.strip() for l in txt.read_text(encoding="utf-8", errors="replace").splitlines()]
            caption = next((l for l in lines if l and "=" not in l.split(" ")[0]), "")
        if not caption:
            item.error = "no_caption"
        else:
            item.caption = caption
            item.image = png.read_bytes()
        yield item


def openclipart_title(stem: str) -> str:
    """File-name title as a (noisy) caption: `chemistry_flask_matthew__02` -> `chemistry flask matthew`."""
    title = re.sub(r"_\d+$", "", stem)
    return re.sub(r"[\s_-]+", " ", title).strip()


def openclipart_items(root: Path, options: dict) -> Iterator[SourceItem]:
    art = root / "usr/share/openclipart/png"
    for png in sorted(art.rglob("*.png")):
        rel = png.relative_to(art)
        title = openclipart_title(png.stem)
        item = SourceItem(key=safe_key(f"openclipart_{rel.with_suffix('')}"), origin=str(rel), category=rel.parts[0])
        if title:
            item.caption = title
            item.image = png.read_bytes()
        else:
            item.error = "no_caption"
        yield item


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format, gzipped): magic, dims, then uint8 data."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(tuple(int(d) for d in dims))


def fashion_mnist_items(root: Path, options: dict) -> Iterator[SourceItem]:
    """The Fashion-MNIST test set (10 classes); each image becomes a PNG captioned by its class name.

    With `invert`, garments are stored dark on white, as the clip-art of the demo's
    training pool is drawn, instead of white on black.
    """
    from PIL import Image

    folder = root / "usr/share/datasets/fashion-mnist"
    images = _read_idx(folder / "t10k-images-idx3-ubyte.gz")
    labels = _read_idx(folder / "t10k-labels-idx1-ubyte.gz")
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} images but {len(labels)} labels")
    if options.get("invert"):
        images = 255 - images
    for index, (pixels, label) in enumerate(zip(images, labels)):
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
        name = FASHION_MNIST_CLASSES[int(label)]
        yield SourceItem(
            key=f"fashion_mnist_{index:05d}",
            origin=f"t10k[{index}]",
            caption=name,
            category=name,
            image=buffer.getvalue(),
            meta={"label": int(label)},
        )


# type -> (default Debian package, item reader taking the extracted root and the source's options)
DEBIAN_SOURCES: dict[str, tuple[str, Callable[[Path, dict], Iterator[SourceItem]]]] = {
    "debian_tuxpaint": ("tuxpaint-stamps-default", tuxpaint_items),
    "debian_openclipart": ("openclipart-png", openclipart_items),
    "debian_fashion_mnist": ("dataset-fashion-mnist", fashion_mnist_items),
}
