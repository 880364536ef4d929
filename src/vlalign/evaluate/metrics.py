"""Retrieval recall and zero-shot accuracy on embeddings, exact, in numpy (float64 cosine scores).

Ties are counted pessimistically: an item scored exactly the same as the correct one is ranked
before it, so a model that maps everything to one point scores no better than chance-by-ties
(it gets recall 0 unless k covers all tied items). Equality is on the float64 scores.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from vlalign.schema import default

# Rows per similarity block: bounds memory at about 128 MB of float64 per block.
BLOCK_ELEMENTS = 1 << 24


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    """x as a non-empty 2-D float64 array; the error names the argument so callers need not."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (rows × dimensions), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return x


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.finfo(np.float64).tiny)


def _row_blocks(n_rows: int, n_cols: int) -> Iterator[slice]:
    step = max(1, BLOCK_ELEMENTS // max(1, n_cols))
    for start in range(0, n_rows, step):
        yield slice(start, min(n_rows, start + step))


def _pessimistic_rank(scores: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """1-based rank of the correct score per row when every tie is placed before it."""
    return (scores >= correct[:, None]).sum(axis=1)


def retrieval_recall(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    text_to_image: np.ndarray,
    ks: Sequence[int] | None = None,
) -> dict[str, float]:
    """Recall@k in both directions; text_to_image[j] is the index of the image caption j describes.

    image→text: an image is a hit at k if ANY of its captions is among its top-k texts (its other
    captions do not push the best one down); images without captions are left out of this
    direction but still serve as distractors for text→image.
    text→image: a caption is a hit at k if its image is among its top-k images.
    Returns image_to_text_recall_at_{k}, text_to_image_recall_at_{k} and mean_recall_at_{k}
    (mean of the two directions), as fractions in [0, 1]. `ks` defaults to the schema's `evaluate.ks`.
    """
    ks = default("evaluate.ks") if ks is None else ks
    img, txt = _normalise(image_emb), _normalise(text_emb)
    t2i = np.asarray(text_to_image, dtype=np.int64)
    if t2i.shape != (len(txt),):
        raise ValueError(f"text_to_image must have one entry per text ({len(txt)}), got {t2i.shape}")
    if len(t2i) and (t2i.min() < 0 or t2i.max() >= len(img)):
        raise ValueError("text_to_image holds an index outside the image range")

    t2i_ranks = np.empty(len(txt), dtype=np.int64)
    for rows in _row_blocks(len(txt), len(img)):
        scores = txt[rows] @ img.T
        correct = scores[np.arange(scores.shape[0]), t2i[rows]]
        t2i_ranks[rows] = _pessimistic_rank(scores, correct)

    i2t_ranks = []
    for rows in _row_blocks(len(img), len(txt)):
        scores = img[rows] @ txt.T
        is_caption = t2i[None, :] == np.arange(rows.start, rows.stop)[:, None]
        best = np.where(is_caption, scores, -np.inf).max(axis=1, initial=-np.inf)
        has_caption = is_caption.any(axis=1)
        # Rank of the best caption: 1 + the non-captions scored at least as high.
        rank = 1 + ((scores >= best[:, None]) & ~is_caption).sum(axis=1)
        i2t_ranks.append(rank[has_caption])
    i2t_ranks = np.concatenate(i2t_ranks) if i2t_ranks else np.zeros(0, dtype=np.int64)

    out: dict[str, float] = {}
    for k in ks:
        i2t = float(np.mean(i2t_ranks <= k)) if len(i2t_ranks) else float("nan")
        t2i_recall = float(np.mean(t2i_ranks <= k)) if len(t2i_ranks) else float("nan")
        out[f"image_to_text_recall_at_{k}"] = i2t
        out[f"text_to_image_recall_at_{k}"] = t2i_recall
        out[f"mean_recall_at_{k}"] = (i2t + t2i_recall) / 2
    return out


def zeroshot_accuracy(
    image_emb: np.ndarray,
    labels: np.ndarray,
    class_emb: np.ndarray,
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Zero-shot classification by cosine to one embedding per class (prompt ensembles averaged
    by the caller). Returns top{k}_accuracy for each k < number of classes (top-k over all
    classes is trivially 1) and mean_per_class_recall (top-1 recall averaged over the classes
    present in labels).
    """
    img, cls = _normalise(image_emb), _normalise(class_emb)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(img),):
        raise ValueError(f"labels must have one entry per image ({len(img)}), got {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(cls)):
        raise ValueError("labels hold a class index outside the class embeddings")

    ranks = np.empty(len(img), dtype=np.int64)
    for rows in _row_blocks(len(img), len(cls)):
        scores = img[rows] @ cls.T
        ranks[rows] = _pessimistic_rank(scores, scores[np.arange(scores.shape[0]), labels[rows]])

    out = {f"top{k}_accuracy": float(np.mean(ranks <= k)) for k in ks if k < len(cls)}
    top1 = ranks == 1
    present = np.unique(labels)
    out["mean_per_class_recall"] = float(np.mean([top1[labels == c].mean() for c in present]))
    return out
