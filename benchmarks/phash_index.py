"""Near-duplicate pHash pairs by multi-index hashing (issue 16) against all pairs, at pool sizes up to 10^7.

    python benchmarks/phash_index.py [--sizes 100000 1000000 10000000] [--radius 4] [--smoke]

Random 64-bit codes, 1% of them partners planted at distances 0..radius from another code. Per size: the wall
seconds and peak resident memory of `pairs_within` (the process's peak is reset before the call, so the
figure includes the codes and the interpreter, listed as rss_before_mb), the candidate pairs verified, and the
recall of the planted pairs (1.0: the search is exact); at the smallest size the pairs are also compared with
all pairs. All pairs, as dedup searched before the index, are timed at 5*10^4 codes and extrapolated as N^2.
Prints one JSON line. `--smoke`: sizes 10^4 and 10^5.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import numpy as np

from machine import describe_machine
from vlalign.curate.dedup import hamming
from vlalign.curate.hamming_index import pairs_within

ALL_PAIRS_N = 50_000
_ROWS = 256  # rows of an all-pairs block: 256 x 10^5 distances are 200 MB of XORs


def memory_mb(field: str) -> float:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) / 1024


def planted_codes(rng, n: int, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, i, j): random codes where code j of each planted pair is code i with (pair % (radius + 1)) bits
    flipped."""
    codes = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    planted = n // 100
    ends = rng.choice(n, 2 * planted, replace=False)
    first, second = ends[:planted], ends[planted:]
    flips = np.arange(planted) % (radius + 1)
    bits = np.argsort(rng.random((planted, 64)), axis=1).astype(np.uint64)  # a random bit order per pair
    masks = np.where(np.arange(64) < flips[:, None], np.uint64(1) << bits, np.uint64(0)).sum(axis=1, dtype=np.uint64)
    codes[second] = codes[first] ^ masks
    return codes, np.minimum(first, second), np.maximum(first, second)


def all_pairs(codes: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair i < j within radius by blocks of distances to the earlier codes, as dedup did before the index."""
    found_i, found_j = [], []
    for start in range(0, len(codes), _ROWS):
        stop = min(start + _ROWS, len(codes))
        rows, cols = np.nonzero(hamming(codes[start:stop], codes[:stop]) <= radius)
        earlier = cols < rows + start
        found_i.append(cols[earlier])
        found_j.append(rows[earlier] + start)
    i, j = np.concatenate(found_i), np.concatenate(found_j)
    order = np.lexsort((j, i))
    return i[order], j[order]


def measure(n: int, radius: int, seed: int, compare: bool) -> dict:
    codes, planted_i, planted_j = planted_codes(np.random.default_rng(seed), n, radius)
    rss_before = memory_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak, to the current resident set
    stats: dict = {}
    start = time.perf_counter()
    i, j = pairs_within(codes, radius, stats=stats)
    seconds = time.perf_counter() - start
    peak = memory_mb("VmHWM")
    found = np.isin(planted_i * n + planted_j, i * n + j)
    row = {"n": n, "seconds": seconds, "peak_rss_mb": round(peak, 1), "rss_before_mb": round(rss_before, 1),
           "peak_growth_mb": round(peak - rss_before, 1),
           **stats, "candidates_per_code": round(stats["candidates"] / n, 1), "pairs": len(i),
           "planted": len(planted_i), "recall": float(found.mean())}  # fmt: skip
    if compare:
        expected_i, expected_j = all_pairs(codes, radius)
        row["agrees_with_all_pairs"] = bool(np.array_equal(i, expected_i) and np.array_equal(j, expected_j))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**5, 10**6, 10**7])
    parser.add_argument("--radius", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="sizes 10^4 and 10^5: check that it runs")
    args = parser.parse_args()
    sizes = sorted([10**4, 10**5] if args.smoke else args.sizes)
    codes, _, _ = planted_codes(np.random.default_rng(0), ALL_PAIRS_N, args.radius)
    start = time.perf_counter()
    all_pairs(codes, args.radius)
    all_pairs_s = time.perf_counter() - start
    rows = [measure(n, args.radius, seed, compare=seed == 0) for seed, n in enumerate(sizes)]
    for row in rows:
        row["all_pairs_s_extrapolated"] = round(all_pairs_s * (row["n"] / ALL_PAIRS_N) ** 2, 1)
        row["speedup"] = round(all_pairs_s * (row["n"] / ALL_PAIRS_N) ** 2 / row["seconds"], 1)
        row["seconds"] = round(row["seconds"], 3)
    print(json.dumps({
        "benchmark": "phash_index", "date": datetime.date.today().isoformat(), "radius": args.radius,
        "all_pairs": {"n": ALL_PAIRS_N, "seconds": round(all_pairs_s, 2)}, "sizes": rows,
        "machine": describe_machine(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
