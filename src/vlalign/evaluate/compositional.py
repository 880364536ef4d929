"""Compositionality scores: does the model tell a caption from a minimally changed one?

Caption selection follows SugarCrepe / ARO (the true caption against hard negatives with swapped or
replaced attributes, relations, counts); the Winoground scores follow Thrush et al. 2022. Ties count
as wrong, as in metrics.py: a model that scores a caption and its hard negative the same has not told
them apart. Every score is a mean over examples and keeps each example's outcome (`ItemOutcomes`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vlalign.evaluate.metrics import ItemOutcomes, Scores, _as_matrix, _normalise, _row_blocks, item_names


def caption_selection_outcomes(
    image_emb: np.ndarray,
    positive_text_emb: np.ndarray,
    negative_text_embs: np.ndarray,
    negative_types: Sequence[str] | None = None,
    items: Sequence | None = None,
) -> Scores:
    """Fraction of images whose positive caption has a strictly higher cosine than every hard negative.

    image_emb and positive_text_emb: (N, d), row i being image i and its true caption;
    negative_text_embs: (N, M, d), M hard negatives per image, or (N, d) for one each.
    negative_types: optional kind of each example's negatives (e.g. "swap_att", "replace_rel",
    "count"), one per image; adds caption_selection_accuracy_{type} for each type.
    items: the examples' names (row numbers by default).
    Gives caption_selection_accuracy (over all images) and the per-type ones, fractions in [0, 1], with
    each example's outcome.
    """
    img = _as_matrix(image_emb, "image_emb")
    pos = _as_matrix(positive_text_emb, "positive_text_emb")
    neg = np.asarray(negative_text_embs, dtype=np.float64)
    if neg.ndim == 2:
        neg = neg[:, None]
    if pos.shape != img.shape:
        raise ValueError(f"positive_text_emb must have the shape of image_emb {img.shape}, got {pos.shape}")
    if neg.ndim != 3 or neg.shape[0] != len(img) or neg.shape[1] == 0 or neg.shape[2] != img.shape[1]:
        raise ValueError(
            f"negative_text_embs must have shape (N={len(img)}, M>=1, d={img.shape[1]}), "
            f"got {np.shape(negative_text_embs)}"
        )
    n, m, d = neg.shape
    items = item_names(items, n)
    # Positive first, then the negatives: scoring them in one array makes identical embeddings score
    # bit-identically, so an exact tie is seen as one.
    negatives = _normalise(_as_matrix(neg.reshape(n * m, d), "negative_text_embs")).reshape(n, m, d)
    texts = np.concatenate([_normalise(pos)[:, None], negatives], axis=1)
    img = _normalise(img)
    correct = np.empty(n, dtype=bool)
    for rows in _row_blocks(n, (1 + m) * d):
        scores = (texts[rows] * img[rows, None, :]).sum(axis=-1)
        correct[rows] = scores[:, 0] > scores[:, 1:].max(axis=1)

    correct = correct.astype(np.float64)
    found = Scores({"caption_selection_accuracy": ItemOutcomes(items, correct)})
    if negative_types is not None:
        types = np.asarray(negative_types, dtype=str)
        if types.shape != (n,):
            raise ValueError(f"negative_types must have one entry per image ({n}), got shape {types.shape}")
        for kind in np.unique(types):
            of_kind = types == kind
            found.outcomes[f"caption_selection_accuracy_{kind}"] = ItemOutcomes(items[of_kind], correct[of_kind])
    return found


def caption_selection_accuracy(
    image_emb: np.ndarray,
    positive_text_emb: np.ndarray,
    negative_text_embs: np.ndarray,
    negative_types: Sequence[str] | None = None,
) -> dict[str, float]:
    """`caption_selection_outcomes`' metrics: caption_selection_accuracy and caption_selection_accuracy_{type}."""
    return caption_selection_outcomes(image_emb, positive_text_emb, negative_text_embs, negative_types).metrics()


def winoground_outcomes(sim: np.ndarray, items: Sequence | None = None) -> Scores:
    """Winoground text, image and group scores from sim[n, i, c]: similarity of image i with caption c
    (0 = a, 1 = b) in example n, shape (N, 2, 2); caption c belongs to image c.

    text: both images score their own caption strictly above the other caption;
    image: both captions score their own image strictly above the other image; group: both.
    Gives winoground_{text,image,group}_score as fractions in [0, 1], with each example's outcome (`items`
    names the examples, row numbers by default).
    """
    s = np.asarray(sim, dtype=np.float64)
    if s.ndim != 3 or s.shape[1:] != (2, 2) or s.shape[0] == 0:
        raise ValueError(f"sim must have shape (N>=1, 2, 2), got {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("sim holds NaN or infinite values")
    items = item_names(items, len(s))
    text = (s[:, 0, 0] > s[:, 0, 1]) & (s[:, 1, 1] > s[:, 1, 0])
    image = (s[:, 0, 0] > s[:, 1, 0]) & (s[:, 1, 1] > s[:, 0, 1])
    outcomes = {"text": text, "image": image, "group": text & image}
    return Scores({f"winoground_{name}_score": ItemOutcomes(items, hits.astype(np.float64))
                   for name, hits in outcomes.items()})  # fmt: skip


def winoground_scores(sim: np.ndarray) -> dict[str, float]:
    """`winoground_outcomes`' metrics: winoground_{text,image,group}_score."""
    return winoground_outcomes(sim).metrics()
