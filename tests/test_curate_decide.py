"""decide(): each filter's verdict, order and reason semantics, set-level filters, balancing."""

import hashlib
import warnings

import numpy as np
import pandas as pd
import pytest

from vlalign.curate.decide import decide


def pool(n: int, **columns) -> pd.DataFrame:
    """n measured samples that pass every filter unless `columns` say otherwise."""
    base = {
        "key": [f"s{i:03d}" for i in range(n)], "source": "test", "caption": "a red circle",
        "n_words": 3, "n_chars": 12, "complexity": 2, "boilerplate": None, "url_like": False, "non_utf8": False,
        "language": "en", "language_confidence": 0.9, "decode_ok": True, "min_side": 100, "aspect_ratio": 1.0,
        "pixel_std": 40.0,
        "image_sha256": [f"h{i}" for i in range(n)],
        "phash": [hashlib.sha256(str(i).encode()).hexdigest()[:16] for i in range(n)],  # ~32 bits apart
        "eval_exact": False, "eval_hamming": 30.0, "caption_ocr_overlap": np.nan, "ocr_seconds": np.nan,
        "concepts": [[] for _ in range(n)],
    }  # fmt: skip
    frame = pd.DataFrame(base)
    for name, values in columns.items():
        frame[name] = values
    return frame


def by_key(decisions: pd.DataFrame) -> pd.DataFrame:
    return decisions.set_index("key")


def test_caption_checks_name_the_first_failing_one():
    m = pool(8, n_words=[3, 1, 3, 90, 3, 3, 3, 3], n_chars=[12, 12, 3, 400, 12, 12, 12, 12],
             complexity=[2, 2, 2, 2, 0, 2, 2, 2], boilerplate=[None] * 5 + ["stock photo", None, None],
             url_like=[False] * 6 + [True, False], non_utf8=[False] * 7 + [True])  # fmt: skip
    d = decide(m, [{"name": "caption"}])
    assert d["reason_detail"].tolist() == ["", "min_words", "min_chars", "max_words", "min_complexity",
                                           "boilerplate", "url_like", "non_utf8"]  # fmt: skip
    assert d["kept"].tolist() == [True] + [False] * 7
    relaxed = decide(m, [{"name": "caption", "min_complexity": 0, "drop_boilerplate": False, "drop_url_like": False,
                          "drop_non_utf8": False}])  # fmt: skip
    assert relaxed["kept"].tolist() == [True, False, False, False, True, True, True, True]


def test_language_and_image_verdicts():
    m = pool(7, language=["en", "de", "en", "en", "en", None, "en"],
             language_confidence=[0.9, 0.99, 0.3, 0.9, 0.9, 0, 0.9],
             decode_ok=[True, True, True, False, True, True, True], min_side=[100, 100, 100, np.nan, 10, 100, 100],
             pixel_std=[40, 40, 40, np.nan, 40, 40, 0.2])  # fmt: skip
    d = decide(m, [{"name": "language", "min_confidence": 0.5}, {"name": "image", "min_side": 32}])
    assert d["reason"].tolist() == ["", "language", "language", "image", "image", "language", "image"]
    assert d["reason_detail"].tolist() == ["", "language", "min_confidence", "decode", "min_side", "language", "blank"]
    multilingual = decide(m, [{"name": "language", "languages": ["en", "de"]}])
    assert multilingual["kept"].tolist() == [True, True, True, True, True, False, True]


def test_reason_is_the_first_failing_filter_in_the_order_given_and_all_verdicts_are_recorded():
    m = pool(3, n_words=[3, 1, 1], min_side=[100, 10, 100])
    caption_first = by_key(decide(m, [{"name": "caption"}, {"name": "image"}]))
    image_first = by_key(decide(m, [{"name": "image"}, {"name": "caption"}]))
    assert caption_first.loc["s001", "reason"] == "caption" and image_first.loc["s001", "reason"] == "image"
    assert not caption_first.loc["s001", "pass_image"]  # a per-sample filter judges every sample
    assert caption_first.loc["s002", "reason"] == image_first.loc["s002", "reason"] == "caption"
    assert caption_first.loc["s000", "kept"] and caption_first.loc["s000", "reason"] == ""


def test_disabled_filters_do_nothing_and_bad_specs_are_refused():
    m = pool(2, n_words=[3, 1])
    d = decide(m, [{"name": "caption", "enabled": False}])
    assert d["kept"].all() and "pass_caption" not in d
    with pytest.raises(ValueError, match="unknown curation filter 'colour'"):
        decide(m, [{"name": "colour"}])
    with pytest.raises(ValueError, match="min_word"):
        decide(m, [{"name": "caption", "min_word": 3}])
    with pytest.raises(ValueError, match="once"):
        decide(m, [{"name": "caption"}, {"name": "caption"}])
    with pytest.raises(ValueError, match="alignment_score"):
        decide(m, [{"name": "alignment", "top_fraction": 0.5}])


def test_dedup_keeps_the_first_survivor_of_each_group_and_names_it():
    m = pool(5, image_sha256=["a", "a", "a", "b", "c"], n_words=[1, 3, 3, 3, 3],
             phash=["0" * 16, "0" * 16, "0" * 16, "000000000000000f", "f" * 16])  # fmt: skip
    d = by_key(decide(m, [{"name": "caption"}, {"name": "dedup", "max_hamming": 4}]))
    # s000 left at the caption filter, so s001 is the first copy still in the pool.
    assert pd.isna(d.loc["s000", "pass_dedup"]) and d.loc["s001", "kept"]
    assert d.loc["s002", "reason_detail"] == "exact" and d.loc["s002", "dedup_of"] == "s001"
    assert d.loc["s003", "reason_detail"] == "near" and d.loc["s003", "dedup_of"] == "s001"  # 4 bits apart
    assert d.loc["s004", "kept"]
    strict = by_key(decide(m, [{"name": "caption"}, {"name": "dedup", "max_hamming": 3}]))
    assert strict.loc["s003", "kept"]
    exact_only = by_key(decide(m, [{"name": "caption"}, {"name": "dedup", "near": False}]))
    assert exact_only.loc["s003", "kept"] and not exact_only.loc["s002", "kept"]


def test_near_dedup_is_greedy_so_a_chain_keeps_both_ends():
    # s1 is 3 bits from s0 and from s2; s0 and s2 are 6 bits apart.
    m = pool(3, phash=["0000000000000000", "0000000000000007", "000000000000003f"])
    d = decide(m, [{"name": "dedup", "max_hamming": 4}])
    assert d["kept"].tolist() == [True, False, True]


def test_decontaminate_uses_exact_match_and_distance_to_the_nearest_eval_image():
    m = pool(4, eval_exact=[True, False, False, False], eval_hamming=[0.0, 3.0, 9.0, np.nan])
    d = decide(m, [{"name": "decontaminate", "max_hamming": 4}])
    assert d["reason_detail"].tolist() == ["eval_exact", "eval_near", "", ""]
    assert decide(m, [{"name": "decontaminate", "near": False}])["kept"].tolist() == [False, True, True, True]


def test_text_spotting_drops_captions_written_in_the_image_and_passes_unread_ones_with_a_warning():
    m = pool(3, caption_ocr_overlap=[1.0, 0.2, np.nan], ocr_seconds=[0.1, 0.1, np.nan])
    with pytest.warns(UserWarning, match="1 kept samples were not read by OCR"):
        d = decide(m, [{"name": "text_spotting", "max_overlap": 0.5}])
    assert d["kept"].tolist() == [False, True, True]


def test_alignment_keeps_the_top_fraction_of_survivors_or_a_minimum_score():
    scores = [0.9, 0.1, 0.5, 0.5, 0.7, 0.3, np.nan, 0.95]
    m = pool(8, alignment_score=scores, n_words=[3] * 7 + [1])  # the best one leaves at the caption filter
    top = decide(m, [{"name": "caption"}, {"name": "alignment", "top_fraction": 0.5}])
    # 6 survivors have a score: ceil(0.5 * 6) = 3 kept, the tie at 0.5 broken by pool order.
    assert top["kept"].tolist() == [True, False, True, False, True, False, False, False]
    assert pd.isna(top.loc[7, "pass_alignment"])
    floor = decide(m, [{"name": "alignment", "min_score": 0.5}])
    assert floor["kept"].tolist() == [True, False, True, True, True, False, False, True]
    with pytest.raises(ValueError, match="exactly one"):
        decide(m, [{"name": "alignment", "top_fraction": 0.5, "min_score": 0.1}])


def test_balance_caps_each_entry_by_metaclip_sampling_with_exact_counts_for_a_seed():
    concepts = [["star"]] * 100 + [["dog"]] * 10 + [["star", "dog"]] * 2 + [[]] * 5
    m = pool(len(concepts), concepts=concepts)
    d = decide(m, [{"name": "balance", "cap": 20, "seed": 0}])
    stars, dogs, both, unmatched = d[:100], d[100:110], d[110:112], d[112:]
    assert np.allclose(stars["balance_probability"], 20 / 102)  # 102 samples mention "star"
    assert dogs["kept"].all() and both["kept"].all()  # 12 dogs < cap: probability 1, maximised over entries
    assert unmatched["kept"].all()
    assert int(stars["kept"].sum()) == 18  # this seed's draw; the expectation is 100 * 20 / 102 = 19.6
    assert set(stars.loc[~stars["kept"], "reason_detail"]) == {"sampled_out"}
    again = decide(m, [{"name": "balance", "cap": 20, "seed": 0}])
    assert again["kept"].equals(d["kept"])
    other_seed = decide(m, [{"name": "balance", "cap": 20, "seed": 1}])
    assert not other_seed["kept"].equals(d["kept"])
    larger = decide(m, [{"name": "balance", "cap": 40, "seed": 0}])
    assert (larger["kept"] | ~d["kept"]).all()  # a larger cap keeps a superset
    dropped = decide(m, [{"name": "balance", "cap": 20, "unmatched": "drop"}])
    assert not dropped[112:]["kept"].any() and set(dropped[112:]["reason_detail"]) == {"unmatched"}


def test_balance_counts_only_survivors_and_can_match_another_entries_file(tmp_path):
    captions = ["a dog"] * 4 + ["a cat"] * 4
    m = pool(8, caption=captions, concepts=[["dog"]] * 4 + [[]] * 4, n_words=[1, 1, 3, 3, 3, 3, 3, 3])
    d = decide(m, [{"name": "caption"}, {"name": "balance", "cap": 2}])
    assert d.loc[2:3, "balance_probability"].tolist() == [1.0, 1.0]  # 2 dogs survive the caption filter
    entries = tmp_path / "entries.txt"
    entries.write_text("# animals\ncat\n")
    cats = decide(m, [{"name": "balance", "cap": 1, "entries": str(entries)}])
    assert cats.loc[4:, "balance_probability"].tolist() == [0.25] * 4
    assert cats.loc[:3, "kept"].all()  # the dogs match no entry of this file: kept


def test_decide_is_deterministic_and_leaves_the_measurements_alone():
    m = pool(6, alignment_score=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], concepts=[["x"]] * 6)
    filters = [{"name": "dedup"}, {"name": "alignment", "top_fraction": 0.5}, {"name": "balance", "cap": 2}]
    before = m.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first, second = decide(m, filters), decide(m, filters)
    pd.testing.assert_frame_equal(first, second)
    pd.testing.assert_frame_equal(m, before)
