"""Exact radius search over 64-bit codes (pHashes) by multi-index hashing, numpy only.

The 64 bits are split into m disjoint substrings. Two codes within Hamming distance r differ in at most r bits
over all substrings together, so (pigeonhole) they differ in at most k = floor(r / m) bits on at least one
substring. For each substring, codes are sorted by their substring key; for every flip mask of popcount <= k,
each distinct key is looked up as key ^ mask with `np.searchsorted`, and the codes of the two buckets become
candidate pairs. Candidates are expanded in chunks of at most _CHUNK pairs (a bucket of many identical codes is
split too, so memory stays bounded by the chunk and the largest bucket), and each is verified on all 64 bits.
A pair is reported only through the first substring on which it differs in at most k bits, so a pair found
through several substrings counts once, without a set of pairs seen. Nothing within r is missed (the pigeonhole
substring enumerates it) and nothing beyond r is reported (the full distance is checked).

How m is chosen: for uniformly random codes a probe of a b-bit substring costs a look-up plus N / 2^b candidate
pairs, and each substring needs C(b, 0) + ... + C(b, k) probes. `_plan` takes the m minimising that estimate,
which puts substrings near log2(N) bits, where buckets hold about one code, and k small (m = 3, substrings of
21-22 bits, k = 1 for N = 10^7 and r = 4). It also weighs the all-pairs plan (one substring of zero bits, every
code a candidate of every other) and takes it where that is cheaper: small N, or radii too large for an index.
"""

from __future__ import annotations

from itertools import combinations
from math import comb
from typing import Iterator

import numpy as np

NONE_WITHIN = 255  # the distance reported where no code is within the radius
_CHUNK = 1 << 21  # candidate pairs verified at once: ~100 MB of temporaries
_PROBE_COST = 8.0  # a key look-up costs about 8 candidate verifications (timed on numpy 2.4); it only steers m


def _substrings(m: int) -> list[tuple[int, int]]:
    """(offset, width) of m disjoint substrings covering 64 bits as evenly as possible; m = 0: one of zero bits."""
    if m == 0:
        return [(0, 0)]
    widths = [64 // m + (s < 64 % m) for s in range(m)]
    return [(sum(widths[:s]), w) for s, w in enumerate(widths)]


def _estimated_cost(m: int, radius: int, n_others: int) -> float:
    """Expected work per query code for uniformly random codes (see the module docstring)."""
    k = radius // m if m else 0
    return sum(sum(comb(w, f) for f in range(k + 1)) * (_PROBE_COST + n_others / 2**w) for _, w in _substrings(m))


def _plan(radius: int, n_others: int) -> int:
    """The number of substrings to use; 0 is the all-pairs plan. More than r + 1 only narrows substrings."""
    return min(range(min(radius + 1, 64) + 1), key=lambda m: _estimated_cost(m, radius, n_others))


def work_per_code(radius: int, n_others: int) -> float:
    """The estimated work (candidate verifications) of one query code against `n_others` codes under the chosen
    plan; `vlalign plan` turns it into time with a measured rate."""
    return _estimated_cost(_plan(radius, n_others), radius, n_others)


def _flip_masks(width: int, k: int) -> list[int]:
    """Masks of popcount <= k within `width` bits, 0 first."""
    return [sum(1 << b for b in bits) for f in range(min(k, width) + 1) for bits in combinations(range(width), f)]


def _spans(weights: np.ndarray, limit: int) -> Iterator[tuple[int, int]]:
    """Consecutive [start, stop) ranges whose weights sum to at most `limit` (or a single heavier item)."""
    ends = np.cumsum(weights)
    start = 0
    while start < len(weights):
        before = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, before + limit, side="right")), start + 1)
        yield start, stop
        start = stop


class _Sorted:
    """Codes sorted by one substring key, with the distinct keys and their buckets' [start, start + count)."""

    def __init__(self, codes: np.ndarray, offset: int, width: int):
        keys = (codes >> np.uint64(offset)) & np.uint64((1 << width) - 1)
        self.order = np.argsort(keys, kind="stable")
        self.codes = codes[self.order]
        keys = keys[self.order]
        first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, np.int64)
        self.keys, self.start = keys[first], first
        self.count = np.diff(np.r_[first, len(keys)])


def _join(queries: np.ndarray, others: np.ndarray, radius: int, m: int, self_join: bool, stats: dict | None):
    """Chunks of (query index, other index, distance) for pairs within `radius`, each pair once. With self_join
    (others is queries), each unordered pair of distinct positions comes once, in either order."""
    layout = _substrings(m)
    k = radius // m if m else 0
    candidates = 0
    for s, (offset, width) in enumerate(layout):
        q = _Sorted(queries, offset, width)
        x = q if self_join else _Sorted(others, offset, width)
        for mask in _flip_masks(width, k):
            target = q.keys ^ np.uint64(mask)
            found = np.minimum(np.searchsorted(x.keys, target), len(x.keys) - 1)
            a = np.flatnonzero(x.keys[found] == target) if len(x.keys) else np.zeros(0, np.int64)
            b = found[a]
            within = self_join and not mask  # pairs inside one bucket: each position with the later ones
            if within:
                a = b = a[q.count[a] > 1]
            elif self_join:
                once = q.keys[a] < x.keys[b]  # the pair of buckets once, not twice
                a, b = a[once], b[once]
            weights = q.count[a] * (q.count[a] - 1) // 2 if within else q.count[a] * x.count[b]
            for lo, hi in _spans(weights, _CHUNK):
                counts = q.count[a[lo:hi]]
                rows = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
                q_pos = np.repeat(q.start[a[lo:hi]], counts) + rows
                if within:
                    x_start = q_pos + 1
                    length = np.repeat(q.start[a[lo:hi]] + counts, counts) - x_start
                else:
                    x_start = np.repeat(x.start[b[lo:hi]], counts)
                    length = np.repeat(x.count[b[lo:hi]], counts)
                for r_lo, r_hi in _spans(length, _CHUNK):
                    n = length[r_lo:r_hi]
                    left = np.repeat(q_pos[r_lo:r_hi], n)
                    right = np.repeat(x_start[r_lo:r_hi] - (np.cumsum(n) - n), n) + np.arange(n.sum())
                    candidates += len(left)
                    xor = q.codes[left] ^ x.codes[right]
                    distance = np.bitwise_count(xor)
                    keep = distance <= radius
                    for t_offset, t_width in layout[:s]:  # found through an earlier substring already
                        sub = np.bitwise_count((xor >> np.uint64(t_offset)) & np.uint64((1 << t_width) - 1))
                        keep &= sub > k
                    if keep.any():
                        yield q.order[left[keep]], x.order[right[keep]], distance[keep]
    if stats is not None:
        stats.update(substrings=m, max_flips=k, candidates=candidates)


def pairs_within(
    codes: np.ndarray, radius: int, substrings: int | None = None, stats: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(i, j): every pair i < j of `codes` (uint64) within `radius` bits, sorted by (i, j).

    `substrings` forces m (0: all pairs); by default it is chosen from N and the radius. `stats`, if given, is
    filled with the plan and the number of candidate pairs verified."""
    codes = np.asarray(codes, dtype=np.uint64)
    m = _plan(radius, len(codes)) if substrings is None else substrings
    n = max(len(codes), 1)
    # i * n + j: one sort orders the pairs by (i, j).
    found = [np.minimum(a, b) * n + np.maximum(a, b) for a, b, _ in _join(codes, codes, radius, m, True, stats)]
    flat = np.sort(np.concatenate(found)) if found else np.zeros(0, np.int64)
    return flat // n, flat % n


def nearest_within(
    codes: np.ndarray,
    others: np.ndarray,
    radius: int,
    exclude_same_index: bool = False,
    substrings: int | None = None,
    stats: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(distance uint8, index int64) of each code's nearest code in `others` within `radius` bits, the lowest
    index among equally near ones; NONE_WITHIN and -1 where none is. exclude_same_index skips others[i] for
    codes[i] (a set against itself)."""
    codes, others = np.asarray(codes, dtype=np.uint64), np.asarray(others, dtype=np.uint64)
    m = _plan(radius, len(others)) if substrings is None else substrings
    # distance * len(others) + index: the smallest is the nearest, then the lowest index.
    none = NONE_WITHIN * max(len(others), 1)
    best = np.full(len(codes), none, dtype=np.int64)
    for i, j, distance in _join(codes, others, radius, m, False, stats):
        if exclude_same_index:
            i, j, distance = i[i != j], j[i != j], distance[i != j]
        np.minimum.at(best, i, distance.astype(np.int64) * len(others) + j)
    found = best != none
    distance = np.where(found, best // max(len(others), 1), NONE_WITHIN).astype(np.uint8)
    return distance, np.where(found, best % max(len(others), 1), -1).astype(np.int64)
