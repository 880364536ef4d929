"""Exact and near-duplicate images by content hash and 64-bit pHash Hamming distance.

Distances are computed block by block over all pairs (O(N^2) XOR + popcount, well under
a second for 10k images); pools of millions would need an index (multi-index hashing)
instead. De-duplication is greedy in pool order: a sample is a duplicate when it
matches an earlier sample that was itself kept, so a chain a~b~c with a !~ c keeps a
and c, and every dropped sample names the kept one it repeats.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd

_BLOCK = 1024  # rows per block: a block of distances to 10k codes is ~80 MB while computed
NO_HASH = 255  # the distance reported where a sample has no pHash (it could not be decoded)


def phash_codes(phashes: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 codes, valid mask) from hex pHash strings; missing ones are invalid."""
    valid = phashes.notna().to_numpy()
    codes = np.array([int(h, 16) if ok else 0 for h, ok in zip(phashes, valid)], dtype=np.uint64)
    return codes, valid


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) bit distances between two uint64 code arrays."""
    return np.bitwise_count(np.bitwise_xor(a[:, None], b[None, :]))  # uint8; numpy >= 2.0


def earlier_neighbours(codes: np.ndarray, max_hamming: int) -> Iterator[tuple[int, np.ndarray]]:
    """(i, indices j < i within max_hamming of i) for every i that has any."""
    for start in range(0, len(codes), _BLOCK):
        stop = min(start + _BLOCK, len(codes))
        dist = hamming(codes[start:stop], codes[:stop])
        rows, cols = np.nonzero(dist <= max_hamming)
        earlier = cols < rows + start
        rows, cols = rows[earlier], cols[earlier]
        for row in np.unique(rows):
            yield int(row) + start, cols[rows == row]


def nearest(codes: np.ndarray, others: np.ndarray, exclude_same_index: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of each code's nearest code in `others`; NO_HASH distance when `others` is empty."""
    distance = np.full(len(codes), NO_HASH, dtype=np.uint8)
    index = np.full(len(codes), -1, dtype=np.int64)
    if len(others) == 0:
        return distance, index
    for start in range(0, len(codes), _BLOCK):
        stop = min(start + _BLOCK, len(codes))
        dist = hamming(codes[start:stop], others)
        if exclude_same_index:
            rows = np.arange(stop - start)
            keep = rows + start < dist.shape[1]
            dist[rows[keep], rows[keep] + start] = NO_HASH
        index[start:stop] = dist.argmin(axis=1)
        distance[start:stop] = dist.min(axis=1)
    return distance, index


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
