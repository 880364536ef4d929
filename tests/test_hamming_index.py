"""The multi-index hash equals all pairs: every pair within the radius, none beyond, nearest ties as argmin."""

from math import comb
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from vlalign.config import ConfigError, validate_config
from vlalign.curate.dedup import earlier_neighbours, greedy_duplicates, phash_codes
from vlalign.curate.hamming_index import NONE_WITHIN, nearest_within, pairs_within

REPO = Path(__file__).resolve().parents[1]
RADII = range(11)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(a[:, None] ^ b[None, :]).astype(np.int64)


def brute_pairs(codes: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    return np.nonzero(np.triu(distances(codes, codes) <= radius, 1))  # row-major: sorted by (i, j)


def brute_nearest(codes, others, radius, exclude_same_index=False):
    d = distances(codes, others)
    if exclude_same_index:
        n = min(d.shape)
        d[np.arange(n), np.arange(n)] = 999
    if d.shape[1] == 0:
        return np.full(len(codes), NONE_WITHIN), np.full(len(codes), -1)
    index, distance = d.argmin(axis=1), d.min(axis=1)
    within = distance <= radius
    return np.where(within, distance, NONE_WITHIN), np.where(within, index, -1)


def flips(rng, n: int, bits: int) -> np.ndarray:
    """n masks of exactly `bits` set bits."""
    masks = np.zeros(n, dtype=np.uint64)
    for row in range(n):
        for b in rng.choice(64, bits, replace=False):
            masks[row] |= np.uint64(1) << np.uint64(b)
    return masks


def planted(rng, n: int) -> np.ndarray:
    """Random codes, a third of them copies of others with 0..10 bits flipped, in shuffled order."""
    codes = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    copies = n // 3
    for k in range(copies):
        codes[n - 1 - k] = codes[k] ^ flips(rng, 1, k % 11)[0]
    return rng.permutation(codes)


def skewed(rng, n: int) -> np.ndarray:
    """A quarter identical codes, a quarter within a few bits of one centre, a quarter sharing their low 48 bits
    (one huge bucket per low substring, mostly far apart), the rest random."""
    codes = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    q = n // 4
    codes[:q] = codes[0]
    centre = codes[q]
    for k in range(q, 2 * q):
        codes[k] = centre ^ flips(rng, 1, k % 6)[0]
    low = np.uint64((1 << 48) - 1)
    codes[2 * q:3 * q] = (codes[2 * q:3 * q] & ~low) | (codes[2 * q] & low)
    return rng.permutation(codes)


def plans(radius: int) -> list:
    """The automatic plan, all pairs, and every forced number of substrings cheap enough to enumerate."""
    def probes(m):
        return sum(sum(comb(64 // m + 1, f) for f in range(radius // m + 1)) for _ in range(m))

    return [None, 0] + [m for m in (1, 2, 3, 4, 5, 6, 8, 11, 16) if probes(m) <= 3000]


@pytest.fixture(scope="module")
def sets():
    rng = np.random.default_rng(16)
    return {"planted": planted(rng, 3000), "skewed": skewed(rng, 2000), "evals": planted(rng, 1500)}


@pytest.mark.parametrize("kind", ["planted", "skewed"])
@pytest.mark.parametrize("radius", RADII)
def test_pairs_within_equal_all_pairs(sets, kind, radius):
    codes = sets[kind]
    expected_i, expected_j = brute_pairs(codes, radius)
    for substrings in plans(radius):
        i, j = pairs_within(codes, radius, substrings=substrings)
        assert i.dtype == j.dtype == np.int64
        assert np.array_equal(i, expected_i) and np.array_equal(j, expected_j), substrings


@pytest.mark.parametrize("kind", ["planted", "skewed"])
@pytest.mark.parametrize("radius", RADII)
def test_nearest_within_equals_all_pairs_with_argmin_ties(sets, kind, radius):
    codes = sets[kind]
    # Half the eval codes are near pool codes; half of the pool has its exact twin in the evals (ties).
    others = np.concatenate([sets["evals"][:750], codes[::4] ^ np.uint64(0b101), codes[::2]])
    for substrings in plans(radius):
        distance, index = nearest_within(codes, others, radius, substrings=substrings)
        assert distance.dtype == np.uint8 and index.dtype == np.int64
        expected = brute_nearest(codes, others, radius)
        assert np.array_equal(distance, expected[0]) and np.array_equal(index, expected[1]), substrings
        distance, index = nearest_within(codes, codes, radius, exclude_same_index=True, substrings=substrings)
        expected = brute_nearest(codes, codes, radius, exclude_same_index=True)
        assert np.array_equal(distance, expected[0]) and np.array_equal(index, expected[1]), substrings


def test_tiny_and_empty_sets():
    none = np.zeros(0, dtype=np.uint64)
    one = np.array([7], dtype=np.uint64)
    for codes in (none, one):
        i, j = pairs_within(codes, 4)
        assert len(i) == len(j) == 0 and i.dtype == np.int64
    distance, index = nearest_within(one, none, 4)
    assert distance.tolist() == [NONE_WITHIN] and index.tolist() == [-1]
    distance, index = nearest_within(one, one, 4, exclude_same_index=True)
    assert distance.tolist() == [NONE_WITHIN] and index.tolist() == [-1]
    assert nearest_within(none, one, 4)[0].shape == (0,)
    full = np.array([0, 2**64 - 1], dtype=np.uint64)
    assert [a.tolist() for a in pairs_within(full, 64)] == [[0], [1]] and len(pairs_within(full, 63)[0]) == 0


@pytest.mark.parametrize("radius", [0, 3, 4, 10])
def test_earlier_neighbours_group_pairs_by_the_later_sample(sets, radius):
    codes = sets["skewed"]
    within = np.tril(distances(codes, codes) <= radius, -1)
    expected = [(i, np.flatnonzero(within[i])) for i in range(len(codes)) if within[i].any()]
    found = list(earlier_neighbours(codes, radius))
    assert [i for i, _ in found] == [i for i, _ in expected]
    assert all(np.array_equal(js, e) for (_, js), (_, e) in zip(found, expected))


def reference_greedy(sha: pd.Series, phash: pd.Series, max_hamming: int) -> list:
    codes, valid = phash_codes(phash)
    near = (distances(codes, codes) <= max_hamming) & valid[:, None] & valid[None, :]
    labels, kept, of = list(sha.index), [], []
    for i, digest in enumerate(sha):
        twin = next((j for j in kept if sha.iloc[j] == digest), None)
        if twin is None:
            twin = next((j for j in kept if near[i, j]), None)
        of.append(None if twin is None else labels[twin])
        if twin is None:
            kept.append(i)
    return of


@pytest.mark.parametrize("max_hamming", [0, 4, 9])
def test_greedy_duplicates_equal_a_greedy_over_all_pairs(sets, max_hamming):
    rng = np.random.default_rng(max_hamming)
    codes = sets["skewed"][:600]
    phash = pd.Series([f"{int(c):016x}" for c in codes], index=np.arange(600) * 3 + 100, dtype=object)
    phash[phash.index[rng.choice(600, 40, replace=False)]] = None
    sha = pd.Series([f"sha{rng.integers(550)}" for _ in range(600)], index=phash.index)
    found = greedy_duplicates(sha, phash, max_hamming=max_hamming)
    assert found["of"].tolist() == reference_greedy(sha, phash, max_hamming)


def test_config_refuses_a_decontaminate_threshold_beyond_the_measured_one():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["curate"]["measure"]["max_hamming"] = 3
    config["curate"]["filters"]["decontaminate"]["max_hamming"] = 5
    with pytest.raises(ConfigError, match="curate.filters.decontaminate.max_hamming: 5 is above "
                                          r"curate.measure.max_hamming \(3\)"):  # fmt: skip
        validate_config(config)
    config["curate"]["filters"]["decontaminate"]["max_hamming"] = 3
    config["curate"]["filters"]["dedup"]["max_hamming"] = 6  # the dedup filter runs its own search
    assert validate_config(config)["curate"]["filters"]["decontaminate"]["max_hamming"] == 3
