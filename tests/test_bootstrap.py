"""The bootstrap intervals (coverage on a known distribution, the paired comparison) and the per-item outcomes they
resample: every metric that has them is exactly their mean, also after a round trip through per_sample.parquet."""

import numpy as np
import pandas as pd
import pytest

from vlalign.evaluate import bootstrap
from vlalign.evaluate.bootstrap import excludes_zero, paired_difference, percentile_interval, resampled_means
from vlalign.evaluate.compositional import caption_selection_outcomes, winoground_outcomes
from vlalign.evaluate.evaluation import compositional_outcomes, per_sample_table
from vlalign.evaluate.metrics import Scores, retrieval_outcomes, zeroshot_outcomes

ITEMS = 165  # the demo's held-out retrieval pairs


def test_the_percentile_interval_covers_a_bernoulli_mean_about_95_times_in_100():
    rng = np.random.default_rng(1)
    draws = [(rng.random(ITEMS) < 0.3).astype(float) for _ in range(200)]
    covered = [low <= 0.3 <= high for low, high in (percentile_interval(d, 1000) for d in draws)]
    # The percentile interval covers slightly under 95 % at this size; a binomial sd over 200 draws is 1.5 %.
    assert 0.88 <= np.mean(covered) <= 0.99
    low, high = percentile_interval(draws[0], 1000)
    # Its width is about 4 standard errors, sqrt(0.3 * 0.7 / 165) = 0.036.
    assert 0.10 < high - low < 0.18


def test_the_interval_is_reproducible_and_resamples_in_blocks(monkeypatch):
    values = (np.random.default_rng(2).random(ITEMS) < 0.5).astype(float)
    assert percentile_interval(values, 500) == percentile_interval(values, 500)
    monkeypatch.setattr(bootstrap, "BLOCK_ELEMENTS", 10)  # one resample per block
    means = resampled_means(values, 300)
    assert means.shape == (300,) and set(np.round(means * ITEMS, 9)) <= set(range(ITEMS + 1))
    assert abs(means.mean() - values.mean()) < 0.02
    assert (resampled_means(np.full(7, 0.25), 50) == 0.25).all()


def test_the_bootstrap_refuses_no_items():
    with pytest.raises(ValueError, match="non-empty"):
        percentile_interval(np.array([]), 100)
    with pytest.raises(ValueError, match="same items"):
        paired_difference(np.zeros(3), np.zeros(4), 100)


def test_identical_runs_differ_by_exactly_zero():
    values = (np.random.default_rng(3).random(ITEMS) < 0.3).astype(float)
    assert paired_difference(values, values.copy(), 1000) == (0.0, 0.0, 0.0)
    assert not excludes_zero(0.0, 0.0)


def test_runs_of_equal_accuracy_get_an_interval_centred_on_zero():
    values = (np.random.default_rng(4).random(ITEMS) < 0.3).astype(float)
    other = np.roll(values, 1)  # the same hits on other items: the same accuracy
    difference, low, high = paired_difference(values, other, 1000)
    assert difference == 0.0 and low < 0 < high
    assert abs(low + high) < 0.1 * (high - low)
    assert not excludes_zero(low, high)


def test_a_planted_difference_is_significant_and_one_item_is_not():
    rng = np.random.default_rng(5)
    baseline = (rng.random(ITEMS) < 0.3).astype(float)
    better = np.where(rng.random(ITEMS) < 0.4, 1.0, baseline)  # 40 % of the misses become hits
    difference, low, high = paired_difference(better, baseline, 1000)
    assert difference > 0.2 and 0 < low < difference < high
    assert excludes_zero(low, high)
    # Narrower than the two runs' own intervals combined as if independent: the items' shared difficulty cancels.
    widths = [high - low for low, high in (percentile_interval(v, 1000) for v in (better, baseline))]
    assert high - low < 0.8 * np.hypot(*widths)
    one_more = baseline.copy()
    one_more[np.flatnonzero(baseline == 0)[0]] = 1.0
    assert not excludes_zero(*paired_difference(one_more, baseline, 1000)[1:])
    assert excludes_zero(*paired_difference(baseline, better, 1000)[1:])  # worse: below 0


def assert_means_of_outcomes(scores: Scores) -> None:
    """Each metric with outcomes is exactly their mean, as written to and read back from per_sample.parquet."""
    metrics = scores.metrics()
    for name, found in scores.outcomes.items():
        assert metrics[name] == np.mean(found.values), name
        assert set(np.unique(found.values)) <= {0.0, 0.5, 1.0} or name.startswith("mean_recall")
        assert len(set(np.asarray(found.items).tolist())) == len(found.items), f"{name}: an item twice"


def test_retrieval_metrics_are_the_means_of_their_outcomes(tmp_path):
    rng = np.random.default_rng(6)
    images, texts = rng.standard_normal((40, 8)), rng.standard_normal((40, 8))
    keys = [f"s{i:03d}" for i in range(40)]
    scores = retrieval_outcomes(images + texts, images + 0.8 * texts, np.arange(40), ks=(1, 5),
                                image_items=keys, text_items=keys)  # fmt: skip
    assert_means_of_outcomes(scores)
    assert set(scores.outcomes) == {f"{d}_recall_at_{k}" for d in ("image_to_text", "text_to_image", "mean")
                                    for k in (1, 5)}  # fmt: skip
    assert list(scores.outcomes["text_to_image_recall_at_1"].items) == keys
    # One caption each: an image's mean-recall outcome is the mean of its two directions' hits.
    i2t, t2i = (scores.outcomes[f"{d}_recall_at_1"].values for d in ("image_to_text", "text_to_image"))
    assert (scores.outcomes["mean_recall_at_1"].values == (i2t + t2i) / 2).all()

    table = per_sample_table(scores)
    table.to_parquet(tmp_path / "per_sample.parquet", index=False)
    back = pd.read_parquet(tmp_path / "per_sample.parquet")
    assert list(back.columns) == ["metric", "item", "value"] and back["item"].map(type).eq(str).all()
    for name, value in scores.metrics().items():
        assert back.loc[back["metric"] == name, "value"].to_numpy().mean() == value


def test_several_captions_per_image():
    rng = np.random.default_rng(7)
    images = rng.standard_normal((10, 6))
    owners = np.repeat(np.arange(10), 3)  # three captions each
    texts = images[owners] + 0.7 * rng.standard_normal((30, 6))
    scores = retrieval_outcomes(images, texts, owners, ks=(1, 3))
    assert_means_of_outcomes(scores)
    assert len(scores.outcomes["image_to_text_recall_at_1"].values) == 10
    assert len(scores.outcomes["text_to_image_recall_at_1"].values) == 30
    mean = scores.outcomes["mean_recall_at_1"]
    assert len(mean.values) == 10
    assert mean.mean == pytest.approx((scores.metrics()["image_to_text_recall_at_1"]
                                       + scores.metrics()["text_to_image_recall_at_1"]) / 2)  # fmt: skip
    # Uneven captions: the mean recall is a mean of two means over different items, and has no outcomes.
    uneven = retrieval_outcomes(images, texts[:-1], owners[:-1], ks=(1,))
    assert "mean_recall_at_1" not in uneven.outcomes and "mean_recall_at_1" in uneven.values


def test_zeroshot_accuracy_is_the_mean_of_its_outcomes():
    rng = np.random.default_rng(8)
    classes = rng.standard_normal((6, 5))
    labels = rng.integers(0, 6, 50)
    images = classes[labels] + 1.2 * rng.standard_normal((50, 5))
    scores = zeroshot_outcomes(images, labels, classes, ks=(1, 5), items=[f"z{i}" for i in range(50)])
    assert_means_of_outcomes(scores)
    assert set(scores.outcomes) == {"top1_accuracy", "top5_accuracy"}
    assert set(scores.values) == {"mean_per_class_recall"}  # a mean of per-class means: no item outcomes


def test_compositional_scores_are_the_means_of_their_outcomes():
    rng = np.random.default_rng(9)
    images, positives = rng.standard_normal((30, 4)), rng.standard_normal((30, 4))
    negatives = rng.standard_normal((30, 2, 4))
    types = rng.choice(["swap_att", "count", "replace_rel"], 30)
    scores = caption_selection_outcomes(images, images + 0.5 * positives, negatives, types)
    assert_means_of_outcomes(scores)
    assert sum(len(scores.outcomes[f"caption_selection_accuracy_{t}"].values) for t in set(types)) == 30
    wino = winoground_outcomes(rng.standard_normal((25, 2, 2)), items=[f"p{i}" for i in range(25)])
    assert_means_of_outcomes(wino)
    group, text, image = (wino.outcomes[f"winoground_{s}_score"].values for s in ("group", "text", "image"))
    assert (group == text * image).all()


def test_compositional_items_are_named_by_sample_key_and_pair():
    vectors = {"red left": [1.0, 0.0], "blue left": [0.0, 1.0], "red right": [0.8, 0.6], "two reds": [0.6, 0.8]}
    metas = [
        {"caption": "red left", "negatives": [{"caption": "red right", "type": "replace_relation"},
                                              {"caption": "blue left", "type": "swap_attribute"}],
         "winoground": {"pair": "p0", "role": "a"}},
        {"caption": "blue left", "negatives": [{"caption": "two reds", "type": "change_count"}],
         "winoground": {"pair": "p0", "role": "b"}},
    ]  # fmt: skip
    scores = compositional_outcomes(np.eye(2), metas, ["ka", "kb"], lambda t: np.array([vectors[x] for x in t]))
    assert_means_of_outcomes(scores)
    assert list(scores.outcomes["caption_selection_accuracy"].items) == ["ka#0", "ka#1", "kb#0"]
    assert list(scores.outcomes["caption_selection_accuracy_swap_attribute"].items) == ["ka#1"]
    assert list(scores.outcomes["winoground_group_score"].items) == ["p0"]
    assert scores.values == {"winoground_pairs": 1.0}
    table = per_sample_table(scores)
    assert "winoground_pairs" not in set(table["metric"]) and len(table) == 3 + 3 + 3  # 3 selections, 3 types
