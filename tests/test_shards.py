"""Our webdataset shards: written with tarfile alone (no torch), read by the webdataset library as its own, and
put back in input order after a download wrote them in the order rows were fetched."""

from __future__ import annotations

import json

import pytest

from vlalign.data.shards import Sample, ShardWriter, iter_samples, reorder_shard

SAMPLES = [Sample(f"k{i}", bytes([i]) * (10 + i), "jpg", f"caption {i}", {"row": i}) for i in range(7)]


def test_the_webdataset_library_reads_our_shards(tmp_path):
    webdataset = pytest.importorskip("webdataset")
    with ShardWriter(tmp_path, 4) as writer:
        for sample in SAMPLES:
            writer.write(sample)
    read = list(webdataset.WebDataset([str(p) for p in writer.paths], shardshuffle=False))
    assert [r["__key__"] for r in read] == [s.key for s in SAMPLES]
    assert [r["jpg"] for r in read] == [s.image for s in SAMPLES]
    assert [r["txt"].decode() for r in read] == [s.caption for s in SAMPLES]
    assert [json.loads(r["json"]) for r in read] == [s.meta for s in SAMPLES]


def test_the_same_samples_make_the_same_shard_byte_for_byte(tmp_path):
    for folder in ("a", "b"):
        with ShardWriter(tmp_path / folder, 10) as writer:
            for sample in SAMPLES:
                writer.write(sample)
    assert (tmp_path / "a" / "shard-000000.tar").read_bytes() == (tmp_path / "b" / "shard-000000.tar").read_bytes()


def test_a_shard_written_out_of_order_is_put_in_order(tmp_path):
    with ShardWriter(tmp_path / "ordered", 10) as writer:
        for sample in SAMPLES:
            writer.write(sample)
    with ShardWriter(tmp_path / "fetched", 10) as writer:
        for sample in [SAMPLES[i] for i in (3, 0, 6, 1, 5, 2, 4)]:
            writer.write(sample)
    shard = tmp_path / "fetched" / "shard-000000.tar"
    reorder_shard(shard, [s.key for s in SAMPLES])
    assert shard.read_bytes() == (tmp_path / "ordered" / "shard-000000.tar").read_bytes()
    assert [s.key for s in iter_samples([shard])] == [s.key for s in SAMPLES]
    with pytest.raises(ValueError, match="shard-000000.tar: holds samples"):
        reorder_shard(shard, [s.key for s in SAMPLES[:-1]])
