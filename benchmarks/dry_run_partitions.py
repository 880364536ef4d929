"""Time and memory of planning the workflow for a URL list in many partitions: `snakemake -n` (issue 16).

    python benchmarks/dry_run_partitions.py [--partitions 1000 4000] [--targets all | download] [--smoke]

Writes, in a temporary folder, a config with one `url_list` source (`partitions: P`) pointing at a stub list of
a few rows, the demo's packaged encoders (efficientnet_lite0, minilm_l6: no model hub), one curated pool and one
training run, nothing else (no evaluation sets, no probing matrix): the DAG is index, download, measure, select,
convert, embed and train of that source. Then times `snakemake -n --quiet rules` in that folder (wall seconds,
its peak RSS from `os.wait4`, the jobs per rule). The DAG never reads the list (partitions are numbered from the
config; only `index-urls` reads it, when it runs), so the list's length does not enter the dry run: a stub
stands for 10^8 rows. `--targets download` plans only the downloads and per-partition measurements (every
`part-*` folder and `curate/measured/` table), for when a later rule of the tree is failing.
Prints one JSON line; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def log(message: str) -> None:
    print(f"[dry_run_partitions {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def scale_config(partitions: int) -> dict:
    return {
        "experiment": "scale",
        "samples_per_shard": 10_000,
        "sources": {"web": {"type": "url_list", "path": "urls.parquet", "partitions": partitions, "threads": 64}},
        "curate": {"sources": ["web"], "measure": {"ocr": "off"}, "pools": {"basic": ["caption", "image", "dedup"]}},
        "encoders": {"efficientnet_lite0": {"spec": "efficientnet-lite0", "batch_size": 64},
                     "minilm_l6": {"spec": "all-minilm-l6-v2", "batch_size": 256}},
        "image_encoder": "efficientnet_lite0", "text_encoder": "minilm_l6",
        "train": {"pool": "basic", "runs": {"basic": {}}},
    }  # fmt: skip


def job_counts(output: str) -> dict[str, int]:
    """The job-stats table of a dry run: rule -> jobs."""
    counts = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and not parts[0].endswith(":"):
            counts[parts[0]] = int(parts[1])
    return counts


def download_targets(partitions: int) -> list[str]:
    return [f"results/scale/{folder}/web/part-{p:04d}{suffix}" for p in range(partitions)
            for folder, suffix in (("download", ""), ("curate/measured", ".parquet"))]  # fmt: skip


def dry_run(folder: Path, partitions: int, targets: str) -> dict:
    (folder / "config.yaml").write_text(yaml.safe_dump(scale_config(partitions)))
    command = [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--configfile", "config.yaml", "-n",
               "--quiet", "rules", "--cores", "64"]  # fmt: skip
    if targets == "download":
        command += download_targets(partitions)
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log(f"{partitions} partitions, targets {targets}: snakemake -n")
    with open(folder / "stdout", "w+") as out, open(folder / "stderr", "w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    result = {"partitions": partitions, "targets": targets, "returncode": process.returncode,
              "wall_s": round(seconds, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
              "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}  # fmt: skip
    if process.returncode != 0:
        result["error"] = (stdout + stderr)[-2000:]
        log(f"failed: {result['error'][-600:]}")
        return result
    counts = job_counts(stdout)
    result.update(jobs=counts.pop("total", sum(counts.values())), jobs_per_rule=counts)
    log(f"{partitions} partitions: {result['jobs']} jobs in {result['wall_s']} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--targets", choices=("all", "download"), nargs="+", default=["all"])
    parser.add_argument("--smoke", action="store_true", help="10 partitions: check that it runs")
    args = parser.parse_args()
    sizes = [10] if args.smoke else args.partitions
    load = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory(prefix="vlalign-bench-dryrun-") as tmp:
        folder = Path(tmp)
        # A stub: the dry run never opens it (only its existence is checked), whatever the real list's length.
        pd.DataFrame({"url": ["https://example.com/a.jpg"], "caption": ["a stub"]}).to_parquet(folder / "urls.parquet")
        for targets in args.targets:
            runs += [dry_run(folder, partitions, targets) for partitions in sizes]
    from machine import describe_machine

    print(json.dumps({
        "benchmark": "dry_run_partitions", "date": datetime.date.today().isoformat(), "runs": runs,
        "load_average_before": [round(x, 2) for x in load],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "machine": describe_machine(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
