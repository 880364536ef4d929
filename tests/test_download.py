import pandas as pd
from source_config import source_config
import pytest

from vlalign.data.images import inspect_image
from vlalign.data.shards import iter_samples, shard_paths
from vlalign.data.sources import SourceItem, openclipart_title, safe_key, split_of
from vlalign.data.download import run_download, select_items


def source(type_, **kw):
    return source_config(type_, **kw)


def test_tuxpaint_shards_manifest_and_split(deb_cache, tmp_path):
    out = tmp_path / "tuxpaint"
    summary = run_download("tuxpaint", source("debian_tuxpaint", eval_fraction=0.25), out, deb_cache, 10)
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert summary["items"] == len(manifest) == 49
    assert summary["items"] == summary["ok"] + summary["failed"] + summary["skipped"]
    assert summary["failed"] == 1 and manifest.loc[manifest.status == "failed", "error"].tolist() == ["no_caption"]
    assert 0 < summary["ok_eval"] < summary["ok_train"]
    train = list(iter_samples(shard_paths(out / "train")))
    evals = list(iter_samples(shard_paths(out / "eval")))
    assert len(train) + len(evals) == 48
    assert {s.key for s in train}.isdisjoint({s.key for s in evals})
    sample = train[0]
    assert sample.caption.startswith("A ") and "=" not in sample.caption  # English line only
    assert sample.meta["source"] == "tuxpaint" and sample.meta["category"] in {"animals", "food", "vehicles", "plants"}
    assert len(list(shard_paths(out / "train"))) == -(-len(train) // 10)


def test_download_is_deterministic(deb_cache, tmp_path):
    cfg = source("debian_tuxpaint", eval_fraction=0.3)
    run_download("tuxpaint", cfg, tmp_path / "a", deb_cache, 100)
    run_download("tuxpaint", cfg, tmp_path / "b", deb_cache, 100)
    a = pd.read_parquet(tmp_path / "a" / "manifest.parquet")
    b = pd.read_parquet(tmp_path / "b" / "manifest.parquet")
    pd.testing.assert_frame_equal(a, b)


def test_openclipart_failures_are_accounted(deb_cache, tmp_path):
    out = tmp_path / "oc"
    summary = run_download("openclipart", source("debian_openclipart"), out, deb_cache, 100)
    manifest = pd.read_parquet(out / "manifest.parquet")
    broken = manifest[manifest.origin.str.contains("broken_image")]
    assert broken.status.tolist() == ["failed"] and broken.error.iloc[0].startswith("decode_error")
    assert summary["ok"] == 33 and summary["failed"] == 1
    assert "red circle artist" in manifest.caption.tolist()


def test_fashion_mnist_per_class_subset(deb_cache, tmp_path):
    out = tmp_path / "fm"
    summary = run_download("fashion_mnist", source("debian_fashion_mnist", eval_fraction=1, per_class=2), out, deb_cache, 100)
    assert summary == {**summary, "items": 60, "ok": 20, "skipped": 40, "ok_eval": 20}
    samples = list(iter_samples(shard_paths(out / "eval")))
    assert sorted({s.caption for s in samples}) == sorted({s.meta["category"] for s in samples})
    assert len({s.caption for s in samples}) == 10
    inverted = tmp_path / "fm_inv"
    run_download("fashion_mnist", source("debian_fashion_mnist", eval_fraction=1, per_class=2, invert=True), inverted, deb_cache, 100)
    first, first_inverted = samples[0], next(iter_samples(shard_paths(inverted / "eval")))
    assert first.key == first_inverted.key
    import numpy as np

    from vlalign.data.images import decode_rgb

    assert (np.asarray(decode_rgb(first.image)) == 255 - np.asarray(decode_rgb(first_inverted.image))).all()


def test_unknown_package_fails_with_its_name(tmp_path):
    bad = source("debian_tuxpaint", package="no-such-package-vlalign")
    with pytest.raises(RuntimeError, match="no-such-package-vlalign"):
        run_download("tuxpaint", bad, tmp_path / "x", tmp_path / "debs", 10)
    assert not (tmp_path / "x").exists()


def test_keys_and_titles():
    assert safe_key("a/b") != safe_key("a_b")
    assert "." not in safe_key("x.y+z") and "/" not in safe_key("x/y")
    assert openclipart_title("chemistry_flask_matthew__02") == "chemistry flask matthew"
    assert split_of("k", 0.0) == "train" and split_of("k", 1.0) == "eval"


def test_inspect_image_rejects_garbage_and_bombs():
    assert inspect_image(b"nope", 64_000_000).error == "not_an_image"
    assert inspect_image(b"\x89PNG\r\n\x1a\n" + bytes(40), 64_000_000).error == "decode_error"
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (9000, 8000)).save(buf, format="PNG")
    assert inspect_image(buf.getvalue(), 64_000_000).error == "too_many_pixels"
    assert inspect_image(buf.getvalue(), 64_000_000, decode=False).error == "too_many_pixels"
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (1, 2, 3)).save(buf, format="JPEG")
    good = buf.getvalue()
    assert inspect_image(good, 64_000_000) == inspect_image(good, 64_000_000)  # deterministic
    assert (inspect_image(good, 64_000_000).width, inspect_image(good, 64_000_000).ext) == (300, "jpg")
    assert inspect_image(good, 64_000_000, min_side=201).error == "too_small"
    assert inspect_image(good[: len(good) // 2], 64_000_000).error == "decode_error"
    buf = io.BytesIO()
    Image.new("P", (20, 10)).save(buf, format="GIF")
    gif = inspect_image(buf.getvalue(), 64_000_000)
    assert gif.ext == "png" and Image.open(io.BytesIO(gif.data)).size == (20, 10)  # re-encoded losslessly


def test_select_items_per_class_and_max():
    items = [SourceItem(key=f"k{i}", origin="", category=str(i % 3)) for i in range(30)]
    assert len(select_items(items, None, 2)) == 6
    assert len(select_items(items, 5, None)) == 5
    assert select_items(items, 5, None) == select_items(list(reversed(items)), 5, None)
