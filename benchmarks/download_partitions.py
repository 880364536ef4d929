"""A URL list downloaded in partitions, as the workflow runs it, then partitioned anew (issue 16).

    python benchmarks/download_partitions.py [--rows 100000] [--partitions 8] [--repartition 5] [--threads 16]
                                             [--samples-per-shard 1000] [--missing 0.05] [--smoke]

A loopback HTTP server in a process of its own (asyncio, one connection per request, as the fetcher makes
them) serves `--rows` distinct 64x48 JPEGs (a few hundred images generated once, each answer made distinct by
a JPEG comment naming its row) and answers 404 for a `--missing` fraction of the rows. The list (parquet,
url + caption) is indexed with `vlalign index-urls`, then `--partitions` `vlalign download --partition p`
processes run at once, as `snakemake --cores P` runs them. Then the same list is indexed for `--repartition`
partitions and downloaded again: every chunk is in the outcome store, so the server must see no request.

Per phase: wall seconds of the index and of the downloads, the children's user+system CPU seconds
(`os.wait4`), URLs per second (wall) and per CPU-second, each job's peak RSS (its own VmHWM, and the
`ru_maxrss` wait4 reports, which also counts the fork of this process), the server's requests and its own CPU
seconds. Prints one JSON line; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import http.client
import io
import json
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

DISTINCT_IMAGES = 256
IMAGE_SIZE = (64, 48)
SMOKE = {"rows": 600, "partitions": 2, "repartition": 3, "samples_per_shard": 100}
# img2dataset's own figures, for comparison (github.com/rom1504/img2dataset: README.md "Benchmarks" and
# "Architecture notes", dataset_examples/laion5B.md and cc12m.md). They fetch real web images and resize them.
IMG2DATASET = {
    "laion5B.md": "~1,000 samples/s per c6i.4xlarge (16 cores): ~62 per core",
    "cc12m.md": "630 samples/s with 16 processes, resizing CPU-bound: ~39 per core",
    "README.md": "1,350 images/s on one machine; resizing several thousand/s 'can use up to 16 cores': ~84 per core",
    "issue 16 / config/sail_23m.yaml": "~100 samples/s per core (rule of thumb)",
}
# Runs the stage as the `vlalign` entry point does and prints its own peak RSS: ru_maxrss would also count the
# fork of this process that exec'd it.
CHILD = """
import sys
from vlalign.cli import main
code = main(sys.argv[1:])
peak = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM"))
print("PROBE", int(peak) / 1024, flush=True)
sys.exit(code)
"""


def log(message: str) -> None:
    print(f"[download_partitions {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# The server: its own process, so its CPU time is its own and not the downloads'.


def base_images(count: int) -> list[bytes]:
    """`count` distinct small JPEGs with some texture (a gradient plus noise), ~1-2 kB each."""
    rng = np.random.default_rng(0)
    width, height = IMAGE_SIZE
    y, x = np.mgrid[0:height, 0:width]
    images = []
    for seed in range(count):
        base = np.stack([(x * (1 + c) + y * (3 - c) + seed * 37) % 256 for c in range(3)], axis=-1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
        images.append(buffer.getvalue())
    return images


def with_comment(jpeg: bytes, text: str) -> bytes:
    """The JPEG with a comment segment (COM) after its start marker: the same pixels, bytes of its own."""
    body = text.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(body) + 2).to_bytes(2, "big") + body + jpeg[2:]


class ServerState:
    """What the server answers and counts: requests per row (saturating at 255) and in all."""

    def __init__(self, rows: int):
        self.images = base_images(DISTINCT_IMAGES)
        self.hits = np.zeros(rows, dtype=np.uint8)
        self.requests = 0

    def answer(self, target: str) -> tuple[int, bytes, str]:
        if target == "/_stats":  # the benchmark's own question, not counted
            usage = resource.getrusage(resource.RUSAGE_SELF)
            stats = {"requests": self.requests, "rows_requested": int(np.count_nonzero(self.hits)),
                     "rows_requested_twice": int(np.count_nonzero(self.hits > 1)),
                     "cpu_s": usage.ru_utime + usage.ru_stime}  # fmt: skip
            return 200, json.dumps(stats).encode(), "application/json"
        self.requests += 1
        kind, _, name = target.lstrip("/").partition("/")
        row = int(name.split(".")[0]) if name.split(".")[0].isdigit() else -1
        if not 0 <= row < len(self.hits):
            return 404, b"no such row", "text/plain"
        self.hits[row] = min(int(self.hits[row]) + 1, 255)
        if kind == "img":
            return 200, with_comment(self.images[row % DISTINCT_IMAGES], f"row {row}"), "image/jpeg"
        return 404, b"gone", "text/plain"


class OneShotHttp(asyncio.Protocol):
    """HTTP/1.1 with one request per connection, as the fetcher asks: read the head, answer, close."""

    REASONS = {200: "OK", 404: "Not Found", 400: "Bad Request"}

    def __init__(self, state: ServerState):
        self.state, self.buffer = state, b""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > 65536:
                self.transport.close()
            return
        parts = self.buffer.split(b"\r\n", 1)[0].split(b" ")
        status, body, content_type = (self.state.answer(parts[1].decode("latin-1")) if len(parts) == 3
                                      else (400, b"bad request", "text/plain"))  # fmt: skip
        head = (f"HTTP/1.1 {status} {self.REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")  # fmt: skip
        self.transport.write(head.encode() + body)
        self.transport.close()  # sends what is buffered first


def serve(control, rows: int) -> None:
    """The server process: listen on 127.0.0.1, send the port back, serve until `control` says stop."""
    state = ServerState(rows)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(lambda: OneShotHttp(state), sock=listener, backlog=4096))
    control.send(listener.getsockname()[1])
    loop.add_reader(control.fileno(), loop.stop)
    loop.run_forever()
    server.close()


class LoopbackServer:
    def __init__(self, rows: int):
        context = multiprocessing.get_context("spawn")
        self._control, child_end = context.Pipe()
        self.process = context.Process(target=serve, args=(child_end, rows), daemon=True)

    def start(self) -> "LoopbackServer":
        self.process.start()
        self.port = self._control.recv()
        return self

    def stats(self) -> dict:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("GET", "/_stats")
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()

    def stop(self) -> None:
        self._control.send("stop")
        self.process.join(timeout=10)


# The list and the config.


def missing_rows(rows: int, fraction: float) -> np.ndarray:
    """Which rows 404: spread evenly over the list (a multiplicative hash of the row number)."""
    return (np.arange(rows, dtype=np.uint64) * np.uint64(2654435761) % np.uint64(10_000)) < fraction * 10_000


def write_url_list(path: Path, port: int, rows: int, fraction: float) -> int:
    """The list as a parquet file written the way pandas writes one (pyarrow's default row groups); how many
    rows 404."""
    missing = missing_rows(rows, fraction)
    base = f"http://127.0.0.1:{port}"
    urls = [f"{base}/{'gone' if gone else 'img'}/{row}.jpg" for row, gone in enumerate(missing)]
    captions = [f"a small synthetic photo, number {row}" for row in range(rows)]
    pq.write_table(pa.table({"url": urls, "caption": captions}), path)
    return int(missing.sum())


# Made in a child process: checking a config imports torch (the encoders' entries), and a child forked from a
# process holding torch would report its ~600 MB as its own ru_maxrss.
SETTINGS = """
import json, sys
from vlalign.config import validate_config
from vlalign.stage import stage_settings_json
config = validate_config(json.loads(sys.argv[1]))
print(json.dumps({stage: stage_settings_json(config, stage, source="web") for stage in ("index_urls", "download")}))
"""


def stage_settings(work: Path, args, partitions: int) -> dict[str, str]:
    """The `--settings` JSON of `index-urls` and `download` for a config with one url_list source, `web`."""
    config = {
        "experiment": "bench-partitions", "tracking_uri": f"sqlite:///{work / 'mlflow.db'}",
        "samples_per_shard": args.samples_per_shard,
        "sources": {"web": {"type": "url_list", "path": str(work / "urls.parquet"), "threads": args.threads,
                            "allow_networks": ["127.0.0.0/8"], "retries": 0, "timeout_s": args.timeout_s,
                            "partitions": partitions}},
        "encoders": {"lite0": {"spec": "efficientnet-lite0"}, "minilm": {"spec": "all-minilm-l6-v2"}},
        "evaluate": {"retrieval": []},
    }  # fmt: skip
    made = subprocess.run([sys.executable, "-c", SETTINGS, json.dumps(config)], capture_output=True, text=True,
                          check=True)  # fmt: skip
    return json.loads(made.stdout)


# Child processes, accounted with os.wait4.


def start_child(arguments: list[str], work: Path, name: str) -> tuple[subprocess.Popen, float, Path]:
    """`vlalign ARGUMENTS` in a child process; it, its start time and its log's stem (`.out`, `.err`)."""
    stem = work / "logs" / name
    stem.parent.mkdir(exist_ok=True)
    with open(stem.with_suffix(".out"), "w") as out, open(stem.with_suffix(".err"), "w") as err:
        process = subprocess.Popen([sys.executable, "-c", CHILD, *arguments], stdout=out, stderr=err, cwd=work)
    return process, time.perf_counter(), stem


def reap(children: dict[str, tuple[subprocess.Popen, float, Path]]) -> dict[str, dict]:
    """Wait for every child; per child: wall seconds, user+system CPU, its VmHWM and ru_maxrss, its summary."""
    done: dict[str, dict] = {}
    while len(done) < len(children):
        for name, (process, started, stem) in children.items():
            if name in done:
                continue
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid == 0:
                continue
            process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
            if process.returncode != 0:
                sys.exit(f"{name} failed:\n" + stem.with_suffix(".err").read_text()[-3000:])
            done[name] = {"wall_s": time.perf_counter() - started, "cpu_s": usage.ru_utime + usage.ru_stime,
                          "ru_maxrss_mb": usage.ru_maxrss / 1024, **child_output(stem.with_suffix(".out"))}
        time.sleep(0.1)
    return done


def child_output(path: Path) -> dict:
    """The probe's peak RSS and the stage's printed summary (`vlalign download: {...}`)."""
    found: dict = {}
    for line in path.read_text().splitlines():
        if line.startswith("PROBE"):
            found["peak_rss_mb"] = float(line.split()[1])
        elif line.startswith("vlalign ") and ": {" in line:
            found["summary"] = json.loads(line.split(": ", 1)[1])
    return found


def run_phase(work: Path, args, partitions: int, label: str) -> dict:
    """Index the list for `partitions` and download every partition at once; wall, CPU and memory of each part."""
    index, store = work / f"index-{label}", work / "store"
    settings = stage_settings(work, args, partitions)
    log(f"{label}: indexing for {partitions} partitions")
    started = time.perf_counter()
    indexed = reap({"index": start_child(["index-urls", "--settings", settings["index_urls"],
                                          "--source", "web", "--store", str(store), "--out", str(index)],
                                         work, f"{label}-index")})["index"]  # fmt: skip
    index_s = time.perf_counter() - started
    log(f"{label}: index {index_s:.1f} s; {partitions} downloads at once")
    started = time.perf_counter()
    children = {}
    for p in range(partitions):
        arguments = ["download", "--settings", settings["download"], "--source", "web", "--partition", str(p),
                     "--index", str(index), "--store", str(store), "--out", str(work / label / f"part-{p:04d}")]
        children[f"part-{p:04d}"] = start_child(arguments, work, f"{label}-{p}")
    jobs = reap(children)
    download_s = time.perf_counter() - started
    log(f"{label}: downloads {download_s:.1f} s")
    return {"index": indexed, "index_s": index_s, "jobs": jobs, "download_s": download_s}


def outcomes(folder: Path) -> pd.DataFrame:
    paths = sorted(folder.glob("*/manifest.parquet"))
    frames = [pd.read_parquet(path, columns=["key", "status", "error"]) for path in paths]
    return pd.concat(frames, ignore_index=True).sort_values("key", ignore_index=True)


def phase_figures(phase: dict, rows: int, server_before: dict, server_after: dict) -> dict:
    jobs = phase["jobs"].values()
    cpu = sum(job["cpu_s"] for job in jobs)
    summaries = [job.get("summary", {}) for job in jobs]
    server_cpu = server_after["cpu_s"] - server_before["cpu_s"]
    return {
        "partitions": len(phase["jobs"]), "index_s": round(phase["index_s"], 2),
        "index_cpu_s": round(phase["index"]["cpu_s"], 2),
        "index_peak_rss_mb": round(phase["index"].get("peak_rss_mb", 0), 1),
        "download_wall_s": round(phase["download_s"], 2), "download_cpu_s": round(cpu, 2),
        "cores_used": round(cpu / phase["download_s"], 2),
        "urls_per_s": round(rows / phase["download_s"], 1), "urls_per_cpu_s": round(rows / cpu, 1),
        "total_wall_s": round(phase["index_s"] + phase["download_s"], 2),
        "urls_per_s_with_index": round(rows / (phase["index_s"] + phase["download_s"]), 1),
        "job_wall_s": [round(job["wall_s"], 1) for job in jobs],
        "job_cpu_s": [round(job["cpu_s"], 1) for job in jobs],
        "job_peak_rss_mb": [round(job.get("peak_rss_mb", 0), 1) for job in jobs],
        "job_ru_maxrss_mb": [round(job["ru_maxrss_mb"], 1) for job in jobs],
        "ok": sum(s.get("ok", 0) for s in summaries), "failed": sum(s.get("failed", 0) for s in summaries),
        "fetched": sum(s.get("fetched", 0) for s in summaries),
        "linked_chunks": sum(s.get("linked_chunks", 0) for s in summaries),
        "reused_rows": sum(s.get("reused", 0) for s in summaries),
        "server_requests": server_after["requests"] - server_before["requests"],
        "server_cpu_s": round(server_cpu, 2),
        "urls_per_cpu_s_with_server": round(rows / (cpu + server_cpu), 1),
    }


def store_mb(store: Path) -> float:
    """Bytes under the store, each inode once (the partitions' shards are hard links to it)."""
    seen, total = set(), 0
    for path in store.rglob("*"):
        status = path.stat()
        if path.is_file() and status.st_ino not in seen:
            seen.add(status.st_ino)
            total += status.st_size
    return total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--repartition", type=int, help="the second phase's partitions (default: partitions/2 + 1)")
    parser.add_argument("--threads", type=int, default=16, help="fetching threads per job (the schema's default)")
    parser.add_argument("--samples-per-shard", type=int, default=1000)
    parser.add_argument("--missing", type=float, default=0.05, help="fraction of rows answering 404")
    parser.add_argument("--timeout-s", type=float, default=20)
    parser.add_argument("--smoke", action="store_true", help="600 rows, 2 then 3 partitions: check that it runs")
    args = parser.parse_args()
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    repartition = args.repartition or args.partitions // 2 + 1
    if repartition == args.partitions:
        repartition += 1
    load = os.getloadavg()
    server = LoopbackServer(args.rows).start()
    try:
        with tempfile.TemporaryDirectory(prefix="vlalign-bench-partitions-") as tmp:
            work = Path(tmp)
            # In a process of its own: the children forked later would count this one's peak as theirs.
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                missing = pool.apply(write_url_list, (work / "urls.parquet", server.port, args.rows, args.missing))
            log(f"{args.rows} rows ({missing} answer 404), server on port {server.port}")
            before = server.stats()
            first = run_phase(work, args, args.partitions, "first")
            middle = server.stats()
            second = run_phase(work, args, repartition, "second")
            after = server.stats()
            same = outcomes(work / "first").equals(outcomes(work / "second"))
            stored = store_mb(work / "store")
    finally:
        server.stop()
    from machine import describe_machine  # imports torch: only now, so no child was forked from it

    print(json.dumps({
        "benchmark": "download_partitions", "date": datetime.date.today().isoformat(), "rows": args.rows,
        "missing_rows": missing, "threads_per_job": args.threads, "samples_per_shard": args.samples_per_shard,
        "first": phase_figures(first, args.rows, before, middle),
        "second": phase_figures(second, args.rows, middle, after),
        "same_outcomes": bool(same), "rows_requested_twice": after["rows_requested_twice"],
        "store_mb": round(stored, 1), "load_average_before": [round(x, 2) for x in load],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "img2dataset": IMG2DATASET, "machine": describe_machine(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
