"""MLflow under load and failure: 8 jobs logging at once to the default store lose nothing; a tracking server
killed mid-run leaves the job's real outputs complete and the failure reported. (8 jobs logging to a tracking
server at once: tests/test_tracking_server.py.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from vlalign.align.checkpoint import load_checkpoint
from vlalign.store.embeddings import EmbeddingWriter
from vlalign.tracking import HTTP_DEFAULTS

JOBS, STEPS = 8, 20
JOB = """
import sys, time
from pathlib import Path
from vlalign.tracking import stage_run

job, steps = int(sys.argv[1]), int(sys.argv[2])
while not Path("go").exists():  # all 8 start logging together
    time.sleep(0.01)
artifact = Path(f"summary-{job}.json")
artifact.write_text('{"job": %d}' % job)
with stage_run("job", {"job": job, "nested": {"lr": 0.1 * job}}, experiment="concurrent",
               wildcards={"job": str(job)}) as run:
    for step in range(1, steps + 1):
        run.log_metrics({"loss": job + 1 / step, "step_seconds": 0.01}, step=step)
    run.log_metrics({"final": job})
    run.log_output("summary", artifact)
sys.exit(1 if run.errors else 0)
"""


def clean_env() -> dict:
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)  # the default store: sqlite:///results/mlflow.db of the working directory
    return env


def test_eight_jobs_log_at_once_to_the_default_store_and_nothing_is_lost(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(JOB)
    jobs = [subprocess.Popen([sys.executable, str(script), str(i), str(STEPS)], cwd=tmp_path, env=clean_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(JOBS)]  # fmt: skip
    time.sleep(1)
    (tmp_path / "go").touch()
    results = [(job.wait(timeout=300), *job.communicate()) for job in jobs]
    assert [rc for rc, _, _ in results] == [0] * JOBS, [err[-2000:] for _, _, err in results]
    assert not any("vlalign tracking" in err for _, _, err in results)

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("concurrent").experiment_id])
    assert sorted(int(r.data.tags["wildcard.job"]) for r in runs) == list(range(JOBS))
    for run in runs:
        job = int(run.data.tags["wildcard.job"])
        assert run.info.status == "FINISHED" and "tracking_errors" not in run.data.tags
        assert run.data.params == {"job": str(job), "nested.lr": str(0.1 * job)}
        history = client.get_metric_history(run.info.run_id, "loss")
        assert sorted(m.step for m in history) == list(range(1, STEPS + 1))
        assert all(m.value == job + 1 / m.step for m in history)
        assert run.data.metrics["final"] == job
        (artifact,) = client.list_artifacts(run.info.run_id)
        path = client.download_artifacts(run.info.run_id, artifact.path, str(tmp_path / f"dl{job}"))
        assert json.loads(Path(path).read_text()) == {"job": job}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tracking_server(tmp_path):
    """`mlflow server` on 127.0.0.1, in a process group of its own so that the test can kill it whole."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            mlflow.MlflowClient(uri).search_experiments()
            break
        except Exception:
            time.sleep(0.5)
    else:
        pytest.fail("mlflow server did not start")
    yield server, uri
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


def test_the_store_lost_mid_run_leaves_outputs_complete_and_the_failure_reported(tracking_server, tmp_path):
    server, uri = tracking_server
    rng = np.random.default_rng(0)
    keys = [f"k{i}" for i in range(600)]
    for name, dim in (("img", 24), ("txt", 16)):
        writer = EmbeddingWriter(tmp_path / name, dim, meta={"spec": "t"})
        writer.append(rng.standard_normal((600, dim)).astype(np.float32), keys)
        writer.close()
    pd.DataFrame({"key": keys, "kept": True}).to_parquet(tmp_path / "decisions.parquet")
    settings = {"experiment": "lost", "tracking_uri": uri, "device": "cpu", "convert": {"max_resolution": 64},
                "encoders": {"image": {"alias": "i", "spec": "t"}, "text": {"alias": "t", "spec": "t"}},
                "train": {"head": "star", "target_dim": 16, "width_factor": 2, "batch_size": 32, "epochs": 6,
                          "checkpoint_every": 2, "val_fraction": 0.0, "precision": "fp32"}}  # fmt: skip
    out, state = tmp_path / "train" / "basic", tmp_path / "train" / ".basic.state"
    env = clean_env()
    for name in HTTP_DEFAULTS:
        env.pop(name, None)  # the defaults a user gets
    job = subprocess.Popen(
        [sys.executable, "-m", "vlalign.cli", "train", "--settings", json.dumps(settings), "--run-name", "basic",
         "--image-embeddings", str(tmp_path / "img"), "--text-embeddings", str(tmp_path / "txt"),
         "--pool-decisions", str(tmp_path / "decisions.parquet"), "--out", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while not list(state.glob("step-*")) and job.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert job.poll() is None, "training ended before the store could be taken away"
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=30)
    stdout, stderr = job.communicate(timeout=300)

    assert job.returncode == 0, stderr[-3000:]
    model, info = load_checkpoint(out)  # the real outputs are complete
    assert info["train_pairs"] == 600 and (out / "curves.csv").exists() and not state.exists()
    assert len(pd.read_csv(out / "curves.csv")) == 6 * 19 + 6
    reported = [line for line in stderr.splitlines() if line.startswith("vlalign tracking:")]
    assert reported and "failed" in reported[0] and uri.split("//")[1] in reported[0]
    assert "not recorded in MLflow" in reported[-1]
