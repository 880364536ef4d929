"""Many jobs logging at once to one tracking server, as a cluster's jobs do: nothing may be lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import mlflow

from mlflow_server import tracking_server  # noqa: F401  (fixture)

JOBS = 8
STEPS = 40

# One job: a stage run through vlalign.tracking, as every rule opens one. All jobs start together
# (a barrier: each reports ready, then waits for `go`), so the experiment is created concurrently too.
JOB = """
import json, sys, time
from pathlib import Path
import mlflow
from vlalign.tracking import stage_run

index, out = int(sys.argv[1]), Path(sys.argv[2])
(out / f"ready-{index}").touch()
while not (out / "go").exists():
    time.sleep(0.01)
artifact = out / f"metrics-{index}.json"
artifact.write_text(json.dumps({"job": index}))
with stage_run("burst", {"job": index, "lr": 0.1 * index}, experiment="burst", wildcards={"job": str(index)}) as run:
    for step in range(%d):
        run.log_metrics({"loss": index + step / 100}, step=step)
    run.log_output("metrics", artifact)
sys.exit(1 if run.errors else 0)
""" % STEPS


def test_eight_jobs_log_at_once_and_everything_arrives(tracking_server, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_server.uri}
    jobs = [
        subprocess.Popen([sys.executable, "-c", JOB, str(i), str(tmp_path)], env=env, cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        for i in range(JOBS)
    ]
    deadline = time.monotonic() + 180
    while len(list(tmp_path.glob("ready-*"))) < JOBS and time.monotonic() < deadline:
        time.sleep(0.1)
    (tmp_path / "go").touch()
    outputs = [job.communicate(timeout=300)[0] for job in jobs]
    failed = {i: out[-2000:] for i, (job, out) in enumerate(zip(jobs, outputs)) if job.returncode != 0}
    assert not failed, f"{failed}\n{tracking_server.log_tail()}"

    client = mlflow.MlflowClient(tracking_server.uri)
    experiment = client.get_experiment_by_name("burst")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    assert sorted(int(r.data.tags["wildcard.job"]) for r in runs) == list(range(JOBS))
    for run in runs:
        index = int(run.data.tags["wildcard.job"])
        assert run.info.status == "FINISHED" and "tracking_errors" not in run.data.tags
        assert run.data.params == {"job": str(index), "lr": str(0.1 * index)}
        history = client.get_metric_history(run.info.run_id, "loss")
        assert sorted((m.step, m.value) for m in history) == [(s, index + s / 100) for s in range(STEPS)]
        (artifact,) = client.list_artifacts(run.info.run_id)
        local = client.download_artifacts(run.info.run_id, artifact.path, str(tmp_path / f"download-{index}"))
        assert json.loads(open(local).read()) == {"job": index}
