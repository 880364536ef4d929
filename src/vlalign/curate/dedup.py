"""Exact and near-duplicate images by content hash and 64-bit pHash Hamming distance.

Near pairs come from a multi-index hash (`hamming_index`): exact, and near-linear in the pool for small radii,
so pools of tens of millions are searched in minutes rather than the weeks all pairs would take. De-duplication
is greedy in pool order: a sample is a duplicate when it matches an earlier sample that was itself kept, so a
chain a~b~c with a !~ c keeps a and c, and every dropped sample names the kept one it repeats.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd

from vlalign.curate.hamming_index import NONE_WITHIN, pairs_within

# The distance reported where a sample has no pHash (it could not be decoded) or none is within the radius.
NO_HASH = NONE_WITHIN


def phash_codes(phashes: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 codes, valid mask) from hex pHash strings; missing ones are invalid."""
    valid = phashes.notna().to_numpy()
    codes = np.array([int(h, 16) if ok else 0 for h, ok in zip(phashes, valid)], dtype=np.uint64)
    return codes, valid


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) bit distances between two uint64 code arrays."""
    return np.bitwise_count(np.bitwise_xor(a[:, None], b[None, :]))  # uint8; numpy >= 2.0


def earlier_neighbours(codes: np.ndarray, max_hamming: int) -> Iterator[tuple[int, np.ndarray]]:
    """(i, indices j < i within max_hamming of i) for every i that has any, in increasing i, j sorted."""
    earlier, later = pairs_within(codes, max_hamming)
    order = np.lexsort((earlier, later))
    earlier, later = earlier[order], later[order]
    starts = np.flatnonzero(np.r_[True, later[1:] != later[:-1]]) if len(later) else []
    for start, stop in zip(starts, [*starts[1:], len(later)]):
        yield int(later[start]), earlier[start:stop]


def greedy_duplicates(
    sha256: pd.Series, phash: pd.Series, exact: bool = True, near: bool = True, max_hamming: int = 4
) -> pd.DataFrame:
    """Per sample, in the given order: `of`, the index label of the earlier kept sample it
    duplicates (None when it is kept), and `kind`, "exact" or "near"."""
    labels = list(sha256.index)
    codes, valid = phash_codes(phash)
    neighbours: dict[int, np.ndarray] = {}
    if near and valid.any():
        positions = np.flatnonzero(valid)
        for i, js in earlier_neighbours(codes[positions], max_hamming):
            neighbours[int(positions[i])] = positions[js]
    first_kept_with_hash: dict[str, int] = {}
    kept = np.zeros(len(labels), dtype=bool)
    of: list = [None] * len(labels)
    kind: list = [None] * len(labels)
    for i, digest in enumerate(sha256):
        if exact and digest in first_kept_with_hash:
            of[i], kind[i] = labels[first_kept_with_hash[digest]], "exact"
            continue
        earlier_kept = [j for j in neighbours.get(i, ()) if kept[j]]
        if earlier_kept:
            of[i], kind[i] = labels[min(earlier_kept)], "near"
            continue
        kept[i] = True
        first_kept_with_hash.setdefault(digest, i)
    return pd.DataFrame({"of": of, "kind": kind}, index=sha256.index, dtype=object)
