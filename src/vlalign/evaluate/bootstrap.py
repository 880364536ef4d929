"""Percentile bootstrap intervals of a mean over evaluation items, and of a paired difference of two such means.

An evaluation metric is a mean over items (images, captions, Winoground pairs): its uncertainty is that of the
items drawn into the evaluation set. The interval draws the items with replacement `resamples` times and takes the
2.5th and 97.5th percentiles of the resampled means (Efron's percentile interval). Two runs scored on the same
items are compared by resampling the same items for both, which is the bootstrap of the per-item differences: the
items' shared difficulty cancels, so the interval is much narrower than the two runs' own intervals suggest.

The generator's seed is fixed, so the same values always give the same interval, and every metric over the same
number of items is resampled with the same items.
"""

from __future__ import annotations

import numpy as np

CONFIDENCE = 0.95
SEED = 0
# Resampled item indices drawn at once: 8 MB of int64. At 50,000 items x 1,000 resamples this is 5x faster than
# one 5·10^7 index matrix (0.3 s against 1.6 s, measured), whose 400 MB the gather then doubles.
BLOCK_ELEMENTS = 1 << 20


def resampled_means(values: np.ndarray, resamples: int, seed: int = SEED) -> np.ndarray:
    """The means of `resamples` bootstrap samples of `values` (one per item): each draws len(values) items
    with replacement."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"values must be a non-empty 1-D array (one per item), got shape {values.shape}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    n = len(values)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    rows = max(1, BLOCK_ELEMENTS // n)
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        means[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return means


def percentile_interval(values: np.ndarray, resamples: int, seed: int = SEED) -> tuple[float, float]:
    """The 95 % percentile bootstrap interval (low, high) of the mean of `values`, one per item."""
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(resampled_means(values, resamples, seed), [tail, 100 - tail])
    return float(low), float(high)


def paired_difference(values: np.ndarray, baseline: np.ndarray, resamples: int,
                      seed: int = SEED) -> tuple[float, float, float]:  # fmt: skip
    """(difference, low, high): mean(values) − mean(baseline) and its 95 % paired bootstrap interval, for two
    runs' outcomes on the same items in the same order (the same resampled items for both)."""
    values, baseline = np.asarray(values, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if values.shape != baseline.shape:
        raise ValueError(f"paired outcomes must cover the same items, got shapes {values.shape} and {baseline.shape}")
    differences = values - baseline
    return (float(np.mean(differences)), *percentile_interval(differences, resamples, seed))


def excludes_zero(low: float, high: float) -> bool:
    """Whether an interval of a difference lies wholly on one side of 0: the difference is significant at 5 %."""
    return low > 0 or high < 0
