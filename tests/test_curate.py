"""The flat-config curate stage (run_curate): measure, decide, report and shards in one call."""

import pandas as pd
from curate_fixtures import POOL, write_shards

from vlalign.curate.run import flat_config_filters, run_curate
from vlalign.data.shards import iter_samples, shard_paths

CURATE = {"min_words": 2, "min_chars": 5, "max_words": 77, "min_side": 32, "max_aspect_ratio": 3.0, "dedup_exact": True}


def test_flat_config_maps_onto_caption_image_and_exact_dedup_filters():
    filters = {f["name"]: f for f in flat_config_filters({**CURATE, "dedup_exact": False})}
    assert filters["caption"]["min_words"] == 2 and not filters["caption"]["drop_boilerplate"]
    assert filters["image"]["max_aspect_ratio"] == 3.0
    assert filters["dedup"] == {"name": "dedup", "exact": False, "near": False}


def test_run_curate_writes_kept_shards_decisions_and_report(tmp_path):
    first = dict(list(POOL.items())[:8])
    rest = {k: v for k, v in POOL.items() if k not in first}
    folders = [write_shards(tmp_path / "a", first, "a"), write_shards(tmp_path / "b", rest, "b")]  # two sources
    summary = run_curate(folders, tmp_path / "pool", CURATE, 4)
    decisions = pd.read_parquet(tmp_path / "pool" / "decisions.parquet")
    kept = list(iter_samples(shard_paths(tmp_path / "pool" / "shards")))
    assert summary["samples"] == len(POOL) == len(decisions)
    assert summary["kept"] == len(kept) == decisions.kept.sum() == len(POOL) - 6
    assert summary["dropped_by.caption"] == 2  # "x" and the one-word file name
    assert summary["dropped_by.image"] == 3  # tiny, wide, broken
    assert summary["dropped_by.dedup"] == 1  # the byte-identical copy (near duplicates are not checked)
    assert [s.key for s in kept] == list(decisions.loc[decisions.kept, "key"])
    for name in ("filters.png", "concepts.png", "examples.png"):
        assert (tmp_path / "pool" / name).stat().st_size > 20_000, name
    assert "| dedup" in (tmp_path / "pool" / "curation.md").read_text()
