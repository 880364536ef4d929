"""Fault injection for url_list downloads: 1,002 URLs on a local server, a third of them misbehaving in nine
ways, downloaded whole and downloaded with a SIGKILL in the middle; both runs must agree row for row."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from source_config import shard_contents, source_config, stored_chunks, stored_rows

from vlalign.data.images import decode_rgb
from vlalign.data.download import run_download
from vlalign.io import work_dir
from image_server import ImageServer

ROWS = 1002
CHUNK = 100  # samples_per_shard: 11 chunks, the unit a killed download keeps
# Every third row misbehaves, cycling through these (server path -> error class in its manifest row).
FAULTS = {
    "/status/404": "http_404",
    "/status/500": "http_500",  # retried, fails again
    "/reset": "connection_error",  # TCP RST, no response
    "/slow": "timeout",  # holds the request for 5 s, past the 1 s timeout
    "/truncated.jpg": "decode_error",  # half a JPEG, served whole
    "/cut.jpg": "truncated_transfer",  # the body ends before its Content-Length
    "/html.jpg": "not_an_image",  # an HTML page served as image/jpeg
    "/bomb.png": "too_many_pixels",  # a 30000 x 30000 PNG header in a few dozen bytes
    "/loop": "redirect_loop",
}
GOOD = ("/jpg/g{i}", "/png/g{i}", "/redirect/g{i}")


def url_rows(server: ImageServer) -> tuple[pd.DataFrame, list[str | None]]:
    """The URL table (each URL distinct through its query) and each row's expected error class (None: ok)."""
    urls, expected = [], []
    for i in range(ROWS):
        if i % 3 == 0:
            path = list(FAULTS)[(i // 3) % len(FAULTS)]
            expected.append(FAULTS[path])
        else:
            path = GOOD[i % len(GOOD)].format(i=i)
            expected.append(None)
        urls.append(server.url(f"{path}?row={i}"))
    table = pd.DataFrame({"url": urls, "caption": [f"picture number {i}" for i in range(ROWS)]})
    return table, expected


def faulty_source(path: Path) -> dict:
    return source_config("url_list", path=str(path), timeout_s=1, retries=1, threads=32, eval_fraction=0.2)


def test_a_third_of_1002_urls_misbehave_and_a_killed_download_ends_the_same(server, tmp_path):
    table, expected = url_rows(server)
    table.to_parquet(tmp_path / "urls.parquet")
    source = faulty_source(tmp_path / "urls.parquet")
    whole = tmp_path / "whole"
    summary = run_download("web", source, whole, None, CHUNK)

    # Every URL accounted exactly once, in input order, with the error its fault must produce.
    manifest = pd.read_parquet(whole / "manifest.parquet")
    assert len(manifest) == ROWS == summary["items"] == summary["ok"] + summary["failed"]
    assert manifest["key"].is_unique and manifest["origin"].tolist() == table["url"].tolist()
    found = [None if pd.isna(e) else e for e in manifest["error"]]
    assert found == expected, [(i, f, e) for i, (f, e) in enumerate(zip(found, expected)) if f != e][:10]
    assert summary["failed"] == ROWS // 3 and summary["ok"] == ROWS - ROWS // 3
    assert (manifest["status"] == "ok").tolist() == [e is None for e in expected]
    # Zero undecodable images in the shards: each one decodes in full, and only the ok rows are there.
    samples = [s for split in shard_contents(whole).values() for s in split]
    assert sorted(key for key, *_ in samples) == sorted(manifest.loc[manifest.status == "ok", "key"])
    for key, image, *_ in samples:
        decode_rgb(image)
    # Transient failures were retried once; permanent ones were not.
    assert server.requests["/status/500?row=3"] == 2 and server.requests["/status/404?row=0"] == 1
    assert server.requests["/reset?row=6"] == 2

    # The same download killed (SIGKILL) after some chunks are finished, then run again.
    out = tmp_path / "web"
    store = work_dir(out, "store")
    script = ("import json, sys; from vlalign.data.download import run_download; "
              f"run_download('web', json.loads(sys.argv[1]), sys.argv[2], None, {CHUNK})")  # fmt: skip
    child = subprocess.Popen([sys.executable, "-c", script, json.dumps(source), str(out)],
                             stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 120
        while stored_chunks(store) < 3 and child.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert child.poll() is None, "the download ended before it could be killed"
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL and not out.exists()
    done_before, done_chunks = stored_rows(store), stored_chunks(store)
    assert CHUNK * 3 <= len(done_before) < ROWS

    server.requests.clear()
    resumed = run_download("web", source, out, None, CHUNK)
    counts = ("seconds", "linked_chunks", "reused", "fetched", "retried", "recovered")
    assert {k: v for k, v in resumed.items() if k not in counts} == {k: v for k, v in summary.items() if k not in counts}
    assert resumed["linked_chunks"] == done_chunks  # taken whole from the store, not fetched again
    pd.testing.assert_frame_equal(pd.read_parquet(out / "manifest.parquet"), manifest)
    assert shard_contents(out) == shard_contents(whole)
    # Finished chunks were not fetched again; every row of the others was.
    urls = table["url"].str.removeprefix(server.base)
    assert all(server.requests[urls[i]] == 0 for i in done_before)
    assert all(server.requests[urls[i]] >= 1 for i in set(range(ROWS)) - set(done_before))
