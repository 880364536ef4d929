"""The planted-truth audit: its numbers on a hand-built pool whose truth is known, and end to end through the real
planted download, measure, select and audit stages."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from test_planted import base_samples, write_download

from vlalign.cli import main
from vlalign.curate.audit import (
    auc_interval,
    audit_metrics,
    audit_pool,
    planted_frame,
    rate_interval,
    roc_auc,
    write_audit,
)
from vlalign.curate.decide import decide
from vlalign.curate.measure import measure_pool
from vlalign.data.download import run_download
from vlalign.data.planted import TRUTH_COLUMNS


def phash(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()[:16]  # ~32 bits apart from any other i


def hand_built_pool() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(measurements, truth) of 20 clean samples, 4 shuffled captions, 3 exact and 3 near copies, 2 eval copies and
    2 text images: the filters below remove exactly the planted noise."""
    rows, truth = [], []

    def add(key, kind, of=None, sha=None, code=None, score=0.6, eval_exact=False, eval_hamming=np.nan, overlap=0.0,
            edit=None):
        rows.append({"key": key, "image_sha256": sha or f"sha-{key}", "phash": code or phash(len(rows)),
                     "alignment_score": score, "eval_exact": eval_exact, "eval_hamming": eval_hamming,
                     "caption_ocr_overlap": overlap, "ocr_seconds": 0.1})  # fmt: skip
        truth.append({"key": key, "kind": kind, "of": of, "of_source": "base" if of else None,
                      "edit": edit, "edit_amount": None})  # fmt: skip

    for i in range(20):
        add(f"c{i:02d}", "clean", score=0.5 + i / 100)
    for i in range(4):
        add(f"s{i}", "shuffled_caption", of=f"s{(i + 1) % 4}", score=0.1 + i / 100)
    for i in range(3):
        add(f"c{i:02d}~exact_copy", "exact_copy", of=f"c{i:02d}", sha=f"sha-c{i:02d}", code=rows[i]["phash"])
    for i in range(3, 6):
        add(f"c{i:02d}~near_copy", "near_copy", of=f"c{i:02d}", code=rows[i]["phash"], edit="resize")
    add("e0~eval_copy", "eval_copy", of="e0", eval_exact=True, eval_hamming=0.0)
    add("e1~eval_copy", "eval_copy", of="e1", eval_hamming=2.0, edit="jpeg_quality")
    for i in range(6, 8):
        add(f"c{i:02d}~text_in_image", "text_in_image", of=f"c{i:02d}", overlap=1.0)
    add("web0", None)  # a sample of an unplanted source
    truth.pop()
    return pd.DataFrame(rows), pd.DataFrame(truth).astype(TRUTH_COLUMNS)


FILTERS = [{"name": "dedup"}, {"name": "decontaminate"}, {"name": "text_spotting"},
           {"name": "alignment", "min_score": 0.3}]  # fmt: skip


def settings(filters=FILTERS, ocr="all", **overrides) -> dict:
    return {"filters": filters, "ocr": ocr, "planted": {"planted": {"from": "base", "eval_from": ["base"]}},
            "curate_sources": ["planted", "web"], "eval_sources": ["base"], "alignment": {"top_fraction": 0.8},
            "decontaminate": {}, "text_spotting": {}, "resamples": 1000, **overrides}  # fmt: skip


def test_roc_auc_of_a_perfect_a_reversed_a_tied_and_a_random_score():
    shuffled = np.array([True] * 5 + [False] * 20)
    assert roc_auc(np.r_[np.zeros(5), np.ones(20)], shuffled) == 1.0  # clean pairs all score above
    assert roc_auc(np.r_[np.ones(5), np.zeros(20)], shuffled) == 0.0
    assert roc_auc(np.ones(25), shuffled) == 0.5
    rng = np.random.default_rng(0)
    assert abs(roc_auc(rng.random(4000), rng.random(4000) < 0.1) - 0.5) < 0.03
    assert np.isnan(roc_auc(np.ones(3), np.zeros(3, dtype=bool)))


def test_bootstrap_intervals_are_fixed_and_hold_the_estimate():
    hits = np.array([True] * 30 + [False] * 10)
    interval = rate_interval(hits, 1000)
    assert interval == rate_interval(hits, 1000)
    assert interval[0] < 0.75 < interval[1] and 0.55 < interval[0] and interval[1] < 0.9
    assert rate_interval(np.array([], dtype=bool), 1000) is None
    rng = np.random.default_rng(1)
    score, shuffled = rng.random(400), rng.random(400) < 0.2
    low, high = auc_interval(score, shuffled, 1000)
    assert low < roc_auc(score, shuffled) < high and high - low < 0.2
    assert auc_interval(score, np.zeros(400, dtype=bool), 100) is None  # one class: no AUC


def test_filters_that_remove_exactly_the_planted_noise_score_recall_and_precision_one():
    measured, truth = hand_built_pool()
    frame = planted_frame(decide(measured, FILTERS), truth)
    audit = audit_pool(frame, settings(), "clean_cut")
    for kind in ("shuffled_caption", "exact_copy", "near_copy", "eval_copy", "text_in_image"):
        assert audit["recall"][kind]["recall"] == 1.0, kind
        assert audit["recall"][kind]["interval"] == [1.0, 1.0], kind
    alignment = audit["alignment"]
    assert alignment["auc"] == 1.0 and alignment["precision"] == 1.0 and alignment["clean_removed_rate"] == 0.0
    assert alignment["threshold"].startswith("the pool's alignment verdicts")
    assert audit["copies"]["exact_copy"]["removed_by"] == {"dedup": 3} and audit["copies"]["clean_removed"] == {
        "dedup": {"removed": 0, "clean": 20, "rate": 0.0}}  # fmt: skip
    assert audit["decontamination"]["removed_by"] == {"decontaminate": 2}
    assert audit["decontamination"]["flagged_by_decontaminate"] == 1.0
    removals = audit["removals"]
    assert removals["dedup"]["removed"]["exact_copy"] == 3 and removals["dedup"]["removed"]["near_copy"] == 3
    assert {name: entry["target_share"] for name, entry in removals.items()} == {
        "dedup": 1.0, "decontaminate": 1.0, "text_spotting": 1.0, "alignment": 1.0}  # fmt: skip
    assert audit["kept"] == {"clean": 20, "shuffled_caption": 0, "exact_copy": 0, "near_copy": 0,
                             "text_in_image": 0, "eval_copy": 0, "unplanted": 1}  # fmt: skip
    assert audit["warnings"] == []


def test_misses_and_false_removals_are_counted():
    measured, truth = hand_built_pool()
    measured.loc[measured["key"] == "c05~near_copy", "phash"] = phash(999)  # an edit pHash does not survive
    measured.loc[measured["key"] == "c10", "image_sha256"] = "sha-c09"  # a duplicate `from` already held
    measured.loc[measured["key"] == "e1~eval_copy", "eval_hamming"] = 9.0
    audit = audit_pool(planted_frame(decide(measured, FILTERS), truth), settings(), "misses")
    near = audit["copies"]["near_copy"]
    assert near["recall"] == pytest.approx(2 / 3) and near["both_kept"] == 1
    assert near["by_edit"]["resize"]["n"] == 3
    assert audit["copies"]["clean_removed"]["dedup"]["removed"] == 1
    assert audit["recall"]["eval_copy"]["recall"] == 0.5
    assert audit["decontamination"]["exact"]["recall"] == 1.0 and audit["decontamination"]["near"]["recall"] == 0.0
    assert audit["removals"]["dedup"]["target_share"] == pytest.approx(5 / 6)


def test_a_pool_without_the_filters_is_audited_at_the_cut_they_would_make():
    measured, truth = hand_built_pool()
    scores = measured[["key", "alignment_score"]]
    frame = planted_frame(decide(measured.drop(columns="alignment_score"), [{"name": "dedup"}]), truth, scores)
    # 35 scored samples; keeping the best 31 cuts the 4 shuffled ones.
    audit = audit_pool(frame, settings([{"name": "dedup"}], alignment={"top_fraction": 31 / 35}), "raw")
    alignment = audit["alignment"]
    assert alignment["threshold"].startswith("the cut top_fraction")
    assert (alignment["precision"], alignment["recall"], alignment["removed"]) == (1.0, 1.0, 4)
    assert audit["recall"]["text_in_image"]["recall"] == 1.0  # the rule's verdict, though the pool lacks it
    assert audit["recall"]["eval_copy"]["recall"] == 0.0  # the pool keeps them ...
    assert audit["decontamination"]["flagged_by_decontaminate"] == 1.0  # ... which decontamination would flag
    assert list(audit["removals"]) == ["dedup"]


def test_what_was_not_measured_says_why():
    measured, truth = hand_built_pool()
    frame = planted_frame(decide(measured.drop(columns="alignment_score"), [{"name": "dedup"}]), truth)
    audit = audit_pool(frame, settings([{"name": "dedup"}], ocr="off", curate_sources=["planted", "base"],
                                       eval_sources=[]), "raw")  # fmt: skip
    assert audit["alignment"] == {"measured": False, "note": "not measured: no alignment scores (no pool applies "
                                  "the alignment filter)"}  # fmt: skip
    assert audit["text_spotting"] == {"measured": False, "note": "not measured: curate.measure.ocr is off"}
    assert audit["recall"]["text_in_image"]["recall"] is None and audit["recall"]["shuffled_caption"]["n"] is None
    assert len(audit["warnings"]) == 2
    assert "planted and its `from`, base, are both in curate.sources" in audit["warnings"][0]
    assert "base is not an evaluation set" in audit["warnings"][1]


def test_the_audit_is_written_as_json_markdown_and_a_figure(tmp_path):
    measured, truth = hand_built_pool()
    frame = planted_frame(decide(measured, FILTERS), truth)
    audit = audit_pool(frame, settings(), "clean_cut")
    paths = write_audit(audit, frame, tmp_path)
    assert json.loads(paths["json"].read_text()) == json.loads(json.dumps(audit))
    markdown = paths["markdown"].read_text()
    assert markdown.startswith("# Planted-truth audit of pool `clean_cut`")
    assert "## What each filter removed" in markdown
    assert paths["figure"].read_bytes().startswith(b"\x89PNG")
    metrics = audit_metrics(audit)
    assert metrics["alignment_auc"] == 1.0 and metrics["recall_exact_copy"] == 1.0 and metrics["samples_clean"] == 20
    assert not any("@" in name for name in metrics)


def test_end_to_end_a_planted_source_through_measure_select_and_audit(tmp_path):
    """The real stages on a small planted source: exact copies and exact eval copies are always caught; OCR reads
    the text images."""
    downloads = tmp_path / "download"
    (downloads / "base" / "part-0000").mkdir(parents=True)
    write_download(downloads / "base" / "part-0000", base_samples(40, 10))
    planted = downloads / "planted" / "part-0000"
    run_download("planted", {"type": "planted", "from": "base", "eval_from": ["base"], "shuffled_captions": 0.1,
                             "exact_copies": 0.1, "near_copies": 0.1, "text_in_image": 0.1, "eval_copies": 0.2},
                 planted, None, 16)  # fmt: skip
    measured = measure_pool([planted / "train"], [downloads / "base" / "part-0000" / "eval"],
                            {"ocr": "all", "workers": 1}, progress=False)  # fmt: skip
    measured.to_parquet(tmp_path / "measurements.parquet")
    tracking = {"experiment": "audit", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    filters = [{"name": "dedup"}, {"name": "decontaminate"}, {"name": "text_spotting"}]
    assert main(["select", "--settings", json.dumps({**tracking, "filters": filters}), "--pool", "basic",
                 "--measurements", str(tmp_path / "measurements.parquet"), "--inputs", str(planted / "train"),
                 "--out", str(tmp_path / "pool")]) == 0  # fmt: skip
    assert main(["audit", "--settings", json.dumps({**tracking, **settings(filters, curate_sources=["planted"])}),
                 "--pool", "basic", "--decisions", str(tmp_path / "pool" / "decisions.parquet"),
                 "--planted", str(planted), "--out", str(tmp_path / "audit")]) == 0  # fmt: skip
    audit = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert audit["samples"]["exact_copy"] == 4 and audit["samples"]["eval_copy"] == 8
    assert audit["recall"]["exact_copy"]["recall"] == 1.0
    assert audit["decontamination"]["exact"]["recall"] == 1.0
    assert audit["text_spotting"]["measured"] and audit["recall"]["text_in_image"]["recall"] >= 0.75
    assert audit["copies"]["clean_removed"]["dedup"]["removed"] == 0
    assert (tmp_path / "audit" / "audit.png").is_file() and (tmp_path / "audit" / "audit.md").is_file()
