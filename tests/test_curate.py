import pandas as pd

from vlalign.curate.filters import FILTERS, decide, measure
from vlalign.curate.run import run_curate
from vlalign.data.shards import iter_samples, shard_paths
from vlalign.download import run_download

CURATE = {"min_words": 2, "min_chars": 5, "max_words": 77, "min_side": 32, "max_aspect_ratio": 3.0, "dedup_exact": True}


def frame(**columns):
    base = {"key": ["a"], "caption": ["a red circle"], "width": [100], "height": [100], "image_sha256": ["h1"]}
    base.update(columns)
    return pd.DataFrame(base)


def test_first_failing_filter_is_the_reason_and_every_verdict_is_kept():
    df = pd.DataFrame({
        "key": ["ok", "short", "tiny", "wide", "dup"],
        "caption": ["a red circle", "x", "a red circle", "a red circle", "a red circle"],
        "width": [100, 10, 10, 400, 100],
        "height": [100, 10, 10, 100, 100],
        "image_sha256": ["h1", "h2", "h3", "h4", "h1"],
    })  # fmt: skip
    d = decide(measure(df), CURATE).set_index("key")
    assert d.loc["ok", "kept"] and d.loc["ok", "reason"] == ""
    assert d.loc["short", "reason"] == "min_words"
    assert not d.loc["short", "pass_min_side"]  # later filters still recorded
    assert d.loc["tiny", "reason"] == "min_side"
    assert d.loc["wide", "reason"] == "max_aspect_ratio" and d.loc["wide", "aspect_ratio"] == 4.0
    assert d.loc["dup", "reason"] == "exact_duplicate" and d.loc["dup", "duplicate_of"] == "ok"
    assert {f"pass_{f.name}" for f in FILTERS} <= set(d.columns)


def test_thresholds_can_be_reapplied_without_measuring_again():
    measured = measure(frame(caption=["two words"]))
    assert decide(measured, CURATE)["kept"].all()
    assert not decide(measured, {**CURATE, "min_words": 3})["kept"].any()
    assert decide(measure(frame(image_sha256=["h"])), {**CURATE, "dedup_exact": False})["kept"].all()


def test_run_curate_writes_kept_shards_and_decisions(deb_cache, tmp_path):
    src = {"package": None, "max_items": None, "per_class": None}
    run_download("tuxpaint", {**src, "type": "debian_tuxpaint", "eval_fraction": 0.2}, tmp_path / "t", deb_cache, 100)
    run_download("openclipart", {**src, "type": "debian_openclipart", "eval_fraction": 0}, tmp_path / "o", deb_cache, 100)
    summary = run_curate([tmp_path / "t" / "train", tmp_path / "o" / "train"], tmp_path / "pool", CURATE, 7)
    decisions = pd.read_parquet(tmp_path / "pool" / "decisions.parquet")
    kept = list(iter_samples(shard_paths(tmp_path / "pool" / "shards")))
    assert summary["samples"] == len(decisions) and summary["kept"] == len(kept) == decisions.kept.sum()
    assert summary["dropped_by.max_aspect_ratio"] == 16  # the thin openclipart images
    assert summary["dropped_by.min_words"] == 1  # the one-word title
    assert {s.key for s in kept} == set(decisions.loc[decisions.kept, "key"])
    assert (tmp_path / "pool" / "filters.png").stat().st_size > 10_000
