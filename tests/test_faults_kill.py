"""SIGKILL in the middle of embed, of train and of a Snakemake download job: the re-run resumes from what the
killed job finished (not from scratch), ends with the outputs of an uninterrupted run, and nothing the killed
job left behind is ever taken for a finished output."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from source_config import LOOPBACK, shard_contents, stored_chunks
from train_fixtures import write_pair_stores

from vlalign.align.checkpoint import load_checkpoint
from vlalign.cli import main
from vlalign.config import validate_config
from vlalign.data.shards import Sample, ShardWriter
from vlalign.data.download import run_download
from vlalign.embed.features import embed_images, embed_texts
from vlalign.io import work_dir
from vlalign.store.beton import write_beton
from vlalign.store.embeddings import open_embeddings

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <finalize object:pytest.PytestUnraisableExceptionWarning"
)


def kill_when(child: subprocess.Popen, ready, what: str, timeout: float = 240) -> None:
    """SIGKILL `child` (and its process group) as soon as `ready()` holds; it must still be running then."""
    try:
        deadline = time.time() + timeout
        while not ready() and child.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert child.poll() is None, f"{what} ended (rc {child.returncode}) before it could be killed"
        assert ready(), f"{what} made no progress in {timeout} s"
        os.killpg(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL


def spawn(args: list[str], **kwargs) -> subprocess.Popen:
    # A process group of its own, so a kill takes the job's children (ffcv workers, Snakemake's shell) too.
    return subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            **kwargs)  # fmt: skip


def finished_parts(out: Path) -> int:
    progress = work_dir(out) / "progress.json"
    return len(json.loads(progress.read_text())["parts"]) if progress.exists() else 0


# --- embed -------------------------------------------------------------------------------------------

N_IMAGES = 48


@pytest.fixture(scope="module")
def beton(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill-embed")
    with ShardWriter(root / "shards", samples_per_shard=100) as writer:
        for i in range(N_IMAGES):
            buffer = io.BytesIO()
            Image.new("RGB", (40 + i, 60), ((i * 37) % 256, (i * 91) % 256, 128)).save(buffer, format="PNG")
            writer.write(Sample(f"s{i:03d}", buffer.getvalue(), "png", f"a picture with the number {i}"))
    write_beton([root / "shards"], root / "data.beton", root / "data.parquet", max_resolution=64, num_workers=1)
    return root / "data.beton", root / "data.parquet"


EMBED = {
    # rows_per_part a multiple of the batch: a resumed run meets the same batches as an uninterrupted one.
    "images": ("embed_images", dict(encoder={"spec": "efficientnet-lite0", "batch_size": 4},
                                    embed={"num_workers": 1, "device": "cpu"}, rows_per_part=8)),
    "texts": ("embed_texts", dict(encoder={"spec": "all-minilm-l6-v2", "batch_size": 1}, embed={"device": "cpu"},
                                  rows_per_part=4)),
}  # fmt: skip


def _embed(kind: str, beton, out: Path) -> dict:
    function, options = EMBED[kind]
    inputs = {"betons": beton[0], "table_path": beton[1]} if kind == "images" else {"table_path": beton[1]}
    run = embed_images if kind == "images" else embed_texts
    return run(**inputs, out_dir=out, progress=False, **options)


@pytest.mark.parametrize("kind", EMBED)
def test_embed_killed_resumes_and_equals_an_uninterrupted_run(kind, beton, tmp_path):
    out = tmp_path / "emb"
    function, options = EMBED[kind]
    inputs = [str(beton[0]), str(beton[1])] if kind == "images" else [str(beton[1])]
    script = (f"import json, sys; from vlalign.embed.features import {function}; "
              f"{function}(*sys.argv[2:], out_dir=sys.argv[1], progress=False, "
              f"**json.loads({json.dumps(json.dumps(options))}))")  # fmt: skip
    child = spawn([sys.executable, "-c", script, str(out), *inputs])
    kill_when(child, lambda: finished_parts(out) >= 2, f"embed {kind}")
    done = finished_parts(out)
    assert 2 <= done and not out.exists()
    with pytest.raises(FileNotFoundError, match="no meta.json"):
        open_embeddings(out)  # what the killed job left is not a store

    summary = _embed(kind, beton, out)
    assert summary["resumed_from"] >= done * options["rows_per_part"] > 0 and summary["count"] == N_IMAGES
    _embed(kind, beton, tmp_path / "whole")
    resumed, whole = open_embeddings(out), open_embeddings(tmp_path / "whole")
    assert resumed.keys == whole.keys == pd.read_parquet(beton[1])["key"].tolist()
    np.testing.assert_array_equal(resumed.to_numpy(), whole.to_numpy())
    assert not work_dir(out).exists()


def test_convert_killed_leaves_no_beton_and_the_rerun_clears_its_leftovers(tmp_path):
    rng = np.random.default_rng(0)
    with ShardWriter(tmp_path / "shards", samples_per_shard=1000) as writer:
        for i in range(400):  # noise: large PNGs, so the write lasts long enough to be killed in
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (160, 160, 3), dtype=np.uint8)).save(buffer, format="PNG")
            writer.write(Sample(f"n{i:03d}", buffer.getvalue(), "png", f"noise number {i}"))
    out = tmp_path / "beton"
    settings = {"experiment": "kill", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "convert": {"max_resolution": 160, "jpeg_quality": 90, "num_workers": 1, "write_mode": "raw"}}
    command = ["convert", "--settings", json.dumps(settings), "--inputs", str(tmp_path / "shards"),
               "--beton", str(out / "data.beton"), "--table", str(out / "data.parquet")]  # fmt: skip
    child = spawn([sys.executable, "-m", "vlalign.cli", *command])
    kill_when(child, lambda: any(out.glob(".data.beton.*.part")), "convert")
    left = sorted(p.name for p in out.iterdir())
    assert "data.beton" not in left and "data.parquet" not in left  # only temporary names
    assert any(name.endswith(".spill") for name in left)  # the killed job's copy of every image
    assert main(command) == 0
    assert sorted(p.name for p in out.iterdir()) == ["data.beton", "data.parquet"]


# --- train -------------------------------------------------------------------------------------------

TRAIN = {"head": "star", "target_dim": 16, "width_factor": 2, "batch_size": 32, "epochs": 4, "lr": 1e-2,
         "val_fraction": 0.1, "checkpoint_every": 3, "seed": 7}  # fmt: skip


@pytest.fixture
def train_inputs(tmp_path):
    return write_pair_stores(tmp_path, 600, 24, 16)


def train_command(inputs: Path, out: Path) -> list[str]:
    settings = {"experiment": "kill", "tracking_uri": f"sqlite:///{inputs / 'mlflow.db'}", "device": "cpu",
                "encoders": {"image": {"alias": "img", "spec": "test"}, "text": {"alias": "txt", "spec": "test"}},
                "convert": {"max_resolution": 64}, "train": TRAIN}  # fmt: skip
    return [sys.executable, "-m", "vlalign.cli", "train", "--settings", json.dumps(settings), "--run-name", "basic",
            "--image-embeddings", str(inputs / "img"), "--text-embeddings", str(inputs / "txt"),
            "--pool-decisions", str(inputs / "decisions.parquet"), "--out", str(out)]  # fmt: skip


def newest_step(state: Path) -> int:
    steps = [int(p.name.split("-")[1]) for p in state.glob("step-*")] if state.exists() else []
    return max(steps, default=0)


def test_train_killed_resumes_and_reaches_the_same_weights(train_inputs, tmp_path):
    out, state = tmp_path / "train" / "basic", tmp_path / "train" / ".basic.state"
    child = spawn(train_command(train_inputs, out))
    kill_when(child, lambda: newest_step(state) >= 9, "train")  # 17 steps per epoch, 68 in all
    killed_at = newest_step(state)
    assert not out.exists() and killed_at < 68
    # What a kill during a state write leaves (vlalign.io.atomic_dir): it must never be resumed from.
    partial = state / f".step-{killed_at + 3:09d}.abc.part"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 10)

    resumed = subprocess.run(train_command(train_inputs, out), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from step {killed_at}/68" in resumed.stdout
    assert not state.exists()
    assert main(train_command(train_inputs, tmp_path / "whole")[3:]) == 0

    a, b = (load_checkpoint(folder)[0].state_dict() for folder in (out, tmp_path / "whole"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5) for k in a)
    curves = [pd.read_csv(folder / "curves.csv").drop(columns="pairs_per_s") for folder in (out, tmp_path / "whole")]
    assert len(curves[0]) == 68 + 4  # every step and every epoch, the ones before the kill too
    pd.testing.assert_frame_equal(*curves, atol=1e-6)


# --- a Snakemake job ---------------------------------------------------------------------------------


def test_snakemake_download_killed_then_rerun_ends_as_an_uninterrupted_run(server, tmp_path):
    """The whole Snakemake process group is killed mid-download; the next `snakemake` re-runs the job, which
    fetches only the chunks the killed one had not finished."""
    urls = [server.url(f"/jpg/s{i}?delay=0.1") if i % 4 else server.url(f"/status/404?row={i}") for i in range(40)]
    pd.DataFrame({"url": urls, "caption": [f"row {i}" for i in range(40)]}).to_parquet(tmp_path / "urls.parquet")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["samples_per_shard"] = 4
    config["sources"]["web"] = {"type": "url_list", "path": str(tmp_path / "urls.parquet"), "threads": 1,
                                "retries": 0, "eval_fraction": 0.25, "allow_networks": LOOPBACK}  # fmt: skip
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--cores", "1",
               "results/demo/download/web/part-0000"]  # fmt: skip
    out = tmp_path / "results" / "demo" / "download" / "web" / "part-0000"
    store = out.parent / "store"

    child = spawn(command, cwd=tmp_path, env=env)
    kill_when(child, lambda: stored_chunks(store) >= 2, "snakemake")
    done = stored_chunks(store)
    assert not out.exists()

    # Snakemake's lock outlives a SIGKILL; `--unlock` is its documented way out (nothing else is touched).
    unlock = subprocess.run([*command, "--unlock"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert unlock.returncode == 0, unlock.stderr[-3000:]
    server.requests.clear()
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    log = (tmp_path / "results" / "demo" / "logs" / "download" / "web.part-0000.log").read_text()
    assert f"{done} of 10 chunks taken whole from the store" in log
    refetched = [i for i in range(len(urls)) if server.requests[urls[i].removeprefix(server.base)]]
    assert len(refetched) <= 40 - 4 * done

    source = validate_config(config)["sources"]["web"]
    run_download("web", source, tmp_path / "whole", None, 4)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "manifest.parquet"),
                                  pd.read_parquet(tmp_path / "whole" / "manifest.parquet"))  # fmt: skip
    assert shard_contents(out) == shard_contents(tmp_path / "whole")
