"""Peak memory of one url_list download process, run as the workflow runs it (issue 15: under 300 MB on 10,000 URLs).

    python benchmarks/download_workers.py [--urls 10000] [--threads 16] [--samples-per-shard 1000]
                                          [--tracking sqlite|server] [--smoke]

Serves `--urls` URLs from 127.0.0.1 with the tests' `ImageServer` (512 x 384 photo-like JPEGs of ~73 kB, one in 50 a
404, one in 50 a redirect), runs `vlalign download --settings ...` in a child process exactly as the Snakemake
rule does, and prints one JSON line: the child's peak RSS (its VmHWM), the floor (the same command on a
one-row list: imports and the MLflow run; a SQLite store's client alone is ~130 MB), whether it imported torch, wall
seconds and URLs per second. The server's threads live in this process, so their memory is not counted.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from machine import describe_machine

sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))
from image_server import ImageServer  # noqa: E402  (the tests' loopback server)
from mlflow_server import start_server, stop_server  # noqa: E402  (a real `mlflow server`, as on a cluster)

from vlalign.config import validate_config  # noqa: E402
from vlalign.stage import stage_settings_json  # noqa: E402

DISTINCT_IMAGES = 64
# Runs the stage as the `vlalign` entry point does, then reports whether torch came in and the process's peak
# RSS (VmHWM: this process's own; ru_maxrss would count the fork of the parent it was exec'd from).
CHILD = """
import sys
from vlalign.cli import main
code = main(sys.argv[1:])
peak = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM"))
print("PROBE", "torch" in sys.modules, int(peak) / 1024)
sys.exit(code)
"""


def photo(seed: int) -> bytes:
    """A 512x384 JPEG with a photo's entropy (smooth gradients plus noise): ~73 kB."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:384, 0:512]
    base = np.stack([(x * (1 + c) + y * (3 - c) + seed * 37) % 256 for c in range(3)], axis=-1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def url_table(server: ImageServer, n: int) -> pd.DataFrame:
    for i in range(DISTINCT_IMAGES):
        server.files[f"p{i}.jpg"] = photo(i)
    urls = []
    for i in range(n):
        if i % 50 == 7:
            urls.append(server.url(f"/status/404?row={i}"))
        elif i % 50 == 23:
            urls.append(server.url(f"/to?location=/files/p{i % DISTINCT_IMAGES}.jpg%3Frow%3D{i}"))
        else:
            urls.append(server.url(f"/files/p{i % DISTINCT_IMAGES}.jpg?row={i}"))
    return pd.DataFrame({"url": urls, "caption": [f"a photo, row {i}" for i in range(n)]})


def run_child(work: Path, table: pd.DataFrame, args, tracking_uri: str | None) -> dict:
    """`vlalign download` of `table` in a child process, as the rule runs it: its probe, wall time, manifest."""
    work.mkdir()
    table.to_parquet(work / "urls.parquet")
    config = validate_config({
        "experiment": "bench-download", "tracking_uri": tracking_uri or f"sqlite:///{work / 'mlflow.db'}",
        "samples_per_shard": args.samples_per_shard,
        "sources": {"web": {"type": "url_list", "path": str(work / "urls.parquet"), "threads": args.threads,
                            "allow_networks": ["127.0.0.0/8"], "retries": 0, "timeout_s": args.timeout_s}},
        "encoders": {"lite0": {"spec": "efficientnet-lite0"}, "minilm": {"spec": "all-minilm-l6-v2"}},
        "evaluate": {"retrieval": []},
    })  # fmt: skip
    command = [sys.executable, "-c", CHILD, "download", "--settings", stage_settings_json(config, "download", source="web"),
               "--source", "web", "--out", str(work / "out")]  # fmt: skip
    started = time.perf_counter()
    with open(work / "stdout", "w+") as out, open(work / "stderr", "w+") as err:
        returncode = subprocess.run(command, stdout=out, stderr=err, cwd=work).returncode
    seconds = time.perf_counter() - started
    if returncode != 0:
        sys.exit((work / "stderr").read_text()[-3000:])
    probe = next(line for line in (work / "stdout").read_text().splitlines() if line.startswith("PROBE"))
    _, torch_imported, peak = probe.split()
    manifest = pd.read_parquet(work / "out" / "manifest.parquet")
    return {"peak_mb": float(peak), "torch": torch_imported == "True", "seconds": seconds,
            "ok": int(manifest["status"].eq("ok").sum())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--samples-per-shard", type=int, default=1000)
    parser.add_argument("--timeout-s", type=float, default=20)
    parser.add_argument("--tracking", choices=("sqlite", "server"), default="sqlite",
                        help="MLflow store: a SQLite file (the default config's) or an `mlflow server` (a cluster's)")
    parser.add_argument("--smoke", action="store_true", help="500 URLs: check that it runs")
    args = parser.parse_args()
    n = 500 if args.smoke else args.urls
    server = ImageServer().start()
    with tempfile.TemporaryDirectory(prefix="vlalign-bench-") as tmp:
        tracking = start_server(Path(tmp)) if args.tracking == "server" else None
        try:
            table = url_table(server, n)
            listed = run_child(Path(tmp) / "list", table, args, tracking and tracking.uri)
            # The floor: the same process with one row (imports, the MLflow run, the manifest), nothing to hold.
            floor = run_child(Path(tmp) / "floor", table.iloc[:1], args, tracking and tracking.uri)
        finally:
            server.stop()
            if tracking is not None:
                stop_server(tracking)
    print(json.dumps({
        "benchmark": "download_workers", "urls": n, "ok": listed["ok"], "threads": args.threads, "tracking": args.tracking,
        "samples_per_shard": args.samples_per_shard, "peak_rss_mb": round(listed["peak_mb"], 1),
        "floor_rss_mb": round(floor["peak_mb"], 1), "download_mb": round(listed["peak_mb"] - floor["peak_mb"], 1),
        "torch_imported": listed["torch"], "seconds": round(listed["seconds"], 1),
        "urls_per_s": round(n / listed["seconds"], 1), "machine": describe_machine(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
