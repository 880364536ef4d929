import json

import numpy as np
import pytest

from vlalign.io import work_dir
from vlalign.store.embeddings import EmbeddingWriter, gather_embeddings, open_embeddings

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
    half_written = work_dir(tmp_path / "emb") / ".part-00002.npy.x.part"
    half_written.write_bytes(b"half written")
    assert not (tmp_path / "emb").exists()  # nothing at the destination until complete

    resumed = EmbeddingWriter(tmp_path / "emb", DIM, rows_per_part=4, meta=META, resume=True)
    assert resumed.rows_done == 8
    assert not half_written.exists()
    resumed.append(features[8:], keys[8:])
    resumed.close()

    store = open_embeddings(tmp_path / "emb")
    assert store.keys == keys
    np.testing.assert_array_equal(store.to_numpy(), features.astype(np.float16).astype(np.float32))
    assert not work_dir(tmp_path / "emb").exists()


def test_resume_survives_the_destination_being_cleared(tmp_path):
    """Snakemake deletes a job's declared output before re-running it; the work folder is beside it."""
    features, keys = _features(10), [f"k{i}" for i in range(10)]
    EmbeddingWriter(tmp_path / "emb", DIM, rows_per_part=4, meta=META).append(features[:8], keys[:8])
    (tmp_path / "emb").mkdir()  # an empty destination, as a workflow manager may leave it
    resumed = EmbeddingWriter(tmp_path / "emb", DIM, rows_per_part=4, meta=META, resume=True)
    assert resumed.rows_done == 8
    resumed.append(features[8:], keys[8:])
    resumed.close()
    assert open_embeddings(tmp_path / "emb").keys == keys


def test_resume_with_other_settings_is_refused(tmp_path):
    EmbeddingWriter(tmp_path / "emb", DIM, rows_per_part=4, meta=META).append(_features(4), list("abcd"))
    with pytest.raises(ValueError, match="other settings"):
        EmbeddingWriter(tmp_path / "emb", DIM, rows_per_part=4, meta={**META, "spec": "other"}, resume=True)


def test_fresh_start_discards_unfinished_work_and_keeps_the_old_store_until_done(tmp_path):
    _write(tmp_path / "emb", _features(10), [str(i) for i in range(10)])
    EmbeddingWriter(tmp_path / "emb", DIM, rows_per_part=4, meta=META).append(_features(4), list("abcd"))
    writer = EmbeddingWriter(tmp_path / "emb", DIM, rows_per_part=4, meta=META)
    assert writer.rows_done == 0 and list(writer.work_dir.iterdir()) == []
    assert len(open_embeddings(tmp_path / "emb")) == 10
    writer.append(_features(3, seed=1), list("xyz"))
    writer.close()
    assert open_embeddings(tmp_path / "emb").keys == list("xyz")


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


def _part_store(out_dir, features, keys, start, stop, meta=META):
    writer = EmbeddingWriter(out_dir, DIM, rows_per_part=2, meta={**meta, "rows": [start, stop], "dataset_rows": 10})
    writer.append(features[start:stop], keys[start:stop])
    return writer.close()


def test_gather_joins_parts_into_one_store(tmp_path):
    features, keys = _features(10), [f"k{i}" for i in range(10)]
    bounds = [(0, 3), (3, 6), (6, 10)]
    parts = [tmp_path / "parts" / str(i) for i in range(3)]
    for folder, (start, stop) in zip(parts, bounds):
        _part_store(folder, features, keys, start, stop)
    meta = gather_embeddings(parts, tmp_path / "all")
    store = open_embeddings(tmp_path / "all")
    assert store.keys == keys and meta["count"] == 10 and meta["rows"] == [0, 10] and meta["gathered_from"] == 3
    np.testing.assert_array_equal(store.to_numpy(), features.astype(np.float16).astype(np.float32))
    # Hard links: the gathered store shares the parts' bytes.
    first = tmp_path / "parts" / "0" / "part-00000.npy"
    assert first.stat().st_ino == (tmp_path / "all" / "part-00000.npy").stat().st_ino


def test_gather_refuses_gaps_overlaps_and_mixed_encoders(tmp_path):
    features, keys = _features(10), [f"k{i}" for i in range(10)]
    a, b, c, other = (tmp_path / n for n in ("a", "b", "c", "other"))
    _part_store(a, features, keys, 0, 5)
    _part_store(b, features, keys, 6, 10)
    _part_store(c, features, keys, 5, 10)
    _part_store(other, features, keys, 5, 10, meta={**META, "spec": "another-encoder"})
    with pytest.raises(ValueError, match=r"b: holds rows \[6, 10\].*starting at row 5"):
        gather_embeddings([a, b], tmp_path / "out")
    with pytest.raises(ValueError, match="cover rows 0..5"):
        gather_embeddings([a], tmp_path / "out")
    with pytest.raises(ValueError, match="other: differs from .* in spec"):
        gather_embeddings([a, other], tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="missing"):
        gather_embeddings([a, tmp_path / "missing"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    gather_embeddings([a, c], tmp_path / "out")
    assert open_embeddings(tmp_path / "out").keys == keys
