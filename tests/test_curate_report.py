"""Curation report files and curated shards of a pool decided with every filter."""

import pandas as pd
import pytest
from curate_fixtures import EVAL, POOL, write_shards
from PIL import Image

from vlalign.curate.decide import decide
from vlalign.curate.measure import measure_pool
from vlalign.curate.report import write_curation_report
from vlalign.curate.shards import write_curated_shards
from vlalign.data.shards import iter_samples, shard_paths

FILTERS = [
    {"name": "caption"}, {"name": "language", "min_confidence": 0.2}, {"name": "image", "min_side": 32},
    {"name": "dedup"}, {"name": "decontaminate"}, {"name": "text_spotting"},
    {"name": "alignment", "top_fraction": 0.9, "run": "basic"}, {"name": "balance", "cap": 1, "seed": 0},
]  # fmt: skip


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    root = tmp_path_factory.mktemp("curate-report")
    pool, evaluation = write_shards(root / "pool", POOL, "web"), write_shards(root / "eval", EVAL, "evalset")
    measured = measure_pool([pool], [evaluation], {"ocr": "survivors", "workers": 1, "filters": FILTERS},
                            progress=False)  # fmt: skip
    # The alignment stage supplies this column; here the caption length stands in for it.
    measured["alignment_score"] = measured["n_chars"] / 100
    decisions = decide(measured, FILTERS)
    out = root / "report"
    summary = write_curation_report(decisions, [pool], out, FILTERS)
    return decisions, summary, out, pool, measured


def test_report_tables_count_every_filter_and_reason(curated):
    decisions, summary, out, _, _ = curated
    counts = pd.read_csv(out / "counts.csv")
    assert counts["filter"].tolist() == [f["name"] for f in FILTERS]
    assert counts["dropped"].sum() == summary["dropped"] == (~decisions["kept"]).sum()
    assert counts["remaining"].iloc[-1] == summary["kept"]
    reasons = pd.read_csv(out / "reasons.csv")
    assert reasons["total"].sum() == summary["dropped"]
    assert set(pd.read_csv(out / "contamination.csv")["key"]) == {"leaked", "leaked_near"}
    markdown = (out / "curation.md").read_text()
    assert "# Curation report" in markdown and "| caption" in markdown and "run `basic`" in markdown
    assert "ms per image" in markdown  # the OCR cost
    assert summary["dropped_by.caption"] == 5 and summary["contaminating"] == 2
    assert summary["ocr_images"] == int(decisions["ocr_seconds"].notna().sum()) > 0


@pytest.mark.parametrize("name, min_size", [("filters.png", (1200, 800)), ("concepts.png", (1200, 400)),
                                            ("examples.png", (1200, 600))])  # fmt: skip
def test_report_figures_are_real_images(curated, name, min_size):
    _, _, out, _, _ = curated
    with Image.open(out / name) as img:
        assert img.size[0] >= min_size[0] and img.size[1] >= min_size[1]
        assert len(img.convert("L").getcolors(1 << 16)) > 50  # not a blank canvas


def test_curated_shards_hold_exactly_the_kept_samples(curated, tmp_path):
    decisions, _, _, pool, _ = curated
    written = write_curated_shards(decisions, [pool], tmp_path / "shards", samples_per_shard=2)
    keys = [s.key for s in iter_samples(shard_paths(tmp_path / "shards"))]
    assert keys == list(decisions.loc[decisions["kept"], "key"]) and written == len(keys)


def test_a_pool_without_filters_keeps_everything_and_still_reports(curated, tmp_path):
    _, _, _, pool, measured = curated
    summary = write_curation_report(decide(measured, []), [pool], tmp_path, [])
    assert summary["kept"] == len(POOL) and summary["contaminating_kept"] == 2
    assert "No filter enabled" in (tmp_path / "curation.md").read_text()
    assert (tmp_path / "examples.png").stat().st_size > 20_000
