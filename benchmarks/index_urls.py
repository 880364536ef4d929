"""Time and peak memory of indexing a URL list (`index_url_list`, as `vlalign index-urls` runs it), projected to 10^8.

    python benchmarks/index_urls.py [--rows 100000 1000000 10000000] [--formats parquet csv]
                                    [--samples-per-shard 1000] [--smoke]

A synthetic list shaped like CC12M's (url, caption; URLs of ~70 characters on 5,000 hosts, captions of 12
words, ~90 characters; 1 % of the rows repeat an earlier row) is written once per size and format (parquet: row
groups of 10^6 rows; CSV: quoted where needed), then indexed in a fresh process with an empty outcome store. Per case:
seconds, rows per second, the process's peak RSS and its growth during the call (the peak is reset after the
imports), bytes per row of that growth, and the index's size on disk. The projection to 10^8 rows takes the
largest size's rate, and the memory growth as a line through the two largest sizes (both linear in N: one pass
over the list, hashes and ranks held per row; the repeats' sort is N log N but a small share). Prints one JSON
line; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

BATCH = 1_000_000  # rows generated and written at a time (one parquet row group each)
WORDS = 2_000  # vocabulary of the captions
REPEATED = 0.01
PROJECT_TO = 10**8


def log(message: str) -> None:
    print(f"[index_urls {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def synthetic_batch(rng, first: int, rows: int) -> pa.Table:
    """Rows first .. first+rows-1 of the list: url and caption, 1 % of them copies of a row a little earlier."""
    numbers = pa.array(np.arange(first, first + rows)).cast(pa.string())
    hosts = pa.array(rng.integers(0, 5000, rows)).cast(pa.string())
    paths = pa.array(rng.integers(0, 2**62, rows)).cast(pa.string())
    url = pc.binary_join_element_wise("https://img", hosts, ".example-photos.com/p/", paths, "/", numbers, ".jpg", "")
    vocabulary = pa.array([f"word{i}" for i in range(WORDS)])
    words = [vocabulary.take(pa.array(rng.zipf(1.3, rows) % WORDS)) for _ in range(12)]
    caption = pc.binary_join_element_wise(*words, " ")
    source = np.arange(rows)
    copies = rng.random(rows) < REPEATED
    source[copies] = np.maximum(source[copies] - rng.integers(1, 1000, copies.sum()), 0)
    return pa.table({"url": url, "caption": caption}).take(pa.array(source))


def write_list(path: Path, rows: int, kind: str) -> None:
    rng = np.random.default_rng(rows)
    writer = None
    try:
        for first in range(0, rows, BATCH):
            table = synthetic_batch(rng, first, min(BATCH, rows - first))
            if writer is None:
                writer = (pq.ParquetWriter if kind == "parquet" else pacsv.CSVWriter)(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def memory_mb(field: str) -> float:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) / 1024


def index_in_this_process(path: str, samples_per_shard: int, out: str) -> dict:
    """Index the list (run in a fresh process): seconds, RSS before, peak RSS, the summary."""
    from vlalign.data.url_index import index_url_list
    from vlalign.schema import complete

    source = complete("sources.*", {"type": "url_list", "path": path, "partitions": 100}, what="sources.web")
    rss_before = memory_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak, to the current resident set
    cpu_before = time.process_time()
    started = time.perf_counter()
    summary = index_url_list("web", source, samples_per_shard, Path(out) / "index", Path(out) / "store", progress=False)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "cpu_s": time.process_time() - cpu_before, "rss_before_mb": rss_before,
            "peak_rss_mb": memory_mb("VmHWM"), "summary": summary}  # fmt: skip


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def measure(rows: int, kind: str, samples_per_shard: int, tmp: Path) -> dict:
    path = tmp / f"urls-{rows}.{kind}"
    log(f"{rows} rows, {kind}: writing")
    write_list(path, rows, kind)
    log(f"{rows} rows, {kind}: indexing ({path.stat().st_size / 2**20:.0f} MB)")
    out = tmp / f"out-{rows}-{kind}"
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        run = pool.apply(index_in_this_process, (str(path), samples_per_shard, str(out)))
    summary = run["summary"]
    assert summary["rows"] == rows, summary
    growth = run["peak_rss_mb"] - run["rss_before_mb"]
    figures = {
        "rows": rows, "format": kind, "file_mb": round(path.stat().st_size / 2**20, 1),
        "seconds": round(run["seconds"], 2), "cpu_s": round(run["cpu_s"], 2),
        "rows_per_s": round(rows / run["seconds"]), "peak_rss_mb": round(run["peak_rss_mb"], 1),
        "rss_before_mb": round(run["rss_before_mb"], 1), "peak_growth_mb": round(growth, 1),
        "growth_bytes_per_row": round(growth * 2**20 / rows, 1), "index_mb": round(folder_mb(out / "index"), 1),
        "chunks": summary["chunks"], "repeats": summary["repeats"],
    }  # fmt: skip
    log(f"{rows} rows, {kind}: {figures['seconds']} s, peak {figures['peak_rss_mb']} MB")
    path.unlink()
    return figures


def projection(cases: list[dict]) -> dict:
    """10^8 rows per format: time at the largest size's rate; memory as a line through the two largest sizes'
    peak growth (a fixed part, the row group or text block being decoded, plus bytes per row), added to the RSS
    before the call."""
    projected = {}
    for kind in sorted({case["format"] for case in cases}):
        ordered = sorted((c for c in cases if c["format"] == kind), key=lambda c: c["rows"])
        largest = ordered[-1]
        smaller = ordered[-2] if len(ordered) > 1 else {"rows": 0, "peak_growth_mb": 0.0}
        per_row = (largest["peak_growth_mb"] - smaller["peak_growth_mb"]) * 2**20 / (largest["rows"] - smaller["rows"])
        fixed_mb = largest["peak_growth_mb"] - per_row * largest["rows"] / 2**20
        projected[kind] = {
            "from_rows": [smaller["rows"], largest["rows"]],
            "hours": round(PROJECT_TO / largest["rows_per_s"] / 3600, 2),
            "growth_bytes_per_row": round(per_row, 1), "growth_fixed_mb": round(fixed_mb, 1),
            "peak_rss_gb": round((largest["rss_before_mb"] + fixed_mb + per_row * PROJECT_TO / 2**20) / 1024, 1),
            "index_gb": round(largest["index_mb"] * PROJECT_TO / largest["rows"] / 1024, 2),
        }  # fmt: skip
    return projected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10**5, 10**6, 10**7])
    parser.add_argument("--formats", nargs="+", choices=("parquet", "csv"), default=["parquet", "csv"])
    parser.add_argument("--samples-per-shard", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true", help="2,000 and 20,000 rows: check that it runs")
    args = parser.parse_args()
    sizes = sorted([2_000, 20_000] if args.smoke else args.rows)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="vlalign-bench-index-") as tmp:
        cases = [measure(rows, kind, args.samples_per_shard, Path(tmp)) for rows in sizes for kind in args.formats]
    from machine import describe_machine  # imports torch: after the measured processes

    print(json.dumps({
        "benchmark": "index_urls", "date": datetime.date.today().isoformat(),
        "samples_per_shard": args.samples_per_shard,
        "cases": cases, "projected_1e8": projection(cases), "load_average_before": [round(x, 2) for x in load],
        "load_average_after": [round(x, 2) for x in os.getloadavg()], "machine": describe_machine(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
