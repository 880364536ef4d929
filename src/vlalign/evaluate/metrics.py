"""Retrieval recall and zero-shot accuracy on embeddings, exact, in numpy (float64 cosine scores).

Ties are counted pessimistically: an item scored exactly the same as the correct one is ranked
before it, so a model that maps everything to one point scores no better than chance-by-ties
(it gets recall 0 unless k covers all tied items). Equality is on the float64 scores.

Each metric that is a mean over evaluation items (an image, a caption) keeps the outcome of every item
(`ItemOutcomes`, 1/0 for a hit or a miss) and is reported as their mean, so that its bootstrap interval
(`vlalign.evaluate.bootstrap`) resamples exactly what it averages.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from vlalign.schema import default

# Rows per similarity block: bounds memory at about 128 MB of float64 per block.
BLOCK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class ItemOutcomes:
    """One metric's value on each evaluation item it is the mean of: `values[n]` is item `items[n]`'s
    (1/0 for a hit or a miss); items are named by the caller (sample keys), by row number by default."""

    items: np.ndarray
    values: np.ndarray

    @property
    def mean(self) -> float:
        # A metric over no items (a direction without captions) is NaN, without numpy's warning.
        return float(np.mean(self.values)) if len(self.values) else float("nan")


@dataclass
class Scores:
    """An evaluation's metrics: the per-item outcomes of those that are means over items (`outcomes`), and
    the others (`values`: counts, chance levels, means of means) as plain numbers."""

    outcomes: dict[str, ItemOutcomes] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Every metric by name: the mean of each one's outcomes, and the plain values."""
        return {**{name: found.mean for name, found in self.outcomes.items()}, **self.values}

    def update(self, other: Scores, prefix: str = "") -> None:
        """Add `other`'s metrics, each name preceded by `prefix`."""
        self.outcomes.update({prefix + name: found for name, found in other.outcomes.items()})
        self.values.update({prefix + name: value for name, value in other.values.items()})


def item_names(names: Sequence | np.ndarray | None, count: int) -> np.ndarray:
    """The names of `count` items: `names` checked for length, or the row numbers."""
    if names is None:
        return np.arange(count)
    names = np.asarray(names)
    if names.shape != (count,):
        raise ValueError(f"item names must be one per item ({count}), got shape {names.shape}")
    return names


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


def retrieval_outcomes(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    text_to_image: np.ndarray,
    ks: Sequence[int] | None = None,
    image_items: Sequence | None = None,
    text_items: Sequence | None = None,
) -> Scores:
    """Recall@k in both directions; text_to_image[j] is the index of the image caption j describes.

    image→text: an image is a hit at k if ANY of its captions is among its top-k texts (its other
    captions do not push the best one down); images without captions are left out of this
    direction but still serve as distractors for text→image.
    text→image: a caption is a hit at k if its image is among its top-k images.
    Gives image_to_text_recall_at_{k} (items: the captioned images), text_to_image_recall_at_{k} (items: the
    captions) and mean_recall_at_{k}, the mean of the two directions, as fractions in [0, 1]. When every
    captioned image has as many captions, mean_recall_at_{k} is also the mean over those images of (its
    image→text hit + the fraction of its captions hit)/2, and has these per-image outcomes; otherwise it is a
    plain value. `image_items`/`text_items` name the images and texts (row numbers by default); `ks` defaults
    to the schema's `evaluate.ks`.
    """
    ks = default("evaluate.ks") if ks is None else ks
    img, txt = _normalise(image_emb), _normalise(text_emb)
    t2i = np.asarray(text_to_image, dtype=np.int64)
    if t2i.shape != (len(txt),):
        raise ValueError(f"text_to_image must have one entry per text ({len(txt)}), got {t2i.shape}")
    if len(t2i) and (t2i.min() < 0 or t2i.max() >= len(img)):
        raise ValueError("text_to_image holds an index outside the image range")
    image_items, text_items = item_names(image_items, len(img)), item_names(text_items, len(txt))

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

    # The captioned images in row order, as i2t_ranks lists them.
    captions_per_image = np.bincount(t2i, minlength=len(img))
    captioned = np.flatnonzero(captions_per_image)
    as_many_captions = len(np.unique(captions_per_image[captioned])) == 1
    found = Scores()
    for k in ks:
        i2t_hits, t2i_hits = (i2t_ranks <= k).astype(np.float64), (t2i_ranks <= k).astype(np.float64)
        i2t = found.outcomes[f"image_to_text_recall_at_{k}"] = ItemOutcomes(image_items[captioned], i2t_hits)
        t2i_recall = found.outcomes[f"text_to_image_recall_at_{k}"] = ItemOutcomes(text_items, t2i_hits)
        if as_many_captions:
            captions_hit = np.bincount(t2i, weights=t2i_hits, minlength=len(img))[captioned]
            per_image = (i2t_hits + captions_hit / captions_per_image[captioned]) / 2
            found.outcomes[f"mean_recall_at_{k}"] = ItemOutcomes(image_items[captioned], per_image)
        else:
            found.values[f"mean_recall_at_{k}"] = (i2t.mean + t2i_recall.mean) / 2
    return found


def retrieval_recall(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    text_to_image: np.ndarray,
    ks: Sequence[int] | None = None,
) -> dict[str, float]:
    """`retrieval_outcomes`' metrics: image_to_text_recall_at_{k}, text_to_image_recall_at_{k} and
    mean_recall_at_{k} as fractions in [0, 1]."""
    return retrieval_outcomes(image_emb, text_emb, text_to_image, ks).metrics()


def zeroshot_outcomes(
    image_emb: np.ndarray,
    labels: np.ndarray,
    class_emb: np.ndarray,
    ks: Sequence[int] = (1, 5),
    items: Sequence | None = None,
) -> Scores:
    """Zero-shot classification by cosine to one embedding per class (prompt ensembles averaged
    by the caller). Gives top{k}_accuracy for each k < number of classes (top-k over all
    classes is trivially 1), with each image's hit (`items` names the images, row numbers by default), and
    mean_per_class_recall (top-1 recall averaged over the classes present in labels: a mean of means, a
    plain value).
    """
    img, cls = _normalise(image_emb), _normalise(class_emb)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(img),):
        raise ValueError(f"labels must have one entry per image ({len(img)}), got {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(cls)):
        raise ValueError("labels hold a class index outside the class embeddings")
    items = item_names(items, len(img))

    ranks = np.empty(len(img), dtype=np.int64)
    for rows in _row_blocks(len(img), len(cls)):
        scores = img[rows] @ cls.T
        ranks[rows] = _pessimistic_rank(scores, scores[np.arange(scores.shape[0]), labels[rows]])

    found = Scores({f"top{k}_accuracy": ItemOutcomes(items, (ranks <= k).astype(np.float64))
                    for k in ks if k < len(cls)})  # fmt: skip
    top1 = ranks == 1
    present = np.unique(labels)
    found.values["mean_per_class_recall"] = float(np.mean([top1[labels == c].mean() for c in present]))
    return found


def zeroshot_accuracy(
    image_emb: np.ndarray,
    labels: np.ndarray,
    class_emb: np.ndarray,
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """`zeroshot_outcomes`' metrics: top{k}_accuracy and mean_per_class_recall."""
    return zeroshot_outcomes(image_emb, labels, class_emb, ks).metrics()
