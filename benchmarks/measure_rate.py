"""Images per CPU-second and per wall-second of `measure_samples`, one partition's measurements (issue 16).

    python benchmarks/measure_rate.py [--images 2000] [--workers 1 2] [--smoke]

Writes `--images` synthetic photo-like JPEGs (sides of 256 to 640 px, smooth gradients plus noise, quality
85) with captions into one partition's shard folder with the project's `ShardWriter`, then runs
`measure_samples` with `ocr: off` (what `vlalign measure-samples` runs: full decode, sha256, pHash, blankness,
then captions, language and concepts) once per `--workers` value, each in a fresh process, as a job would.
CPU time is the measuring process's own plus its worker processes' (spawned, counted once they are joined).
Also the table's size per sample, in memory (pandas, deep) and as parquet: what the pool-wide gather,
`vlalign measure`, holds for every sample of every partition.
Prints one JSON line; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SIDES = (256, 320, 384, 448, 512, 640)  # the longer side; the shorter is 3/4 of it


def log(message: str) -> None:
    print(f"[measure_rate {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def photo(rng, seed: int) -> bytes:
    width = SIDES[seed % len(SIDES)]
    height = width * 3 // 4
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * (1 + c) + y * (3 - c) + seed * 37) % 256 for c in range(3)], axis=-1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def write_partition(folder: Path, images: int) -> int:
    """The partition's train shards; their bytes."""
    from vlalign.data.shards import Sample, ShardWriter

    rng = np.random.default_rng(0)
    written = 0
    with ShardWriter(folder, samples_per_shard=1000) as writer:
        for i in range(images):
            data = photo(rng, i)
            written += len(data)
            caption = f"a photo of a red bicycle leaning on a wall, number {i}"
            writer.write(Sample(f"web{i:08d}", data, "jpg", caption, {"source": "web"}))
    return written


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM); a spawned process's own, its workers' not included."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def measure_in_this_process(folder: str, workers: int) -> dict:
    """`measure_samples` of the partition (run in a fresh process): wall, CPU with the workers', phases."""
    cpu_before, started = cpu_seconds(), time.perf_counter()
    from vlalign.curate.measure import measure_samples  # its import is part of a job's cost

    table = measure_samples([Path(folder)], {"ocr": "off", "workers": workers}, progress=False)
    wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
    stored = Path(folder).parent / "measured.parquet"
    table.to_parquet(stored, index=False)
    # What `vlalign measure` holds per sample when it gathers every partition's table (the pool-wide phases).
    return {"wall_s": wall, "cpu_s": cpu, "rows": len(table), "decoded": int(table["decode_ok"].sum()),
            "phases_s": table.attrs["seconds"], "peak_rss_mb": peak_rss_mb(),
            "table_bytes_per_row": table.memory_usage(deep=True).sum() / len(table),
            "parquet_bytes_per_row": stored.stat().st_size / len(table)}  # fmt: skip


def _send_result(connection, fn, args) -> None:
    connection.send(fn(*args))


def in_fresh_process(fn, *args):
    """fn(*args) in a new spawned process that may start workers of its own (a Pool's may not: daemonic)."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_send_result, args=(sender, fn, args))
    process.start()
    sender.close()
    try:
        result = receiver.recv()
    except EOFError:
        sys.exit(f"the measuring process died (exit code {process.join() or process.exitcode})")
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--smoke", action="store_true", help="60 images: check that it runs")
    args = parser.parse_args()
    images = 60 if args.smoke else args.images
    load = os.getloadavg()
    cases = []
    with tempfile.TemporaryDirectory(prefix="vlalign-bench-measure-") as tmp:
        folder = Path(tmp) / "part-0000" / "train"
        log(f"writing {images} images")
        written = write_partition(folder, images)
        for workers in args.workers:
            log(f"measuring with {workers} worker(s)")
            run = in_fresh_process(measure_in_this_process, str(folder), workers)
            assert run["rows"] == images and run["decoded"] == images, run
            cases.append({
                "workers": workers, "wall_s": round(run["wall_s"], 2), "cpu_s": round(run["cpu_s"], 2),
                "images_per_s": round(images / run["wall_s"], 1), "images_per_cpu_s": round(images / run["cpu_s"], 1),
                "phases_s": run["phases_s"],
                "images_phase_per_s": round(images / run["phases_s"]["images"], 1),
                "peak_rss_mb": round(run["peak_rss_mb"], 1), "table_bytes_per_row": round(run["table_bytes_per_row"]),
                "parquet_bytes_per_row": round(run["parquet_bytes_per_row"]),
            })  # fmt: skip
            log(f"{workers} worker(s): {cases[-1]['wall_s']} s wall, {cases[-1]['cpu_s']} CPU s")
    from machine import describe_machine  # imports torch: after the measured processes

    print(json.dumps({
        "benchmark": "measure_rate", "date": datetime.date.today().isoformat(), "images": images,
        "mean_image_kb": round(written / images / 1024, 1), "sides_px": list(SIDES), "ocr": "off", "cases": cases,
        "load_average_before": [round(x, 2) for x in load],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "machine": describe_machine(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
