"""Cost of one image-embedding job as the workflow runs it: a `vlalign embed` process, with the process set-up
of `vlalign.runtime` (what the command does) and without it (the C runtime's defaults).

    python benchmarks/embed_process.py [--images 1024] [--spec efficientnet-lite0] [--batch 64] [--threads 2]
    python benchmarks/embed_process.py --beton results/beton/pool.beton --table results/beton/pool.parquet --parts 8

Prints one JSON line. Each mode runs `--repeats` times, the two alternating, each in a fresh process with
OMP_NUM_THREADS set to `--threads` (as Snakemake sets it to a rule's `threads:`). Per mode: wall seconds,
user and system CPU seconds and minor page faults of the process (getrusage of the finished child), the
same per image, and the stage's own steady images/s. Counts of CPU seconds and page faults barely move
when other work shares the cores; compare wall times only between the two modes of one run.
`embeddings_equal` says whether both modes wrote the same float16 features bit for bit.

Without `--beton`, `--images` synthetic photo-like JPEGs are written to a .beton first (as
`embed_throughput.py` does); with it, part 0 of `--parts` of that dataset is embedded.
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

import numpy as np

from machine import describe_machine

# `vlalign embed` as the console script runs it, or with the process set-up left out.
_MAIN = "import sys, vlalign.cli as cli; {}sys.exit(cli.main(sys.argv[1:]))"
MODES = {"configured": _MAIN.format(""), "c_defaults": _MAIN.format("cli.configure_process = lambda: None; ")}


def run_embed(mode: str, out: Path, beton: Path, table: Path, settings: dict, part: int, parts: int,
              threads: int) -> dict:  # fmt: skip
    """One `vlalign embed` process: its rusage, wall time and the stage's summary."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-c", MODES[mode], "embed", "--settings", json.dumps(settings), "--encoder", "bench",
               "--dataset", "bench", "--beton", str(beton), "--table", str(table), "--out", str(out),
               "--part", str(part), "--parts", str(parts)]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if run.returncode != 0:
        raise SystemExit(f"vlalign embed ({mode}) failed:\n{run.stderr[-3000:]}")
    summary = json.loads(run.stdout.strip().splitlines()[-1].split(": ", 1)[1])
    return {"wall_s": wall, "user_s": after.ru_utime - before.ru_utime, "sys_s": after.ru_stime - before.ru_stime,
            "minor_faults": after.ru_minflt - before.ru_minflt, "images": summary["count"],
            "steady_items_per_s": summary.get("steady_items_per_s", 0.0)}  # fmt: skip


def per_mode(runs: list[dict]) -> dict:
    """Means over a mode's runs, and per image."""
    mean = {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}
    images = mean["images"]
    cpu = mean["user_s"] + mean["sys_s"]
    return {
        "wall_s": round(mean["wall_s"], 2),
        "user_s": round(mean["user_s"], 2),
        "sys_s": round(mean["sys_s"], 2),
        "sys_share": round(mean["sys_s"] / cpu, 3),
        "minor_faults": int(mean["minor_faults"]),
        "cpu_ms_per_image": round(1000 * cpu / images, 2),
        "minor_faults_per_image": round(mean["minor_faults"] / images, 1),
        "steady_items_per_s": round(mean["steady_items_per_s"], 2),
    }


def same_embeddings(folders: list[Path]) -> bool:
    """Whether every store holds the same keys and the same float16 features, bit for bit."""
    from vlalign.store.embeddings import open_embeddings

    stores = [open_embeddings(folder) for folder in folders]
    first = stores[0].to_numpy(np.float16)
    return all(s.keys == stores[0].keys and np.array_equal(s.to_numpy(np.float16), first) for s in stores[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1024, help="synthetic images (without --beton)")
    parser.add_argument("--beton", type=Path, help="embed this .beton instead (with --table)")
    parser.add_argument("--table", type=Path)
    parser.add_argument("--parts", type=int, default=1, help="embed part 0 of this many parts of --beton")
    parser.add_argument("--spec", default="efficientnet-lite0")
    parser.add_argument("--random-init", type=int, help="re-drawn weights (the probing matrix's control)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="ffcv loader workers")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS, the rule's threads")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if (args.beton is None) != (args.table is None):
        parser.error("--beton and --table go together")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        beton, table, parts = args.beton, args.table, args.parts
        if beton is None:
            from embed_throughput import write_dataset

            _, beton, table = write_dataset(tmp, args.images, args.seed)
            parts = 1
        settings = {
            "experiment": "embed_process", "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
            "encoder": {"spec": args.spec, "batch_size": args.batch, "random_init": args.random_init},
            "embed": {"num_workers": args.workers, "device": "cpu"},
        }  # fmt: skip
        runs = {mode: [] for mode in MODES}
        folders = []
        for repeat in range(args.repeats):
            for mode in MODES:  # alternating, so both modes meet the same machine state
                out = tmp / f"{mode}-{repeat}"
                runs[mode].append(run_embed(mode, out, beton, table, settings, 0, parts, args.threads))
                folders.append(out)
        equal = same_embeddings(folders)

    configured, defaults = per_mode(runs["configured"]), per_mode(runs["c_defaults"])

    def ratio(key: str) -> float:
        return round(defaults[key] / configured[key], 2) if configured[key] else float("inf")

    print(json.dumps({
        "benchmark": "embed_process",
        "date": datetime.date.today().isoformat(),
        "machine": {**describe_machine("cpu"), "torch_threads": args.threads},
        "spec": args.spec,
        "random_init": args.random_init,
        "dataset": str(args.beton) if args.beton else f"{args.images} synthetic images",
        "images": runs["configured"][0]["images"],
        "batch": args.batch,
        "workers": args.workers,
        "repeats": args.repeats,
        "configured": configured,
        "c_defaults": defaults,
        "ratio_cpu": round((defaults["user_s"] + defaults["sys_s"]) / (configured["user_s"] + configured["sys_s"]), 2),
        "ratio_minor_faults": ratio("minor_faults"),
        "ratio_wall": ratio("wall_s"),
        "embeddings_equal": equal,
    }))


if __name__ == "__main__":
    main()
