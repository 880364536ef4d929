"""Shared fixtures: tiny stand-ins for the demo's Debian packages, built with dpkg-deb.

They have the real packages' layouts, so the download stage runs its real path
(dpkg-deb -x, the readers) without fetching 300 MB.

hypothesis is imported here, at collection, whether or not the chosen tests use it: its pytest plugin
imports it at the end of the session otherwise, and pytest's rewrite of it then failed there under
CPython 3.11.7 (`SystemError: AST constructor recursion depth mismatch`) after every test had passed.
"""

from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
from pathlib import Path

import hypothesis  # noqa: F401
import numpy as np
import pytest
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (240, 210, 20)}
SHAPES = {"animals": "circle", "food": "square", "vehicles": "triangle", "plants": "cross"}
REPO = Path(__file__).resolve().parents[1]


def shape_image(shape: str, colour: tuple, size: tuple[int, int] = (96, 96), alpha: bool = True) -> Image.Image:
    img = Image.new("RGBA" if alpha else "RGB", size, (0, 0, 0, 0) if alpha else (255, 255, 255))
    draw = ImageDraw.Draw(img)
    w, h = size
    box = (w * 0.15, h * 0.15, w * 0.85, h * 0.85)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(w / 2, h * 0.1), (w * 0.9, h * 0.9), (w * 0.1, h * 0.9)], fill=colour)
    else:
        draw.rectangle((w * 0.4, h * 0.1, w * 0.6, h * 0.9), fill=colour)
        draw.rectangle((w * 0.1, h * 0.4, w * 0.9, h * 0.6), fill=colour)
    return img


def _build_deb(root: Path, package: str, out_dir: Path) -> Path:
    (root / "DEBIAN").mkdir(parents=True, exist_ok=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1.0\nArchitecture: all\nMaintainer: vlalign tests <t@example.org>\n"
        f"Description: test stand-in for {package}\n"
    )
    deb = out_dir / f"{package}_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)], check=True, capture_output=True)
    return deb


def build_tuxpaint(work: Path, out_dir: Path, per_pair: int = 3) -> Path:
    stamps = work / "usr/share/tuxpaint/stamps"
    for category, shape in SHAPES.items():
        for colour, rgb in COLOURS.items():
            for i in range(per_pair):
                folder = stamps / category / "sub"
                folder.mkdir(parents=True, exist_ok=True)
                size = (80 + 7 * i, 90 + 5 * i)
                shape_image(shape, rgb, size).save(folder / f"{colour}_{shape}_{i}.png")
                (folder / f"{colour}_{shape}_{i}.txt").write_text(
                    f"A {colour} {shape}.\nde.utf8=Ein {colour} {shape}.\n"
                )
    # A stamp without a caption file: recorded in the manifest as failed, not written.
    shape_image("circle", (0, 0, 0)).save(stamps / "animals" / "uncaptioned.png")
    return _build_deb(work, "tuxpaint-stamps-default", out_dir)


def build_openclipart(work: Path, out_dir: Path) -> Path:
    art = work / "usr/share/openclipart/png"
    for category, shape in SHAPES.items():
        for colour, rgb in COLOURS.items():
            folder = art / category
            folder.mkdir(parents=True, exist_ok=True)
            shape_image(shape, rgb, (120, 100)).save(folder / f"{colour}_{shape}_artist_01.png")
            shape_image(shape, rgb, (40, 140)).save(folder / f"thin_{colour}_{shape}_01.png")  # fails aspect ratio
    shape_image("square", (1, 2, 3), (100, 100)).save(art / "food" / "x_01.png")  # one-word title
    (art / "food" / "broken_image_01.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")  # undecodable
    return _build_deb(work, "openclipart-png", out_dir)


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def build_fashion_mnist(work: Path, out_dir: Path, n: int = 60) -> Path:
    folder = work / "usr/share/datasets/fashion-mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 10
    images = rng.integers(0, 255, size=(n, 28, 28))
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(_idx(images))
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(_idx(labels))
    return _build_deb(work, "dataset-fashion-mnist", out_dir)


@pytest.fixture(scope="session")
def demo_debs(tmp_path_factory) -> Path:
    """A deb cache folder holding tiny stand-ins of the three demo packages."""
    out = tmp_path_factory.mktemp("debs")
    work = tmp_path_factory.mktemp("deb-src")
    build_tuxpaint(work / "tuxpaint", out)
    build_openclipart(work / "openclipart", out)
    build_fashion_mnist(work / "fashion", out)
    return out


@pytest.fixture
def deb_cache(demo_debs, tmp_path) -> Path:
    """A per-test copy of the deb cache (stages may add files beside the packages)."""
    target = tmp_path / "debs"
    shutil.copytree(demo_debs, target)
    return target


@pytest.fixture
def server(request, monkeypatch):
    """The local image server of `image_server` on 127.0.0.1; a test module may set
    SERVER_MAX_BYTES_HINT for the size of its oversized bodies."""
    from image_server import ImageServer

    # A proxy from the environment must not carry requests meant for this machine's loopback.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    srv = ImageServer(max_bytes_hint=getattr(request.module, "SERVER_MAX_BYTES_HINT", 50_000)).start()
    yield srv
    srv.stop()
