"""Weighted k-NN and linear-probe accuracy on hand-computed cases, ties included, and against a brute-force k-NN."""

import math

import numpy as np
import pytest

from vlalign.probe.classifiers import knn_accuracy, linear_probe_accuracy


def unit(degrees: float) -> np.ndarray:
    return np.array([math.cos(math.radians(degrees)), math.sin(math.radians(degrees))])


TEST_POINT = np.array([[1.0, 0.0]])


def test_knn_votes_are_weighted_by_exp_similarity_over_temperature():
    # One class-0 neighbour at cosine 1, two class-1 neighbours at cosine 0.5.
    train = np.stack([unit(0), unit(60), unit(-60)])
    labels = np.array([0, 1, 1])
    # T = 0.07: e^(1/.07) > 2 e^(.5/.07), class 0 wins; T = 1: e^1 < 2 e^.5, class 1 wins (as a plain majority would).
    assert knn_accuracy(train, labels, TEST_POINT, [0], ks=(1, 3)) == {"knn_top1_k1": 1.0, "knn_top1_k3": 1.0}
    assert knn_accuracy(train, labels, TEST_POINT, [0], ks=(1, 3), temperature=1.0) == {
        "knn_top1_k1": 1.0,
        "knn_top1_k3": 0.0,
    }


def test_knn_vote_tie_counts_as_wrong_for_either_label():
    # [1, 1] and [1, -1] are exactly equally close to [1, 0]: the classes tie at k=2, whatever the label.
    train = np.array([[1.0, 1.0], [1.0, -1.0]])
    for label in (0, 1):
        out = knn_accuracy(train, np.array([0, 1]), TEST_POINT, [label], ks=(1, 2))
        # k=1: the tied neighbour of the other class is taken (an index rule would let label 0 win).
        assert out == {"knn_top1_k1": 0.0, "knn_top1_k2": 0.0}


def test_knn_neighbours_tied_at_the_kth_place_are_taken_other_class_first():
    # Three training rows at exactly 45° from the test point: classes 0, 1, 0; a fourth, opposite, never
    # gets in, so which tied rows fill the k places is decided by the rule.
    train = np.array([[1.0, 1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 0.0]])
    labels = np.array([0, 1, 0, 1])
    expected = {"knn_top1_k1": 0.0, "knn_top1_k2": 0.0, "knn_top1_k3": 1.0}
    # k=1 takes the class-1 row; k=2 adds one class-0 row: a 1-1 vote tie; k=3: class 0 wins 2-1.
    assert knn_accuracy(train, labels, TEST_POINT, [0], ks=(1, 2, 3)) == expected
    # The rule does not depend on the order of the training rows.
    assert knn_accuracy(train[::-1], labels[::-1], TEST_POINT, [0], ks=(1, 2, 3)) == expected
    # Alone, k is the largest cut: the rule also picks which tied rows are kept at all.
    for k in (1, 2):
        assert knn_accuracy(train, labels, TEST_POINT, [0], ks=(k,)) == {f"knn_top1_k{k}": 0.0}


def test_knn_collapsed_features_score_zero():
    labels = np.array([0, 1, 2, 0, 1, 2])
    out = knn_accuracy(np.ones((6, 4)), labels, np.ones((3, 4)), [0, 1, 2], ks=(1, 6))
    assert out == {"knn_top1_k1": 0.0, "knn_top1_k6": 0.0}


def test_knn_label_absent_from_training_set_is_wrong():
    out = knn_accuracy(np.eye(2), [0, 1], np.eye(2), [0, 7], ks=(1,))
    assert out == {"knn_top1_k1": 0.5}


def test_knn_k_above_training_size_is_clamped_with_a_warning():
    train = np.stack([unit(60), unit(80), unit(-80)])
    labels = np.array([0, 1, 1])
    with pytest.warns(UserWarning, match="clamped to 3"):
        out = knn_accuracy(train, labels, TEST_POINT, [0], ks=(1, 3, 50), temperature=1.0)
    # k=1: class 0; all three rows: e^cos60° = 1.65 loses to 2 e^cos80° = 2.38; k=50 votes as k=3.
    assert out == {"knn_top1_k1": 1.0, "knn_top1_k3": 0.0, "knn_top1_k50": 0.0}


def reference_knn(train, train_y, test, test_y, k, temperature):
    """Brute force: sort every training row by (-similarity, same class as the test row, index)."""
    sims = test @ train.T  # callers pass exactly representable unit vectors, so no normalising is needed
    weights = np.exp(sims / temperature)
    hits = []
    for i, row in enumerate(sims):
        order = sorted(range(len(train)), key=lambda j: (-row[j], train_y[j] == test_y[i], j))[:k]
        votes: dict[int, float] = {}
        for j in order:
            votes[train_y[j]] = votes.get(train_y[j], 0.0) + weights[i, j]
        others = max((v for c, v in votes.items() if c != test_y[i]), default=0.0)
        hits.append(votes.get(test_y[i], 0.0) > others)
    return float(np.mean(hits))


def quantised_unit_vectors(rng, n, dim=8):
    """Four entries of ±0.5 per row: norm exactly 1 and exact cosines, so many similarities tie exactly."""
    x = np.zeros((n, dim))
    for row in x:
        row[rng.choice(dim, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return x


def test_knn_blocked_matches_brute_force_with_many_ties(monkeypatch):
    rng = np.random.default_rng(0)
    train, test = quantised_unit_vectors(rng, 60), quantised_unit_vectors(rng, 40)
    train_y, test_y = rng.integers(0, 3, 60), rng.integers(0, 3, 40)
    ks = (1, 2, 5, 10, 20, 60)
    expected = {f"knn_top1_k{k}": reference_knn(train, train_y, test, test_y, k, 0.07) for k in ks}
    # Small blocks: several test rows per block, several blocks.
    monkeypatch.setattr("vlalign.evaluate.metrics.BLOCK_ELEMENTS", 300)
    assert knn_accuracy(train, train_y, test, test_y, ks=ks) == expected
    # Alone, each k is the largest, so rows tied at its cut are also chosen among the other rows.
    for k in ks:
        assert knn_accuracy(train, train_y, test, test_y, ks=(k,)) == {f"knn_top1_k{k}": expected[f"knn_top1_k{k}"]}


def test_knn_blocked_matches_unblocked_on_continuous_features(monkeypatch):
    rng = np.random.default_rng(1)
    train, test = rng.standard_normal((300, 16)), rng.standard_normal((90, 16))
    train_y, test_y = rng.integers(0, 5, 300), rng.integers(0, 5, 90)
    whole = knn_accuracy(train, train_y, test, test_y)
    assert set(whole) == {"knn_top1_k10", "knn_top1_k20", "knn_top1_k100", "knn_top1_k200"}
    monkeypatch.setattr("vlalign.evaluate.metrics.BLOCK_ELEMENTS", 1000)
    assert knn_accuracy(train, train_y, test, test_y) == whole


def clusters(rng, n, n_classes=4, dim=16, spread=0.3):
    centres = np.eye(dim)[:n_classes] * 4
    labels = np.arange(n) % n_classes
    return centres[labels] + spread * rng.standard_normal((n, dim)), labels


def test_linear_probe_separates_clusters():
    rng = np.random.default_rng(2)
    train_x, train_y = clusters(rng, 200)
    test_x, test_y = clusters(rng, 100)
    out = linear_probe_accuracy(train_x, train_y, test_x, test_y)
    assert out["linear_probe_top1_accuracy"] == 1.0
    assert out["linear_probe_mean_per_class_recall"] == 1.0
    assert out["linear_probe_weight_decay"] in (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    assert out == linear_probe_accuracy(train_x, train_y, test_x, test_y)  # deterministic


def test_linear_probe_is_near_chance_on_random_labels():
    rng = np.random.default_rng(3)
    train_x, test_x = rng.standard_normal((400, 16)), rng.standard_normal((400, 16))
    out = linear_probe_accuracy(train_x, rng.integers(0, 4, 400), test_x, rng.integers(0, 4, 400))
    assert 0.1 < out["linear_probe_top1_accuracy"] < 0.4  # chance is 0.25


def test_linear_probe_mean_per_class_recall_weighs_classes_equally():
    rng = np.random.default_rng(4)
    train_x, train_y = clusters(rng, 120, n_classes=3)
    centres = np.eye(16)[:3] * 4
    # Three class-0 rows and one class-2 row in their clusters; one class-1 row inside class 0's cluster.
    test_x = centres[[0, 0, 0, 0, 2]]
    test_y = np.array([0, 0, 0, 1, 2])
    out = linear_probe_accuracy(train_x, train_y, test_x, test_y, weight_decays=(1e-3,))
    assert out["linear_probe_top1_accuracy"] == pytest.approx(4 / 5)
    assert out["linear_probe_mean_per_class_recall"] == pytest.approx((1 + 0 + 1) / 3)
    assert out["linear_probe_weight_decay"] == 1e-3


def test_linear_probe_collapsed_features_score_zero():
    # Constant features, balanced classes: all logits tie, which counts as wrong (argmax would give 1/4).
    labels = np.repeat([0, 1, 2, 3], 10)
    out = linear_probe_accuracy(np.ones((40, 5)), labels, np.ones((8, 5)), np.repeat([0, 1, 2, 3], 2))
    assert out["linear_probe_top1_accuracy"] == 0.0


@pytest.mark.parametrize("probe", [knn_accuracy, linear_probe_accuracy])
@pytest.mark.parametrize(
    ("train_x", "train_y", "test_x", "test_y", "match"),
    [
        (np.ones((4, 3)), [0, 1, 0, 1], np.ones((2, 2)), [0, 1], "test_features have 2 dimensions"),
        (np.ones((0, 3)), [], np.ones((2, 3)), [0, 1], "train_features must be a non-empty"),
        (np.ones((4, 3)), [0, 1, 0, 1], np.ones((0, 3)), [], "test_features must be a non-empty"),
        (np.ones(4), [0, 1, 0, 1], np.ones((2, 3)), [0, 1], "train_features must be a non-empty 2-D"),
        (np.ones((4, 3)), [0, 1, 0], np.ones((2, 3)), [0, 1], "train_labels must have one entry per row"),
        (np.ones((4, 3)), [0, 1, 0, 1], np.ones((2, 3)), [0, 1, 1], "test_labels must have one entry per row"),
        (np.ones((4, 3)), [0.0, 1.0, 0.0, 1.0], np.ones((2, 3)), [0, 1], "train_labels must hold integer"),
        (np.full((4, 3), np.nan), [0, 1, 0, 1], np.ones((2, 3)), [0, 1], "train_features holds NaN"),
    ],
)
def test_bad_inputs_are_rejected_naming_the_argument(probe, train_x, train_y, test_x, test_y, match):
    with pytest.raises(ValueError, match=match):
        probe(train_x, train_y, test_x, test_y)


def test_bad_knn_parameters_are_rejected():
    args = (np.eye(2), [0, 1], np.eye(2), [0, 1])
    for ks in ((), (0,), (2.5,)):
        with pytest.raises(ValueError, match="ks must be positive integers"):
            knn_accuracy(*args, ks=ks)
    with pytest.raises(ValueError, match="temperature must be positive"):
        knn_accuracy(*args, temperature=0)


def test_bad_linear_probe_parameters_are_rejected():
    args = (np.eye(4), [0, 1, 0, 1], np.eye(4), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="weight_decays"):
        linear_probe_accuracy(*args, weight_decays=(-1.0, 1.0))
    with pytest.raises(ValueError, match="validation_fraction"):
        linear_probe_accuracy(*args, validation_fraction=1.0)
