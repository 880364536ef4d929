"""A pool converted to .betons in partitions, its table gathered and every record read back (issue 16).

    python benchmarks/beton_partitions.py [--rows 20000] [--partitions 4] [--parallel 2] [--image-size 224]
                                          [--read-workers 2] [--smoke]

Writes `--rows` synthetic samples (distinct 48x48 JPEGs of colour noise, ~3 kB, caption and json)
with the project's `ShardWriter` into `download/web/part-XXXX/train` folders, `--partitions` of them. Each
partition is then converted as the workflow's `convert_partition` rule converts it: `write_beton(...,
allow_empty=True, **convert)` then `verify_beton`, the functions `vlalign convert` calls (its MLflow run left
out), each in a process of its own, at most `--parallel` at a time, with `convert: {max_resolution: 64,
num_workers: 1}`; that is what `snakemake --cores 2` runs two at a time. The images are smaller than 64 px, so
no resize: the run measures the per-sample path (decode check, spill, ffcv's JPEG encode, read back), not
resampling. A calibration partition of a few hundred samples is converted alone first: with the full-size
partitions it gives each convert phase's fixed cost per partition and cost per sample (a line through the two
sizes). Then `gather_tables` joins the partition tables into the pool's table (a fresh process), and a fresh
process reads every record back through what `vlalign embed` reads with (`beton_rows`, the embed stage's check
of the .betons' end keys, `dataset_loader` over all partition .betons in table order, images resized to
`--image-size`), no model: it counts the images, checks the rows come in order and then checks every record's
key against the gathered table. It then opens each .beton again for one image, to time opening a .beton.

Per phase: wall s, CPU s (user + system from `os.wait4`, the processes' own workers and threads included),
samples per wall-s and per CPU-s, each process's peak RSS (its own VmHWM, and wait4's `ru_maxrss`, the largest
of it and its workers), bytes per sample on disk; then the cost projected to 10^6 and 10^8 samples, the fixed
cost per partition shown apart. Prints one JSON line; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMAGE_SIDE = 48
SAMPLES_PER_SHARD = 1000
CONVERT = {"max_resolution": 64, "num_workers": 1}
CALIBRATION_ROWS = 256
READ_BATCH = 256  # an embed batch
SMOKE = {"rows": 600, "partitions": 2, "calibration_rows": 64}
# What the projection assumes: 10^6 in the partitions measured; 10^8 in partitions of this many samples.
PROJECTED_PARTITION_ROWS = 25_000
RESULT = "RESULT "  # the line a child process prints its figures on


def log(message: str) -> None:
    print(f"[beton_partitions {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# The synthetic download: shards as `vlalign download` leaves them in a partition's train folder.


def synthetic_jpeg(rng, row: int) -> bytes:
    """A distinct 48x48 JPEG: random noise around a colour that changes with the row."""
    import io

    import numpy as np
    from PIL import Image

    colour = np.array([row * 37 % 256, row * 101 % 256, row * 211 % 256], dtype=np.int16)
    noise = rng.integers(-40, 40, (IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.int16)
    pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def write_partition_shards(folder: str, first_row: int, rows: int) -> int:
    """Rows first_row .. first_row+rows-1 of the pool as shards in `folder`; their bytes on disk."""
    import numpy as np

    from vlalign.data.shards import Sample, ShardWriter

    rng = np.random.default_rng(first_row)
    with ShardWriter(folder, samples_per_shard=SAMPLES_PER_SHARD) as writer:
        for row in range(first_row, first_row + rows):
            caption = f"a small synthetic photo of coloured noise, number {row}"
            writer.write(Sample(f"web{row:09d}", synthetic_jpeg(rng, row), "jpg", caption, {"source": "web"}))
    return sum(path.stat().st_size for path in writer.paths)


def write_download(partitions: list[dict], parallel: int) -> float:
    """Every partition's shards, `parallel` partitions at a time; seconds taken (not a measured phase)."""
    import multiprocessing

    started = time.perf_counter()
    arguments = [(p["shards"], p["first_row"], p["rows"]) for p in partitions]
    with multiprocessing.get_context("spawn").Pool(parallel) as pool:
        for partition, shard_bytes in zip(partitions, pool.starmap(write_partition_shards, arguments)):
            partition["shard_bytes"] = shard_bytes
    return time.perf_counter() - started


# Child processes: each a fresh interpreter running this file with `--child`, so that a phase's start-up,
# CPU and memory are its own and those of nothing else.


class Laps:
    """Wall and CPU seconds (this process's threads and its joined workers) of the phases of a child."""

    def __init__(self, launched: float):
        self.wall = {"start_s": time.time() - launched}  # interpreter start-up, measured from the parent's launch
        self.cpu = {}
        self._wall, self._cpu = time.perf_counter(), self.cpu_seconds()

    @staticmethod
    def cpu_seconds() -> float:
        own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime

    def lap(self, name: str) -> None:
        import multiprocessing

        # ffcv's writer never joins its worker processes: join them, so their CPU time counts in this lap.
        for worker in multiprocessing.active_children():
            worker.join()
        wall, cpu = time.perf_counter(), self.cpu_seconds()
        self.wall[f"{name}_s"], self.cpu[f"{name}_s"] = wall - self._wall, cpu - self._cpu
        self._wall, self._cpu = wall, cpu

    def figures(self) -> dict:
        peak = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
        return {"wall": self.wall, "cpu": self.cpu, "own_peak_rss_mb": int(peak.split()[1]) / 1024}


def import_ffcv() -> None:
    """ffcv (and with it torch and numba), imported here so that the imports lap holds them: the store's
    functions import it on first use, which would put a fixed cost inside the first phase."""
    import ffcv.fields.decoders  # noqa: F401
    import ffcv.loader  # noqa: F401
    import ffcv.reader  # noqa: F401
    import ffcv.transforms  # noqa: F401
    import ffcv.writer  # noqa: F401


def convert_partition(laps: Laps, shards: str, beton: str, table: str) -> dict:
    """What `vlalign convert --partition` does, without its MLflow run."""
    from vlalign.store.beton import verify_beton, write_beton

    import_ffcv()
    laps.lap("imports")
    summary = write_beton([Path(shards)], Path(beton), Path(table), allow_empty=True, **CONVERT)
    laps.lap("write")
    verified = verify_beton(Path(beton), Path(table), num_workers=CONVERT["num_workers"])
    laps.lap("verify")
    return {"written": summary["written"], "skipped": len(summary["skipped"]), **verified}


def gather_pool_table(laps: Laps, out: str, *tables: str) -> dict:
    """What `vlalign gather-tables` does."""
    from vlalign.store.tables import gather_tables

    laps.lap("imports")
    summary = gather_tables(list(tables), out)
    laps.lap("gather")
    return summary


def read_pool(laps: Laps, table: str, image_size: str, workers: str, *betons: str) -> dict:
    """Every record of the pool through the embed stage's reader, in table order; then every key checked."""
    from vlalign.embed.features import check_runs
    from vlalign.store.beton import read_texts
    from vlalign.store.tables import beton_rows, count_rows

    import_ffcv()
    laps.lap("imports")
    count = count_rows(table)
    runs, keys = beton_rows(table, 0, count)
    check_runs(runs, keys, [Path(b) for b in betons], table)  # as `embed_images` checks them before reading
    laps.lap("plan")
    images = read_images(laps, runs, int(image_size), int(workers))
    for run in runs:  # the loader hands back no keys: the file's own text records must match the table's
        stored = [text["key"] for text in read_texts(run.path)]
        if stored != keys[run.start : run.stop].tolist():
            raise ValueError(f"{run.path}: its records' keys are not those of rows {run.start}..{run.stop - 1}")
    laps.lap("key_check")
    opened = [opening_seconds(run, int(image_size), int(workers)) for run in runs]
    laps.lap("reopen")
    return {"rows": count, "images": images, "betons": len(runs), "open_s": opened,
            "keys_checked": len(keys)}  # fmt: skip


def read_images(laps: Laps, runs, image_size: int, workers: int) -> int:
    """Iterate `dataset_loader` over all runs, checking the rows' order; laps: first batch (set-up), the rest."""
    import numpy as np

    from vlalign.store.beton import dataset_loader

    expected = 0
    for images, rows in dataset_loader(runs, image_size, READ_BATCH, workers):
        if not np.array_equal(rows, np.arange(expected, expected + len(rows))):
            raise ValueError(f"rows out of order at {expected}")
        if tuple(images.shape[1:]) != (3, image_size, image_size):
            raise ValueError(f"images of shape {tuple(images.shape)}")
        if expected == 0:
            laps.lap("first_batch")
        expected += len(rows)
    laps.lap("read")
    return expected


def opening_seconds(run, image_size: int, workers: int) -> dict:
    """Wall and CPU seconds to open one .beton and get one image out of it, as the reader does at each .beton
    it reaches (the files were read once already, so the page cache holds them)."""
    from vlalign.store.beton import image_loader

    wall, cpu = time.perf_counter(), Laps.cpu_seconds()
    next(iter(image_loader(run.path, image_size, READ_BATCH, workers, indices=run.indices()[:1])))
    return {"wall_s": time.perf_counter() - wall, "cpu_s": Laps.cpu_seconds() - cpu}


CHILDREN = {"convert": convert_partition, "gather": gather_pool_table, "read": read_pool}


def child_main(argv: list[str]) -> None:
    kind, launched, *arguments = argv
    laps = Laps(float(launched))
    result = CHILDREN[kind](laps, *arguments)
    print(RESULT + json.dumps({**result, **laps.figures()}), flush=True)


def launch(kind: str, arguments: list[str], log_path: Path) -> subprocess.Popen:
    # Output to a file, not a pipe: the parent blocks in wait4, and a full pipe would block the child.
    with open(log_path, "wb") as out:
        command = [sys.executable, __file__, "--child", kind, repr(time.time()), *arguments]
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def finished(status: int, usage, started: float, log_path: Path) -> dict:
    """A reaped child's figures: its own, and wall, CPU and ru_maxrss from the parent's side."""
    wall = time.perf_counter() - started
    text = log_path.read_text(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"a child process failed (exit status {os.waitstatus_to_exitcode(status)}):\n{text[-3000:]}")
    result = json.loads(next(line for line in reversed(text.splitlines()) if line.startswith(RESULT))[len(RESULT):])
    return {**result, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "maxrss_mb": usage.ru_maxrss / 1024}


def run_children(jobs: list[tuple[str, list[str]]], parallel: int, logs: Path) -> tuple[list[dict], float]:
    """Run the jobs in order, at most `parallel` at a time; their figures in job order and the wall seconds
    from the first start to the last finish."""
    results: list[dict | None] = [None] * len(jobs)
    running: dict[int, tuple[int, float, Path]] = {}
    started, waiting = time.perf_counter(), list(enumerate(jobs))
    while waiting or running:
        while waiting and len(running) < parallel:
            index, (kind, arguments) = waiting.pop(0)
            log_path = logs / f"{kind}-{index}.log"
            process = launch(kind, arguments, log_path)
            running[process.pid] = (index, time.perf_counter(), log_path)
        pid, status, usage = os.wait4(-1, 0)  # only this function's children are alive now
        index, launched, log_path = running.pop(pid)
        results[index] = finished(status, usage, launched, log_path)
    return results, time.perf_counter() - started


# The measured phases.


def partitions_of(rows: int, count: int, calibration_rows: int, folder: Path) -> list[dict]:
    """The calibration partition (first) and `count` near-equal partitions of `rows` samples, with their paths."""
    sizes = [calibration_rows] + [rows * (p + 1) // count - rows * p // count for p in range(count)]
    partitions, first_row = [], 0
    for index, size in enumerate(sizes):
        name = "calibration" if index == 0 else f"part-{index - 1:04d}"
        beton_folder = folder / ("calibration" if index == 0 else "beton/pool/web")
        partitions.append({
            "name": name, "rows": size, "first_row": first_row,
            "shards": str(folder / "download/web" / name / "train"),
            "beton": str(beton_folder / f"{name}.beton"), "table": str(beton_folder / f"{name}.parquet"),
        })  # fmt: skip
        first_row += size
    return partitions


def convert_all(partitions: list[dict], parallel: int, logs: Path) -> dict:
    calibration, pool = partitions[0], partitions[1:]
    jobs = [("convert", [p["shards"], p["beton"], p["table"]]) for p in partitions]
    log(f"converting the calibration partition ({calibration['rows']} samples) alone")
    (calibrated,), _ = run_children(jobs[:1], 1, logs)
    log(f"converting {len(pool)} partitions, {parallel} at a time")
    converted, wall = run_children(jobs[1:], parallel, logs)
    for partition, result in zip(partitions, [calibrated, *converted]):
        if result["written"] != partition["rows"] or result["verified"] != partition["rows"]:
            sys.exit(f"{partition['name']}: {result['written']} written, {result['verified']} verified")
    return {"calibration": calibrated, "partitions": converted, "wall_s": wall}


def fixed_and_per_sample(calibration: dict, converted: list[dict], rows: list[int], calibration_rows: int) -> dict:
    """Each convert phase's CPU as fixed + per sample: the line through the calibration partition and the mean
    of the full-size ones. Wall only for the whole process: the full-size ones ran `parallel` at a time and the
    calibration alone, so a phase's wall line would count the sharing of the cores as a cost per sample."""
    mean_rows = sum(rows) / len(rows)
    line = {}
    for phase, small in calibration["cpu"].items():
        big = sum(c["cpu"][phase] for c in converted) / len(converted)
        per_sample = (big - small) / (mean_rows - calibration_rows)
        line[f"cpu_{phase[:-2]}"] = {"fixed_s": round(small - per_sample * calibration_rows, 3),
                                     "per_sample_ms": round(per_sample * 1000, 4)}  # fmt: skip
    # The whole process as the parent sees it (wait4: start-up, imports and workers included).
    for clock, key in (("cpu", "cpu_s"), ("wall", "wall_s")):
        big = sum(c[key] for c in converted) / len(converted)
        per_sample = (big - calibration[key]) / (mean_rows - calibration_rows)
        line[f"{clock}_process"] = {"fixed_s": round(calibration[key] - per_sample * calibration_rows, 3),
                                    "per_sample_ms": round(per_sample * 1000, 4)}  # fmt: skip
    return line


def folder_bytes(paths) -> int:
    return sum(Path(p).stat().st_size for p in paths)


def rounded(values: dict, digits: int = 3) -> dict:
    return {k: round(v, digits) for k, v in values.items()}


def phase_figures(wall: float, cpu: float, rows: int, processes: list[dict]) -> dict:
    return {
        "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "samples_per_s": round(rows / wall, 1),
        "samples_per_cpu_s": round(rows / cpu, 1), "cores_used": round(cpu / wall, 2),
        "own_peak_rss_mb": [round(p["own_peak_rss_mb"], 1) for p in processes],
        "maxrss_with_workers_mb": [round(p["maxrss_mb"], 1) for p in processes],
    }  # fmt: skip


def projection(rows: int, partitions: int, line: dict, gather: dict, read: dict, disk: dict) -> dict:
    """CPU-s (and wall on this many cores at the measured use) of converting, gathering and reading `rows` in
    `partitions`: the convert's fixed cost per partition apart, everything else linear in the samples."""
    convert_fixed = line["cpu_process"]["fixed_s"] * partitions
    convert_samples = line["cpu_process"]["per_sample_ms"] / 1000 * rows
    gather_cpu = gather["per_sample_cpu_ms"] / 1000 * rows + gather["startup_cpu_s"]
    read_cpu = read["per_sample_cpu_ms"] / 1000 * rows + read["startup_cpu_s"] + read["open_cpu_s"] * partitions
    return {
        "rows": rows, "partitions": partitions,
        "convert_cpu_h": round((convert_fixed + convert_samples) / 3600, 3),
        "convert_fixed_cpu_h": round(convert_fixed / 3600, 3),
        "convert_per_sample_cpu_h": round(convert_samples / 3600, 3),
        "gather_cpu_h": round(gather_cpu / 3600, 4), "read_cpu_h": round(read_cpu / 3600, 3),
        "betons_gb": round(disk["beton_bytes_per_sample"] * rows / 1e9, 2),
        "pool_table_gb": round(disk["pool_table_bytes_per_sample"] * rows / 1e9, 2),
    }  # fmt: skip


def measure(args, folder: Path) -> dict:
    partitions = partitions_of(args.rows, args.partitions, args.calibration_rows, folder)
    logs = folder / "logs"
    logs.mkdir()
    log(f"writing {args.rows + args.calibration_rows} samples in {len(partitions)} partitions' shards")
    generated_s = write_download(partitions, args.parallel)
    log(f"shards written in {generated_s:.1f} s")

    converted = convert_all(partitions, args.parallel, logs)
    pool = partitions[1:]
    pool_table = folder / "beton" / "pool.parquet"
    log("gathering the pool table")
    (gathered,), _ = run_children([("gather", [str(pool_table), *[p["table"] for p in pool]])], 1, logs)
    assert gathered["rows"] == args.rows, gathered
    log(f"reading {args.rows} records back over {len(pool)} .betons")
    read_arguments = [str(pool_table), str(args.image_size), str(args.read_workers), *[p["beton"] for p in pool]]
    (read,), _ = run_children([("read", read_arguments)], 1, logs)
    assert read["images"] == args.rows == read["keys_checked"], read
    return summarise(args, partitions, generated_s, converted, gathered, read, pool_table)


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def startup_cpu(process: dict) -> float:
    """CPU seconds of a child outside its laps: the interpreter's start (and exit), from wait4's total."""
    return process["cpu_s"] - sum(process["cpu"].values())


def summarise(args, partitions, generated_s, converted, gathered, read, pool_table) -> dict:
    pool, rows = partitions[1:], args.rows
    disk = {
        "shard_bytes_per_sample": round(sum(p["shard_bytes"] for p in pool) / rows, 1),
        "beton_bytes_per_sample": round(folder_bytes(p["beton"] for p in pool) / rows, 1),
        "partition_table_bytes_per_sample": round(folder_bytes(p["table"] for p in pool) / rows, 1),
        "pool_table_bytes_per_sample": round(pool_table.stat().st_size / rows, 1),
    }  # fmt: skip
    line = fixed_and_per_sample(converted["calibration"], converted["partitions"], [p["rows"] for p in pool],
                                args.calibration_rows)  # fmt: skip
    convert_cpu = sum(c["cpu_s"] for c in converted["partitions"])
    # Reading: the set-up before the first batch and each later .beton's opening are fixed; the rest is per sample.
    open_cpu = median([o["cpu_s"] for o in read["open_s"]])
    open_wall = median([o["wall_s"] for o in read["open_s"]])
    later_opens, steady_rows = len(pool) - 1, rows - READ_BATCH
    read_model = {
        "startup_cpu_s": startup_cpu(read) + sum(read["cpu"][k] for k in ("imports_s", "plan_s", "first_batch_s")),
        "open_cpu_s": open_cpu, "open_wall_s": open_wall,
        "per_sample_cpu_ms": (read["cpu"]["read_s"] - later_opens * open_cpu) / steady_rows * 1000,
        "per_sample_wall_ms": (read["wall"]["read_s"] - later_opens * open_wall) / steady_rows * 1000,
    }  # fmt: skip
    gather_model = {"startup_cpu_s": startup_cpu(gathered) + gathered["cpu"]["imports_s"],
                    "per_sample_cpu_ms": gathered["cpu"]["gather_s"] / rows * 1000}  # fmt: skip
    largest = {"rows": 10**8, "partitions": 10**8 // PROJECTED_PARTITION_ROWS}
    return {
        "rows": rows, "partitions": args.partitions, "parallel": args.parallel, "convert_settings": CONVERT,
        "image_px": IMAGE_SIDE, "calibration_rows": args.calibration_rows, "shards_written_s": round(generated_s, 1),
        "disk": disk,
        "convert": {
            **phase_figures(converted["wall_s"], convert_cpu, rows, converted["partitions"]),
            "per_partition": [{"wall_s": round(c["wall_s"], 2), "cpu_s": round(c["cpu_s"], 2),
                               "phases_wall_s": rounded(c["wall"]), "phases_cpu_s": rounded(c["cpu"])}
                              for c in converted["partitions"]],
            "calibration": {"rows": args.calibration_rows, "wall_s": round(converted["calibration"]["wall_s"], 2),
                            "cpu_s": round(converted["calibration"]["cpu_s"], 2),
                            "phases_wall_s": rounded(converted["calibration"]["wall"]),
                            "phases_cpu_s": rounded(converted["calibration"]["cpu"])},
            "fixed_and_per_sample": line,
        },
        "gather": {**phase_figures(gathered["wall_s"], gathered["cpu_s"], rows, [gathered]),
                   "phases_wall_s": rounded(gathered["wall"]), "phases_cpu_s": rounded(gathered["cpu"])},
        "read": {**phase_figures(read["wall_s"], read["cpu_s"], rows, [read]), "image_size": args.image_size,
                 "workers": args.read_workers, "batch": READ_BATCH,
                 "phases_wall_s": rounded(read["wall"]), "phases_cpu_s": rounded(read["cpu"]),
                 "open_s": [rounded(o) for o in read["open_s"]], "model": rounded(read_model, 4)},
        "projected": [projection(10**6, args.partitions, line, gather_model, read_model, disk),
                      projection(largest["rows"], largest["partitions"], line, gather_model, read_model, disk)],
    }  # fmt: skip


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--parallel", type=int, default=2, help="convert processes at a time")
    parser.add_argument("--calibration-rows", type=int, default=CALIBRATION_ROWS)
    parser.add_argument("--image-size", type=int, default=224, help="the side the reader resizes to (DINOv2's)")
    parser.add_argument("--read-workers", type=int, default=2, help="the embed loader's workers (its default)")
    parser.add_argument("--smoke", action="store_true", help="600 samples in 2 partitions: check that it runs")
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.partitions, args.calibration_rows = (SMOKE[k] for k in ("rows", "partitions",
                                                                                "calibration_rows"))
    if args.rows < args.partitions * READ_BATCH or args.calibration_rows >= args.rows // args.partitions:
        parser.error("each partition needs more rows than a read batch and than the calibration partition")
    load, started = os.getloadavg(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vlalign-bench-betons-") as tmp:
        figures = measure(args, Path(tmp))
    from machine import describe_machine  # imports torch: after the measured processes

    print(json.dumps({
        "benchmark": "beton_partitions", "date": datetime.date.today().isoformat(), **figures,
        "total_s": round(time.perf_counter() - started, 1), "load_average_before": [round(x, 2) for x in load],
        "load_average_after": [round(x, 2) for x in os.getloadavg()], "machine": describe_machine(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
