import json

import numpy as np
import pandas as pd
import pytest
import torch
from ffcv.reader import Reader
from fixtures_models import BROKEN, SAMPLES, write_test_shards

from vlalign.data.shards import Sample, ShardWriter
from vlalign.store import beton
from vlalign.store.beton import image_loader, write_beton

# numba (0.68) raises KeyError in the finalizer of ffcv's per-Loader compiled functions when
# they are garbage collected mid-run; harmless, and silent outside pytest.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <finalize object:pytest.PytestUnraisableExceptionWarning"
)
GOOD_KEYS = [s[0] for s in SAMPLES if s[0] not in BROKEN]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("beton")
    folders = write_test_shards(root)
    summary = write_beton(folders, root / "out" / "data.beton", root / "out" / "table.parquet", max_resolution=64)
    return root / "out", summary


def _all_batches(beton, **kwargs):
    images, rows, sizes = [], [], []
    # Batches are views into buffers ffcv reuses, so each is copied before the next.
    for image, row in image_loader(beton, **kwargs):
        images.append(image.clone())
        rows.append(row.view(-1).clone())
        sizes.append(len(row))
    return torch.cat(images), torch.cat(rows), sizes


def test_undecodable_image_is_skipped_and_reported(converted):
    _, summary = converted
    assert summary["written"] == len(GOOD_KEYS)
    assert [s["key"] for s in summary["skipped"]] == ["broken"]
    assert summary["skipped"][0]["reason"]


def test_table_describes_each_row(converted):
    out, _ = converted
    table = pd.read_parquet(out / "table.parquet")
    assert list(table.columns) == ["row", "key", "caption", "source", "category", "meta_json", "beton", "beton_row"]
    assert table["row"].tolist() == table["beton_row"].tolist() == list(range(len(GOOD_KEYS)))
    assert set(table["beton"]) == {"data.beton"}  # relative to the table's folder
    assert table["key"].tolist() == GOOD_KEYS
    by_key = table.set_index("key")
    assert by_key.loc["wide", "caption"] == "a long red bar"
    assert by_key.loc["wide", ["source", "category"]].tolist() == ["tuxpaint", "shapes"]
    assert by_key.loc["tall", "source"] == "first"  # no source in its json: the shard folder
    assert by_key.loc["photo", "source"] == "web" and by_key.loc["late", "source"] == "second"
    assert by_key["category"].isna().sum() == len(GOOD_KEYS) - 3
    assert json.loads(by_key.loc["palette", "meta_json"]) == {"note": "p"}


def test_images_are_square_and_bounded(converted):
    out, _ = converted
    reader = Reader(str(out / "data.beton"))
    meta = reader.metadata[f"f{reader.field_names.index('image')}"]
    assert (meta["width"] == meta["height"]).all() and meta["width"].max() == 64
    assert meta["width"][GOOD_KEYS.index("tiny")] == 1


def test_loader_keeps_order_and_last_partial_batch(converted):
    out, _ = converted
    images, rows, sizes = _all_batches(out / "data.beton", image_size=32, batch_size=4, num_workers=1)
    assert sizes == [4, 4, 2]
    assert rows.tolist() == list(range(len(GOOD_KEYS)))
    assert images.shape == (len(GOOD_KEYS), 3, 32, 32) and images.dtype == torch.uint8


def test_padding_is_white_and_center_crop_keeps_everything(converted):
    out, _ = converted
    images, _, _ = _all_batches(out / "data.beton", image_size=32, batch_size=16, num_workers=1)
    wide = images[GOOD_KEYS.index("wide")].int()
    assert (wide[:, 2, 16] > 235).all()  # above the bar: white padding
    assert wide[0, 16, 1] > 200 and wide[1:, 16, 1].max() < 70  # the bar's left end survived the crop
    alpha = images[GOOD_KEYS.index("alpha")].int()
    assert (alpha[:, 2, 2] > 235).all()  # transparent corner composited on white
    assert alpha[2, 16, 16] > 200 and alpha[:2, 16, 16].max() < 70


def test_resume_indices_start_midway(converted):
    out, _ = converted
    _, rows, _ = _all_batches(out / "data.beton", image_size=16, batch_size=4, num_workers=1, indices=range(7, 10))
    assert rows.tolist() == [7, 8, 9]


def test_damaged_beton_is_named(converted, tmp_path):
    out, _ = converted
    data = (out / "data.beton").read_bytes()
    for name, content in [("cut.beton", data[:-30]), ("short.beton", data[:2000]), ("empty.beton", b"")]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=name):
            image_loader(tmp_path / name, image_size=16, batch_size=4, num_workers=1)
    with pytest.raises(FileNotFoundError, match="missing.beton"):
        image_loader(tmp_path / "missing.beton", image_size=16, batch_size=4, num_workers=1)


def test_duplicate_key_fails_without_output(tmp_path):
    key, data, ext, caption, meta = SAMPLES[0]
    for folder in ("a", "b"):
        with ShardWriter(tmp_path / folder) as writer:
            writer.write(Sample(key, data, ext, caption, meta))
    with pytest.raises(ValueError, match="duplicate key 'wide'"):
        write_beton([tmp_path / "a", tmp_path / "b"], tmp_path / "x.beton", tmp_path / "x.parquet")
    assert not (tmp_path / "x.beton").exists() and not (tmp_path / "x.parquet").exists()


def test_nothing_decodable_is_an_error(tmp_path):
    with ShardWriter(tmp_path / "a") as writer:
        writer.write(Sample("bad", b"junk", "png", "nothing", {}))
    with pytest.raises(ValueError, match="no decodable images"):
        write_beton([tmp_path / "a"], tmp_path / "x.beton", tmp_path / "x.parquet")
    assert not np.any([p.suffix == ".beton" for p in tmp_path.iterdir()])


@pytest.mark.timeout(120)
def test_failure_inside_ffcv_workers_raises_instead_of_hanging(tmp_path, monkeypatch):
    def broken(image, max_resolution):
        raise OSError("disk went away")

    monkeypatch.setattr(beton, "square_on_white", broken)  # the ffcv workers fork with this in place
    folders = write_test_shards(tmp_path)
    with pytest.raises(OSError, match="10 images failed"):
        write_beton(folders, tmp_path / "x.beton", tmp_path / "x.parquet")
    assert not (tmp_path / "x.beton").exists() and not (tmp_path / "x.parquet").exists()


def test_text_field_and_verification_pass(converted):
    out, _ = converted
    table = pd.read_parquet(out / "table.parquet")
    texts = beton.read_texts(out / "data.beton")
    assert [t["key"] for t in texts] == table["key"].tolist()
    assert [t["caption"] for t in texts] == table["caption"].tolist()
    assert beton.verify_beton(out / "data.beton", out / "table.parquet", num_workers=1) == {"verified": len(table)}


def test_verification_catches_a_table_that_does_not_match(converted, tmp_path):
    out, _ = converted
    table = pd.read_parquet(out / "table.parquet")
    table.iloc[:-1].to_parquet(tmp_path / "short.parquet")
    with pytest.raises(ValueError, match="verification failed"):
        beton.verify_beton(out / "data.beton", tmp_path / "short.parquet", num_workers=1)
    swapped = table.copy()
    swapped.loc[0, "caption"] = "something else"
    swapped.to_parquet(tmp_path / "swapped.parquet")
    with pytest.raises(ValueError, match="holds"):
        beton.verify_beton(out / "data.beton", tmp_path / "swapped.parquet", num_workers=1)


def test_raw_storage_keeps_pixels_exactly(tmp_path):
    folders = write_test_shards(tmp_path)
    write_beton(folders, tmp_path / "raw.beton", tmp_path / "raw.parquet", max_resolution=64, write_mode="raw",
                num_workers=1)  # fmt: skip
    write_beton(folders, tmp_path / "jpg.beton", tmp_path / "jpg.parquet", max_resolution=64, num_workers=1)
    raw, _, _ = _all_batches(tmp_path / "raw.beton", image_size=64, batch_size=8, num_workers=1)
    jpg, _, _ = _all_batches(tmp_path / "jpg.beton", image_size=64, batch_size=8, num_workers=1)
    assert raw.shape == jpg.shape and not torch.equal(raw, jpg)  # JPEG is lossy, raw is not
    from ffcv.fields.rgb_image import IMAGE_MODES

    for name, mode in (("raw", "raw"), ("jpg", "jpg")):
        modes = beton._field_metadata(Reader(str(tmp_path / f"{name}.beton")), "image")["mode"]
        assert (modes == IMAGE_MODES[mode]).all()
    with pytest.raises(ValueError, match="write_mode"):
        write_beton(folders, tmp_path / "x.beton", tmp_path / "x.parquet", write_mode="png")
