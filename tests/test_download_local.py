"""folder and webdataset sources: every item accounted, only decodable images written, keys safe."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from source_config import source_config

from vlalign.data.images import inspect_image
from vlalign.data.shards import iter_samples, shard_paths
from vlalign.data.webdataset_source import expand_urls
from vlalign.data.download import run_download
from image_server import image_bytes


def all_samples(out: Path) -> list:
    return [s for split in ("train", "eval") if (out / split).exists() for s in iter_samples(shard_paths(out / split))]


def put(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def test_folder_source(tmp_path):
    root = tmp_path / "photos"
    put(root / "cats/a.jpg", image_bytes("JPEG")), put(root / "cats/a.txt", " a red cat \n")
    put(root / "cats/deep/b.png", image_bytes("PNG", colour=(1, 2, 3))), put(root / "cats/deep/b.txt", "a dark cat")
    put(root / "dogs/c.JPG", image_bytes("JPEG")), put(root / "dogs/c.txt", "")  # empty caption
    put(root / "dogs/d.gif", image_bytes("GIF")), put(root / "dogs/d.txt", "a gif dog")
    put(root / "dogs/broken.jpg", image_bytes("JPEG", (200, 200))[:300]), put(root / "dogs/broken.txt", "cut short")
    noise = Image.frombytes("L", (100, 100), os.urandom(10_000))
    put(root / "dogs/big.png", encode(noise, "PNG")), put(root / "dogs/big.txt", "too many bytes")
    put(root / "dogs/tiny.png", image_bytes("PNG", (3, 3))), put(root / "dogs/tiny.txt", "a speck")
    put(root / "e.jpg", image_bytes("JPEG")), put(root / "e.txt", "no category")
    put(root / ".cache/x.jpg", image_bytes("JPEG")), put(root / "notes.txt", "not an image")  # both left out
    put(root / "dogs/c.png", image_bytes("PNG")), put(root / "dogs/c.png.txt", "wrong caption name")  # c.txt is empty

    source = source_config("folder", path=str(root), max_bytes=5000, eval_fraction=0.5)
    summary = run_download("pets", source, tmp_path / "out", None, 2)
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet").set_index("origin")
    assert summary["items"] == len(manifest) == 9 and manifest["key"].is_unique
    assert manifest["error"].fillna("ok").to_dict() == {
        "cats/a.jpg": "ok", "cats/deep/b.png": "ok", "dogs/big.png": "too_large_bytes",
        "dogs/broken.jpg": "decode_error", "dogs/c.JPG": "no_caption", "dogs/c.png": "no_caption",
        "dogs/d.gif": "ok", "dogs/tiny.png": "too_small", "e.jpg": "ok",
    }  # fmt: skip
    assert manifest.loc["cats/deep/b.png", "category"] == "cats" and pd.isna(manifest.loc["e.jpg", "category"])
    samples = {s.meta["origin"]: s for s in all_samples(tmp_path / "out")}
    assert set(samples) == {"cats/a.jpg", "cats/deep/b.png", "dogs/d.gif", "e.jpg"}
    assert samples["cats/a.jpg"].caption == "a red cat" and samples["dogs/d.gif"].image_ext == "png"
    assert all(inspect_image(s.image, 64_000_000).error is None for s in samples.values())
    assert samples["cats/a.jpg"].meta["source"] == "pets" and samples["cats/a.jpg"].meta["width"] == 64

    one_each = run_download("pets", {**source, "per_class": 1}, tmp_path / "sub", None, 2)
    # One item of each category (cats, dogs, none) is taken before checking; the 4 others are skipped.
    assert one_each["skipped"] == 4 and one_each["ok"] + one_each["failed"] == 5


def encode(img, fmt: str) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return buffer.getvalue()


def shard(samples: dict[str, dict[str, bytes]], cut_inside: str | None = None) -> bytes:
    """A tar of webdataset samples ({key: {ext: bytes}}), cut short in the middle of member `cut_inside`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for key, members in samples.items():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    if cut_inside is None:
        return buffer.getvalue()
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as tar:
        member = tar.getmember(cut_inside)
    return buffer.getvalue()[: member.offset_data + member.size // 2]


def good(i: int) -> dict[str, bytes]:
    return {"jpg": image_bytes("JPEG", colour=(i, 0, 0)), "txt": f"sample {i}".encode(),
            "json": json.dumps({"license": "cc0", "width": 1}).encode()}  # fmt: skip




def test_webdataset_source(tmp_path, server):
    data = tmp_path / "wds"
    put(data / "shard-000000.tar", shard({"000": good(0), "001": good(1), "dir/002": good(2)}))
    put(data / "shard-000001.tar", shard({
        "000": good(3),  # the same member key as in shard 0: re-keyed apart
        "noimg": {"txt": b"a caption", "json": b"{}"},
        "nocap": {"png": image_bytes("PNG")},
        "badjson": {**good(4), "json": b"{not json"},
        "html": {"jpg": b"<html>oops</html>", "txt": b"html"},
        "huge": {"png": bytes(5000), "txt": b"big"},
    }))  # fmt: skip
    put(data / "shard-000002.tar", shard({"000": good(5), "001": good(6)}, cut_inside="001.jpg"))
    server.files["remote-000000.tar"] = shard({"000": good(7), "001": good(8)})
    urls = [str(data / "shard-{000000..000003}.tar"), server.url("/files/remote-000000.tar"),
            str(data / "shard-00000[0].tar")]  # a range (000003 is missing), a URL, a glob  # fmt: skip
    assert len(expand_urls(urls)) == 6

    source = source_config("webdataset", urls=urls, max_bytes=2000)
    summary = run_download("wds", source, tmp_path / "out", None, 100)
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert summary["items"] == len(manifest) == summary["ok"] + summary["failed"]
    errors = manifest.groupby(manifest["error"].fillna("ok")).size().to_dict()
    assert errors == {"ok": 3 + 1 + 1 + 2, "no_image": 1, "no_caption": 1, "bad_metadata": 1, "not_an_image": 1,
                      "too_large_bytes": 1, "unreadable_shard": 2, "duplicate_key": 3}  # fmt: skip
    unreadable = manifest.loc[manifest.error == "unreadable_shard", "origin"].tolist()
    assert unreadable == [str(data / "shard-000002.tar"), str(data / "shard-000003.tar")]

    samples = all_samples(tmp_path / "out")
    assert len(samples) == summary["ok"] == len({s.key for s in samples})
    assert all("." not in s.key and "/" not in s.key for s in samples)
    for sample in samples:
        assert inspect_image(sample.image, 64_000_000).error is None
        assert sample.meta["license"] == "cc0" and sample.meta["width"] == 64 and sample.meta["source"] == "wds"
    assert sorted(s.caption for s in samples) == sorted(f"sample {i}" for i in (0, 1, 2, 3, 5, 7, 8))
    assert any(s.meta["origin"].startswith("http://127.0.0.1") for s in samples)


def test_image_folder_classification_set(tmp_path):
    """ImageNet-style: class folders named by id, no caption files; names from a class-name file."""
    root = tmp_path / "val"
    put(root / "n002/x.jpg", image_bytes("JPEG")), put(root / "n001/y.png", image_bytes("PNG"))
    put(root / "n001/z.png", image_bytes("PNG", colour=(0, 9, 0))), put(root / "n001/z.txt", "a tench in a net")
    put(tmp_path / "map.txt", "n001\ttench\nn002\tgoldfish\n")
    put(tmp_path / "names.txt", "tench\ngoldfish\n")  # the same, in sorted folder order
    for names in ("map.txt", "names.txt"):
        source = source_config("folder", path=str(root), classnames=str(tmp_path / names),
                               caption_template="a photo of a {}.", eval_fraction=1.0)  # fmt: skip
        out = tmp_path / f"out-{names}"
        assert run_download("val", source, out, None, 10)["ok"] == 3
        samples = {s.meta["origin"]: (s.caption, s.meta["category"]) for s in all_samples(out)}
        assert samples == {"n002/x.jpg": ("a photo of a goldfish.", "goldfish"),
                           "n001/y.png": ("a photo of a tench.", "tench"),
                           "n001/z.png": ("a tench in a net", "tench")}  # fmt: skip
    put(tmp_path / "short.txt", "tench\n")
    with pytest.raises(ValueError, match="sources.val.classnames: 1 names for 2 class folders"):
        run_download("val", source_config("folder", path=str(root), classnames=str(tmp_path / "short.txt")),
                     tmp_path / "bad", None, 10)  # fmt: skip
    with pytest.raises(FileNotFoundError, match="sources.val.classnames"):
        run_download("val", source_config("folder", path=str(root), classnames=str(tmp_path / "missing.txt")),
                     tmp_path / "bad", None, 10)  # fmt: skip


def test_clip_benchmark_webdataset_classification_set(tmp_path):
    """clip_benchmark's layout: `cls` label members, names from classnames.txt, captions from the template."""
    data = tmp_path / "wds"
    put(data / "shard-000000.tar", shard({
        "s0": {"webp": image_bytes("WEBP"), "cls": b"1"},
        "s1": {"jpg": image_bytes("JPEG"), "cls": b"0"},
        "s2": {"jpg": image_bytes("JPEG"), "cls": b"7"},  # no such class
    }))  # fmt: skip
    put(tmp_path / "classnames.txt", "cat\ndog\n")
    names = str(tmp_path / "classnames.txt")
    source = source_config("webdataset", urls=[str(data / "shard-000000.tar")], eval_fraction=1.0,
                           classnames=names, caption_template="a photo of a {}.")  # fmt: skip
    summary = run_download("cb", source, tmp_path / "out", None, 10)
    assert (summary["ok"], summary["failed"]) == (2, 1)
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert manifest.loc[manifest.error.notna(), "error"].tolist() == ["bad_label"]
    samples = sorted((s.caption, s.meta["category"]) for s in all_samples(tmp_path / "out"))
    assert samples == [("a photo of a cat.", "cat"), ("a photo of a dog.", "dog")]


def test_several_captions_a_line_each(tmp_path):
    """A retrieval set's txt lists an image's captions a line each (clip_benchmark's COCO/Flickr layout)."""
    data = tmp_path / "wds"
    put(data / "shard-000000.tar", shard({"a": {"jpg": image_bytes("JPEG"), "txt": b"a dog\n\n a puppy \nthe dog"},
                                          "b": {"jpg": image_bytes("JPEG"), "txt": b"a cat\n"}}))  # fmt: skip
    run_download("coco", source_config("webdataset", urls=[str(data / "shard-000000.tar")]), tmp_path / "out", None, 9)
    samples = {s.meta["origin"].rsplit("#", 1)[1]: s for s in all_samples(tmp_path / "out")}
    assert samples["a"].caption == "a dog" and samples["a"].meta["captions"] == ["a dog", "a puppy", "the dog"]
    assert samples["b"].caption == "a cat" and "captions" not in samples["b"].meta


def test_webdataset_glob_that_matches_nothing_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no shard matches"):
        run_download("wds", source_config("webdataset", urls=[str(tmp_path / "*.tar")]), tmp_path / "o", None, 10)


def test_synthetic_compositional_source(tmp_path):
    source = source_config("synthetic_compositional", scenes=12, seed=3, eval_fraction=1.0)
    summary = run_download("shapes", source, tmp_path / "out", None, 100)
    assert (summary["ok"], summary["failed"]) == (12, 0)
    samples = all_samples(tmp_path / "out")
    assert not (tmp_path / "out" / "train").exists() and len(samples) == 12
    assert all(s.meta["negatives"] and s.meta["scene"]["objects"] for s in samples)
    assert {s.meta["winoground"]["role"] for s in samples if "winoground" in s.meta} <= {"a", "b"}
    again = run_download("shapes", source, tmp_path / "again", None, 100)
    assert again == {**summary, "seconds": again["seconds"]}
    assert [s.caption for s in all_samples(tmp_path / "again")] == [s.caption for s in samples]


def test_eval_split_is_written_in_the_clip_benchmark_layout(tmp_path):
    """An eval split whose samples all have a category is readable as a clip_benchmark set, by vlalign too."""
    root = tmp_path / "val"
    put(root / "zebra/a.jpg", image_bytes("JPEG")), put(root / "ant/b.png", image_bytes("PNG"))
    put(root / "ant/c.png", image_bytes("PNG", colour=(0, 9, 0)))
    out = tmp_path / "out"
    run_download("val", source_config("folder", path=str(root), caption_template="a photo of a {}.",
                                      eval_fraction=1.0), out, None, 2)  # fmt: skip
    assert (out / "eval" / "classnames.txt").read_text() == "ant\nzebra\n"
    templates = (out / "eval" / "zeroshot_classification_templates.txt").read_text().splitlines()
    assert templates and all("{c}" in t for t in templates)
    labels = {}
    for path in shard_paths(out / "eval"):
        with tarfile.open(path) as tar:
            names = tar.getnames()
            labels.update({n.removesuffix(".cls"): tar.extractfile(n).read() for n in names if n.endswith(".cls")})
    assert sorted(labels.values()) == [b"0", b"0", b"1"] and len(names) % 4 == 0  # img, txt, json, cls
    # Read back as a clip_benchmark set, the names upper-cased so the labels come from `cls`, not the json.
    put(tmp_path / "upper.txt", (out / "eval" / "classnames.txt").read_text().upper())
    again = tmp_path / "again"
    source = source_config("webdataset", urls=[str(p) for p in shard_paths(out / "eval")], eval_fraction=1.0,
                           classnames=str(tmp_path / "upper.txt"))  # fmt: skip
    run_download("again", source, again, None, 10)
    first = sorted((s.image, s.meta["category"].upper()) for s in all_samples(out))
    assert sorted((s.image, s.meta["category"]) for s in all_samples(again)) == first


def test_eval_split_without_categories_keeps_the_plain_layout(tmp_path):
    put(tmp_path / "imgs/a.jpg", image_bytes("JPEG")), put(tmp_path / "imgs/a.txt", "a red square")
    run_download("plain", source_config("folder", path=str(tmp_path / "imgs"), eval_fraction=1.0), tmp_path / "out",
                 None, 10)  # fmt: skip
    assert not (tmp_path / "out" / "eval" / "classnames.txt").exists()
    with tarfile.open(shard_paths(tmp_path / "out" / "eval")[0]) as tar:
        assert not any(name.endswith(".cls") for name in tar.getnames())
