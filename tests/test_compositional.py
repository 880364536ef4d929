"""Caption selection (SugarCrepe / ARO) and Winoground scores on hand-computed cases, ties included."""

import numpy as np
import pytest

from vlalign.evaluate.compositional import caption_selection_accuracy, winoground_scores

E0, E1, E2 = np.eye(3)
DIAG = np.array([1.0, 1.0, 0.0])

# Four images with their true captions and two hard negatives each.
IMAGES = np.stack([E0, E1, E2, DIAG])
POSITIVES = np.stack([E0, DIAG, E2, E0])
NEGATIVES = np.stack([
    [E1, E2],  # cosine 1 against 0, 0: right
    [E1, E2],  # DIAG scores .71 with image E1, but the negative E1 scores 1: wrong
    [E2 * 4, E0],  # the negative is the positive's direction: a tie, counted wrong (>= would call it right)
    [E1, E2],  # E0 and E1 tie with DIAG (.71 each): wrong
])


def test_caption_selection_hand_computed_with_ties():
    out = caption_selection_accuracy(IMAGES, POSITIVES, NEGATIVES)
    assert out == {"caption_selection_accuracy": 1 / 4}


def test_caption_selection_grouped_by_negative_type():
    out = caption_selection_accuracy(IMAGES, POSITIVES, NEGATIVES, ["swap_att", "count", "swap_att", "replace_rel"])
    assert out == {
        "caption_selection_accuracy": 1 / 4,
        "caption_selection_accuracy_count": 0.0,
        "caption_selection_accuracy_replace_rel": 0.0,
        "caption_selection_accuracy_swap_att": 1 / 2,
    }


def test_caption_selection_one_negative_per_image_as_a_matrix():
    # SugarCrepe has one hard negative per image: (N, d) reads as (N, 1, d).
    negatives = NEGATIVES[:, 1]  # E2, E2, E0, E2: each scores below its image's positive
    assert caption_selection_accuracy(IMAGES, POSITIVES, negatives) == {"caption_selection_accuracy": 1.0}
    assert caption_selection_accuracy(IMAGES, POSITIVES, negatives[:, None]) == {"caption_selection_accuracy": 1.0}


def test_caption_selection_collapsed_model_scores_zero():
    ones = np.ones((5, 3))
    assert caption_selection_accuracy(ones, ones, np.ones((5, 2, 3))) == {"caption_selection_accuracy": 0.0}


def test_caption_selection_blocked_matches_unblocked(monkeypatch):
    rng = np.random.default_rng(0)
    img, pos, neg = rng.standard_normal((50, 8)), rng.standard_normal((50, 8)), rng.standard_normal((50, 3, 8))
    whole = caption_selection_accuracy(img, pos, neg)
    assert 0 < whole["caption_selection_accuracy"] < 1
    monkeypatch.setattr("vlalign.evaluate.metrics.BLOCK_ELEMENTS", 100)
    assert caption_selection_accuracy(img, pos, neg) == whole


@pytest.mark.parametrize(
    ("images", "positives", "negatives", "types", "match"),
    [
        (np.ones((0, 3)), np.ones((0, 3)), np.ones((0, 1, 3)), None, "image_emb must be a non-empty"),
        (IMAGES, POSITIVES[:3], NEGATIVES, None, "positive_text_emb must have the shape of image_emb"),
        (IMAGES, POSITIVES, NEGATIVES[:3], None, "negative_text_embs must have shape"),
        (IMAGES, POSITIVES, NEGATIVES[:, :0], None, "negative_text_embs must have shape"),
        (IMAGES, POSITIVES, NEGATIVES[..., :2], None, "negative_text_embs must have shape"),
        (IMAGES, POSITIVES, NEGATIVES * np.nan, None, "negative_text_embs holds NaN"),
        (IMAGES, POSITIVES, NEGATIVES, ["count"] * 3, "negative_types must have one entry per image"),
    ],
)
def test_caption_selection_bad_inputs_name_the_argument(images, positives, negatives, types, match):
    with pytest.raises(ValueError, match=match):
        caption_selection_accuracy(images, positives, negatives, types)


def test_winoground_hand_computed_with_ties():
    sim = np.array([
        [[1.0, 0.0], [0.0, 1.0]],  # text, image and group right
        [[0.5, 0.4], [0.9, 1.0]],  # text right; image wrong (caption a prefers image b)
        [[0.5, 0.9], [0.4, 1.0]],  # image right; text wrong (image a prefers caption b)
        [[0.5, 0.5], [0.2, 0.8]],  # image right; text tied for image a: wrong (>= would call it right)
    ])
    assert winoground_scores(sim) == {
        "winoground_text_score": 2 / 4,
        "winoground_image_score": 3 / 4,
        "winoground_group_score": 1 / 4,
    }


def test_winoground_collapsed_model_scores_zero():
    assert set(winoground_scores(np.full((3, 2, 2), 0.3)).values()) == {0.0}


@pytest.mark.parametrize("sim", [np.ones((2, 2, 3)), np.ones((0, 2, 2)), np.ones((2, 2)), np.full((1, 2, 2), np.inf)])
def test_winoground_bad_input_names_the_argument(sim):
    with pytest.raises(ValueError, match="sim"):
        winoground_scores(sim)
