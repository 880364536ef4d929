import json

import numpy as np
import pytest

from vlalign.store.embeddings import EmbeddingWriter, open_embeddings

DIM = 6
META = {"spec": "test-encoder", "pooling": "cls"}


def _features(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def _write(out_dir, features, keys, rows_per_part=4, step=3):
    writer = EmbeddingWriter(out_dir, DIM, rows_per_part=rows_per_part, meta=META)
    for start in range(0, len(features), step):
        writer.append(features[start:start + step], keys[start:start + step])
    return writer.close()


def test_round_trip_across_parts(tmp_path):
    features, keys = _features(10), [f"k{i}" for i in range(10)]
    meta = _write(tmp_path / "emb", features, keys)

    assert [p["rows"] for p in meta["parts"]] == [4, 4, 2]
    store = open_embeddings(tmp_path / "emb")
    assert (len(store), store.dim, store.keys) == (10, DIM, keys)
    assert store.meta["spec"] == "test-encoder" and store.meta["dtype"] == "float16"
    halves = features.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(store.to_numpy(), halves)
    rows = np.array([9, 0, 4, 3, 4])
    np.testing.assert_array_equal(store.read(rows), halves[rows])
    assert store.read(rows).dtype == np.float32
    with pytest.raises(IndexError):
        store.read([10])
    # Writing files are gone once the store is complete.
    assert sorted(p.name for p in (tmp_path / "emb").iterdir()) == [
        "index.parquet", "meta.json", "part-00000.npy", "part-00001.npy", "part-00002.npy",
    ]


def test_empty_store(tmp_path):
    EmbeddingWriter(tmp_path / "emb", DIM, meta=META).close()
    store = open_embeddings(tmp_path / "emb")
    assert len(store) == 0 and store.to_numpy().shape == (0, DIM)


def test_unfinished_store_is_refused(tmp_path):
    writer = EmbeddingWriter(tmp_path / "emb", DIM, rows_per_part=4, meta=META)
    writer.append(_features(5), [str(i) for i in range(5)])  # one part on disk, never closed
    with pytest.raises(FileNotFoundError, match="emb"):
        open_embeddings(tmp_path / "emb")


@pytest.mark.parametrize("bad", [np.zeros((4, DIM + 1), np.float16), np.zeros((4, DIM), np.float32)])
def test_damaged_part_is_named(tmp_path, bad):
    _write(tmp_path / "emb", _features(10), [str(i) for i in range(10)])
    np.save(tmp_path / "emb" / "part-00001.npy", bad)
    with pytest.raises(ValueError, match="part-00001.npy"):
        open_embeddings(tmp_path / "emb")


def test_resume_continues_after_last_finished_part(tmp_path):
    features, keys = _features(10), [f"k{i}" for i in range(10)]
    killed = EmbeddingWriter(tmp_path / "emb", DIM, rows_per_part=4, meta=META)
    killed.append(features[:9], keys[:9])  # parts 0 and 1 finished, one row only buffered
    (tmp_path / "emb" / ".part-00002.npy.x.part").write_bytes(b"half written")

    resumed = EmbeddingWriter(tmp_path / "emb", DIM, rows_per_part=4, meta=META, resume=True)
    assert resumed.rows_done == 8
    assert not (tmp_path / "emb" / ".part-00002.npy.x.part").exists()
    resumed.append(features[8:], keys[8:])
    resumed.close()

    store = open_embeddings(tmp_path / "emb")
    assert store.keys == keys
    np.testing.assert_array_equal(store.to_numpy(), features.astype(np.float16).astype(np.float32))


def test_resume_with_other_settings_is_refused(tmp_path):
    EmbeddingWriter(tmp_path / "emb", DIM, rows_per_part=4, meta=META).append(_features(4), list("abcd"))
    with pytest.raises(ValueError, match="other settings"):
        EmbeddingWriter(tmp_path / "emb", DIM, rows_per_part=4, meta={**META, "spec": "other"}, resume=True)


def test_fresh_start_clears_only_store_files(tmp_path):
    _write(tmp_path / "emb", _features(10), [str(i) for i in range(10)])
    (tmp_path / "emb" / "notes.txt").write_text("keep me")
    writer = EmbeddingWriter(tmp_path / "emb", DIM, rows_per_part=4, meta=META)
    assert writer.rows_done == 0
    assert sorted(p.name for p in (tmp_path / "emb").iterdir()) == ["notes.txt"]


def test_rejects_bad_input(tmp_path):
    writer = EmbeddingWriter(tmp_path / "emb", DIM, meta=META)
    with pytest.raises(ValueError, match="shape"):
        writer.append(np.zeros((2, DIM + 1)), ["a", "b"])
    with pytest.raises(ValueError, match="keys"):
        writer.append(np.zeros((2, DIM)), ["a"])
    with pytest.raises(ValueError, match="float16"):
        writer.append(np.full((1, DIM), 1e6), ["a"])
    with pytest.raises(ValueError, match="dim"):
        EmbeddingWriter(tmp_path / "other", DIM, meta={"dim": DIM + 1})


def test_meta_records_encoder_description(tmp_path):
    _write(tmp_path / "emb", _features(3), ["a", "b", "c"])
    meta = json.loads((tmp_path / "emb" / "meta.json").read_text())
    assert meta["pooling"] == "cls" and meta["count"] == 3 and meta["dim"] == DIM
