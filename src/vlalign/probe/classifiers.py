"""How well frozen features separate classes: weighted k-NN and linear-probe accuracy.

SAIL uses both to predict how alignable an encoder is (k-NN clustering quality predicts better than
linear separability). Ties are counted pessimistically, as in metrics.py: a prediction is right only
when the true class scores strictly higher than every other class, so a collapsed encoder scores 0.
Test labels that never occur in the training labels can never be predicted and count as wrong.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vlalign.evaluate.metrics import _as_matrix, _normalise, _pessimistic_rank, _row_blocks
from vlalign.schema import default


def _as_labels(labels: np.ndarray, n_rows: int, name: str, features: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n_rows,):
        raise ValueError(f"{name} must have one entry per row of {features} ({n_rows}), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class ids, got dtype {labels.dtype}")
    return labels


def _check_split(
    train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray, test_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Features as float64 matrices and labels as class indices 0..n_classes-1 shared by both sets."""
    train_x = _as_matrix(train_features, "train_features")
    test_x = _as_matrix(test_features, "test_features")
    if test_x.shape[1] != train_x.shape[1]:
        raise ValueError(
            f"test_features have {test_x.shape[1]} dimensions but train_features have {train_x.shape[1]}"
        )
    train_y = _as_labels(train_labels, len(train_x), "train_labels", "train_features")
    test_y = _as_labels(test_labels, len(test_x), "test_labels", "test_features")
    classes, indices = np.unique(np.concatenate([train_y, test_y]), return_inverse=True)
    return train_x, indices[: len(train_y)], test_x, indices[len(train_y):], len(classes)


def _mean_per_class_recall(correct: np.ndarray, labels: np.ndarray) -> float:
    """Recall averaged over the classes present in labels, so rare classes weigh as much as common ones."""
    counts = np.bincount(labels)
    hits = np.bincount(labels, weights=correct)
    present = counts > 0
    return float(np.mean(hits[present] / counts[present]))


def _nearest(sims: np.ndarray, train_y: np.ndarray, test_y: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k nearest training rows per test row, nearest first.

    Equal similarities are ordered against the model: neighbours of another class than the test row's
    come first, then the lower training index. This decides both which of the neighbours tied at the
    k-th place get in and where every smaller k cuts.
    """
    n_rows, n_train = sims.shape
    if k < n_train:
        nbr = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    else:
        nbr = np.broadcast_to(np.arange(n_train), (n_rows, n_train)).copy()
    kth = np.take_along_axis(sims, nbr, axis=1).min(axis=1)
    # argpartition chose arbitrarily among training rows tied at the k-th similarity; redo those by the rule.
    tied_kept = (np.take_along_axis(sims, nbr, axis=1) == kth[:, None]).sum(axis=1)
    straddles = (sims == kth[:, None]).sum(axis=1) > tied_kept
    for r in np.flatnonzero(straddles):
        above = np.flatnonzero(sims[r] > kth[r])
        tied = np.flatnonzero(sims[r] == kth[r])
        tied = tied[np.argsort(train_y[tied] == test_y[r], kind="stable")]
        nbr[r] = np.concatenate([above, tied[: k - len(above)]])
    nbr_sims = np.take_along_axis(sims, nbr, axis=1)
    same_class = train_y[nbr] == test_y[:, None]
    order = np.lexsort((nbr, same_class, -nbr_sims), axis=-1)
    return np.take_along_axis(nbr, order, axis=1)


def knn_accuracy(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    ks: Sequence[int] | None = None,
    temperature: float | None = None,
) -> dict[str, float]:
    """Top-1 accuracy of the weighted k-NN classifier of DINO (Caron et al. 2021) for each k.

    Features are L2-normalised; each of the k most cosine-similar training rows votes for its class
    with weight exp(similarity / temperature), and the class with the largest summed vote wins.
    Ties: a vote tie between the true class and another counts as wrong; neighbours tied in similarity
    at the k-th place are taken other-class first, then by lower training index (see _nearest).
    A k above the number of training rows is clamped to it (with a warning) but keeps its name.
    Test rows are scored in blocks, so memory stays bounded whatever the set sizes.
    Returns knn_top1_k{k} per k as a fraction in [0, 1]. `ks` and `temperature` default to the schema's
    `probe.knn_ks` and `probe.knn_temperature`.
    """
    ks = default("probe.knn_ks") if ks is None else ks
    temperature = default("probe.knn_temperature") if temperature is None else temperature
    train_x, train_y, test_x, test_y, n_classes = _check_split(train_features, train_labels, test_features, test_labels)
    if len(ks) == 0 or any(int(k) != k or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {list(ks)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    n_train = len(train_x)
    clamped = {int(k): min(int(k), n_train) for k in ks}
    too_large = sorted(k for k in clamped if k > n_train)
    if too_large:
        warnings.warn(f"k = {too_large} above the {n_train} training rows is clamped to {n_train}", stacklevel=2)
    cuts = sorted(set(clamped.values()))
    correct = {k: np.empty(len(test_x), dtype=bool) for k in cuts}
    train_x, test_x = _normalise(train_x), _normalise(test_x)

    # The vote matrix is rows × classes, so the block size must bound it as well as the similarities.
    for rows in _row_blocks(len(test_x), max(n_train, n_classes)):
        sims = test_x[rows] @ train_x.T
        nbr = _nearest(sims, train_y, test_y[rows], cuts[-1])
        weights = np.exp(np.take_along_axis(sims, nbr, axis=1) / temperature)
        n_rows = len(nbr)
        offsets = np.arange(n_rows)[:, None] * n_classes
        for k in cuts:
            # Counted afresh per k so each class's vote is summed in neighbour order: classes with the
            # same similarities get bit-identical votes, and their tie is seen as one.
            by_class = np.bincount(
                (offsets + train_y[nbr[:, :k]]).ravel(), weights=weights[:, :k].ravel(), minlength=n_rows * n_classes
            ).reshape(n_rows, n_classes)
            correct[k][rows] = _pessimistic_rank(by_class, by_class[np.arange(n_rows), test_y[rows]]) == 1
    return {f"knn_top1_k{k}": float(correct[used].mean()) for k, used in clamped.items()}


def _fit_logistic(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, weight_decay: float, max_iter: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression by full-batch L-BFGS from zero (convex, so the start is harmless)."""
    weight = torch.zeros(x.shape[1], n_classes, dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=x.dtype, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        # The bias is not regularised: it only encodes class frequencies.
        loss = F.cross_entropy(x @ weight + bias, y) + weight_decay / 2 * weight.square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return weight.detach(), bias.detach()


def _correct(x: torch.Tensor, y: np.ndarray, weight: torch.Tensor, bias: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        logits = (x @ weight + bias).double().numpy()
    return _pessimistic_rank(logits, logits[np.arange(len(y)), y]) == 1


def linear_probe_accuracy(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    weight_decays: Sequence[float] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
    validation_fraction: float = 0.2,
    max_iter: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """Accuracy of a multinomial logistic regression trained on frozen features.

    Features are standardised with the training set's mean and standard deviation (constant
    dimensions are left at zero). The L2 penalty weight_decay / 2 · ||W||² (added to the mean
    cross-entropy) is chosen from weight_decays by top-1 accuracy on a held-out validation_fraction
    of the training rows, drawn with seed (equal accuracy: the stronger penalty); the probe is then
    refitted on all training rows. A single weight decay skips the held-out split. Deterministic.
    Returns linear_probe_top1_accuracy, linear_probe_mean_per_class_recall (top-1 recall averaged
    over the classes present in test_labels) and linear_probe_weight_decay (the one chosen).
    """
    train_x, train_y, test_x, test_y, n_classes = _check_split(train_features, train_labels, test_features, test_labels)
    if len(weight_decays) == 0 or any(not wd >= 0 for wd in weight_decays):
        raise ValueError(f"weight_decays must be non-negative numbers, got {list(weight_decays)}")
    n_val = max(1, round(validation_fraction * len(train_x)))
    if len(weight_decays) > 1 and not (0 < validation_fraction < 1 and n_val < len(train_x)):
        raise ValueError(
            f"validation_fraction {validation_fraction} leaves no rows to fit or validate on "
            f"({len(train_x)} training rows)"
        )
    mean, std = train_x.mean(axis=0), train_x.std(axis=0)
    std[std == 0] = 1
    # float32: the probe's accuracy does not need float64, and it halves the cost of every step.
    x = torch.from_numpy((train_x - mean) / std).float()
    x_test = torch.from_numpy((test_x - mean) / std).float()
    y = torch.from_numpy(train_y)

    chosen = weight_decays[0]
    if len(weight_decays) > 1:
        order = torch.from_numpy(np.random.default_rng(seed).permutation(len(train_x)))
        val, fit = order[:n_val], order[n_val:]
        best = -1.0
        for wd in sorted(weight_decays, reverse=True):
            accuracy = _correct(x[val], train_y[val.numpy()], *_fit_logistic(x[fit], y[fit], n_classes, wd, max_iter))
            if accuracy.mean() > best:
                best, chosen = accuracy.mean(), wd

    correct = _correct(x_test, test_y, *_fit_logistic(x, y, n_classes, chosen, max_iter))
    return {
        "linear_probe_top1_accuracy": float(correct.mean()),
        "linear_probe_mean_per_class_recall": _mean_per_class_recall(correct, test_y),
        "linear_probe_weight_decay": float(chosen),
    }
