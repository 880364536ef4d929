"""An interrupted url_list download, run again, fetches no finished chunk twice and ends as an uninterrupted one."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from source_config import shard_contents, source_config, stored_chunks, stored_rows

from vlalign.data import url_download
from vlalign.data.outcome_store import OutcomeStore
from vlalign.data.download import run_download
from vlalign.io import work_dir
from image_server import ImageServer

CHUNK = 3




def write_list(server: ImageServer, path: Path, n: int = 20, query: str = "") -> list[str]:
    paths = [f"/jpg/r{i}" if i % 5 else f"/missing/{i}" for i in range(n)]  # every fifth row is a 404
    pd.DataFrame({"url": [server.url(p) + query for p in paths], "caption": [f"row {i}" for i in range(n)],
                  "rank": list(range(n))}).to_parquet(path)  # fmt: skip
    return paths



def finished_chunk_paths(store: Path, paths: list[str]) -> list[str]:
    return [paths[i] for i in stored_rows(store)]


def test_resume_after_a_crash_and_a_cut_shard(server, tmp_path, monkeypatch):
    paths = write_list(server, tmp_path / "urls.parquet")
    source = source_config("url_list", path=str(tmp_path / "urls.parquet"), eval_fraction=0.3, threads=4, retries=0)
    run_download("web", source, tmp_path / "whole", None, CHUNK)
    whole = pd.read_parquet(tmp_path / "whole" / "manifest.parquet")
    server.hits.clear()

    finish = url_download._ChunkWriter.finish
    calls = []

    def crash_after_three(self):
        if len(calls) == 3:
            raise RuntimeError("injected crash")
        calls.append(self.chunk)
        finish(self)

    monkeypatch.setattr(url_download._ChunkWriter, "finish", crash_after_three)
    out = tmp_path / "web"
    with pytest.raises(RuntimeError, match="injected crash"):
        run_download("web", source, out, None, CHUNK)
    monkeypatch.setattr(url_download._ChunkWriter, "finish", finish)
    store = work_dir(out, "store")
    assert not out.exists() and stored_chunks(store) == 3
    done_before = finished_chunk_paths(store, paths)

    # A finished shard cut short afterwards (a bad copy): only its chunk is fetched again.
    cut = sorted(store.glob("*/*/train.tar"))[-1]
    cut.write_bytes(cut.read_bytes()[:1000])
    cut_rows = set(range(*json.loads((cut.parent / "record.json").read_text())["rows"]))

    summary = run_download("web", source, out, None, CHUNK)
    # Rows of unfinished chunks may have been fetched before the crash too (fetching runs ahead of writing).
    for i, path in enumerate(paths):
        if path in done_before:
            assert server.hits[path] == (2 if i in cut_rows else 1), (i, path)
        else:
            assert server.hits[path] >= 1, (i, path)
    manifest = pd.read_parquet(out / "manifest.parquet")
    pd.testing.assert_frame_equal(manifest, whole)
    assert shard_contents(out) == shard_contents(tmp_path / "whole")
    assert summary["items"] == 20 and summary["ok"] == 16 and summary["error.http_404"] == 4
    assert summary["linked_chunks"] == 2 and not list(out.glob("tmp"))


def test_a_changed_row_is_the_only_one_fetched_again(server, tmp_path):
    paths = write_list(server, tmp_path / "urls.parquet", n=9)
    source = source_config("url_list", path=str(tmp_path / "urls.parquet"), threads=2, retries=0)
    out = tmp_path / "web"
    run_download("web", source, out, None, CHUNK)
    table = pd.read_parquet(tmp_path / "urls.parquet")
    table.loc[7, "caption"] = "a new caption"  # a new key: its row's content changed
    table.to_parquet(tmp_path / "urls.parquet")
    server.hits.clear()
    summary = run_download("web", source, out, None, CHUNK)
    # Its chunk's other rows are copied from the store by key, the other chunks linked whole.
    assert dict(server.hits) == {paths[7]: 1}
    assert (summary["linked_chunks"], summary["reused"], summary["fetched"]) == (2, 2, 1)
    assert pd.read_parquet(out / "manifest.parquet").loc[7, "caption"] == "a new caption"


def test_resume_after_the_process_is_killed(server, tmp_path):
    # Each image takes 0.1 s and one thread fetches: 8 chunks of 2 rows take ~1.6 s, killed after 2.
    paths = write_list(server, tmp_path / "urls.parquet", n=16, query="?delay=0.1")
    source = source_config("url_list", path=str(tmp_path / "urls.parquet"), threads=1, retries=0)
    out = tmp_path / "web"
    store = work_dir(out, "store")
    script = ("import json, sys; from vlalign.data.download import run_download; "
              "run_download('web', json.loads(sys.argv[1]), sys.argv[2], None, 2)")  # fmt: skip
    child = subprocess.Popen([sys.executable, "-c", script, json.dumps(source), str(out)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while stored_chunks(store) < 2 and child.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL and not out.exists()
    done_before = finished_chunk_paths(store, paths)
    assert 2 <= len(done_before) < 16

    run_download("web", {**source, "threads": 4}, out, None, 2)
    assert all(server.hits[p] == 1 for p in done_before)
    assert all(server.hits[p] >= 1 for p in paths)
    run_download("web", {**source, "threads": 4}, tmp_path / "whole", None, 2)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "manifest.parquet"),
                                  pd.read_parquet(tmp_path / "whole" / "manifest.parquet"))  # fmt: skip
    assert shard_contents(out) == shard_contents(tmp_path / "whole")


def test_an_entry_still_being_written_is_not_read(tmp_path):
    # A job killed inside `OutcomeStore.write` leaves its `.{fingerprint}.*.part` folder, possibly with a record
    # already in it (complete or empty): neither is an entry until renamed into place.
    store = OutcomeStore(tmp_path / "store")
    manifest = pd.DataFrame({"key": ["a"], "error": [None]})
    shard = tmp_path / "train.tar"
    shard.write_bytes(b"\0" * 1024)
    store.write({"fingerprint": "ab12", "rows": [0, 1]}, manifest, {"train": shard})
    finished = store.path("ab12")
    for name, record in ((".cd34.x.part", (finished / "record.json").read_text()), (".ef56.y.part", "")):
        half = tmp_path / "store" / name[1:3] / name
        shutil.copytree(finished, half)
        (half / "record.json").write_text(record)
    assert [entry.fingerprint for entry in store.entries()] == ["ab12"]
