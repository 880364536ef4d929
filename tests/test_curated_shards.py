"""Curated shards a partition at a time (issue 16): the pool's kept samples, each written once, by the job of the
partition that holds it."""

from __future__ import annotations

import pandas as pd
import pytest
from curate_fixtures import POOL, write_shards

from vlalign.curate.shards import write_curated_shards
from vlalign.data.shards import iter_samples, shard_paths


def test_partitions_write_exactly_the_kept_samples_they_hold(tmp_path):
    keys = list(POOL)
    parts = {"a": keys[:4], "b": keys[4:8], "c": keys[8:]}
    folders = {name: write_shards(tmp_path / name, {k: POOL[k] for k in held}, "web") for name, held in parts.items()}
    kept = set(keys[1:4]) | set(keys[8:])  # nothing of partition b
    decisions = pd.DataFrame({"key": keys, "kept": [k in kept for k in keys]})
    written = {}
    for name, held in parts.items():
        out = tmp_path / "curated" / name
        count = write_curated_shards(decisions, [folders[name]], out, 2, set(held))
        found = [s.key for s in iter_samples(shard_paths(out, allow_empty=True))]
        assert count == len(found) and found == [k for k in held if k in kept]
        written[name] = found
    assert written["b"] == [] and sorted(sum(written.values(), [])) == sorted(kept)

    # A kept key that its partition's table lists but its shards lack: the decisions belong elsewhere.
    with pytest.raises(ValueError, match="1 kept samples are missing"):
        write_curated_shards(decisions, [folders["a"]], tmp_path / "wrong", 2, set(parts["a"]) | {keys[9]})
