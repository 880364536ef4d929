"""Retrieval recall and zero-shot accuracy on hand-computed cases, including ties."""

import numpy as np
import pytest

from vlalign.evaluate.metrics import retrieval_recall, zeroshot_accuracy

E0, E1, E2 = np.eye(3)
DIAG = np.array([1.0, 1.0, 0.0])  # equally close to E0 and E1: a tie

# Three images; image 1 has two captions (texts 1 and 3).
IMAGES = np.stack([E0, E1, E2])
TEXTS = np.stack([E0, E0, E2, DIAG])
TEXT_TO_IMAGE = np.array([0, 1, 2, 1])


def test_perfect_alignment_gives_recall_one():
    x = np.random.default_rng(0).standard_normal((20, 8))
    out = retrieval_recall(x, x, np.arange(20), ks=(1, 5))
    assert all(v == 1.0 for v in out.values())


def test_hand_computed_recall_with_ties_and_multiple_captions():
    out = retrieval_recall(IMAGES, TEXTS, TEXT_TO_IMAGE, ks=(1, 2, 3))
    # text→image ranks: t0→i0 1; t1 (=E0)→i1 scores 0, tied with i2 → pessimistic rank 3;
    # t2→i2 1; t3 (DIAG)→i1 tied with i0 → rank 2.
    assert out["text_to_image_recall_at_1"] == pytest.approx(2 / 4)
    assert out["text_to_image_recall_at_2"] == pytest.approx(3 / 4)
    assert out["text_to_image_recall_at_3"] == pytest.approx(1.0)
    # image→text ranks: i0's caption t0 ties with t1 (a caption of i1) → 2;
    # i1's best caption is t3 (cosine .71, nothing else above) → 1; i2 → 1.
    assert out["image_to_text_recall_at_1"] == pytest.approx(2 / 3)
    assert out["image_to_text_recall_at_2"] == pytest.approx(1.0)
    assert out["mean_recall_at_1"] == pytest.approx((2 / 3 + 2 / 4) / 2)
    assert set(out) == {f"{d}_recall_at_{k}" for d in ("image_to_text", "text_to_image", "mean")
                        for k in (1, 2, 3)}
    assert not any("@" in key for key in out)


def test_image_without_captions_is_only_a_distractor():
    images = np.vstack([IMAGES, np.ones(3)])  # image 3 has no caption
    out = retrieval_recall(images, TEXTS, TEXT_TO_IMAGE, ks=(1, 2, 3))
    # image→text is unchanged (image 3 is not scored) ...
    assert out["image_to_text_recall_at_1"] == pytest.approx(2 / 3)
    # ... but image 3 now outranks the right image for t3 (→ rank 3) and ties for t1 (→ rank 4).
    assert out["text_to_image_recall_at_1"] == pytest.approx(2 / 4)
    assert out["text_to_image_recall_at_2"] == pytest.approx(2 / 4)
    assert out["text_to_image_recall_at_3"] == pytest.approx(3 / 4)


def test_all_identical_embeddings_score_zero_at_one():
    # Pessimistic ties: a collapsed model must not look perfect.
    out = retrieval_recall(np.ones((4, 3)), np.ones((4, 3)), np.arange(4), ks=(1, 4))
    assert out["mean_recall_at_1"] == 0.0
    assert out["mean_recall_at_4"] == 1.0


def test_embeddings_are_normalised_inside():
    scaled = retrieval_recall(IMAGES * [[1], [5], [0.1]], TEXTS * 7, TEXT_TO_IMAGE, ks=(1, 2))
    assert scaled == retrieval_recall(IMAGES, TEXTS, TEXT_TO_IMAGE, ks=(1, 2))


def test_blocked_computation_matches_unblocked(monkeypatch):
    rng = np.random.default_rng(1)
    img, txt = rng.standard_normal((30, 4)), rng.standard_normal((70, 4))
    t2i = rng.integers(0, 30, 70)
    whole = retrieval_recall(img, txt, t2i)
    monkeypatch.setattr("vlalign.evaluate.metrics.BLOCK_ELEMENTS", 100)
    assert retrieval_recall(img, txt, t2i) == whole


def test_bad_text_to_image_is_rejected():
    with pytest.raises(ValueError, match="outside"):
        retrieval_recall(IMAGES, TEXTS, np.array([0, 1, 2, 3]))


def test_zeroshot_hand_computed_with_ties_and_imbalance():
    classes = np.stack([E0, E1, E2])
    images = np.stack([E0, DIAG, E2, E0, E0])
    labels = np.array([0, 1, 2, 2, 0])
    # ranks: 1; DIAG→class 1 tied with class 0 → 2; 1; E0→class 2 tied with class 1 → 3; 1.
    out = zeroshot_accuracy(images, labels, classes, ks=(1, 2, 5))
    assert out["top1_accuracy"] == pytest.approx(3 / 5)
    assert out["top2_accuracy"] == pytest.approx(4 / 5)
    assert "top5_accuracy" not in out  # only 3 classes: top-5 is trivially 1
    # per class top-1: class 0 2/2, class 1 0/1, class 2 1/2.
    assert out["mean_per_class_recall"] == pytest.approx((1 + 0 + 0.5) / 3)
