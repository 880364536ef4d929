"""MLflow tracking: every stage execution is one run, tagged so runs can be traced back.

Tags: rule, wildcards, config digest, git commit. Small outputs are logged as artifacts,
large ones as path + sha256. The store is `sqlite:///results/mlflow.db` unless the
config or $MLFLOW_TRACKING_URI names another (a tracking server on clusters).
A failing store never destroys a stage's real outputs: the error is reported on stderr
and in the run summary, and the stage goes on.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from vlalign.io import sha256_file, sha256_json

STORE_NAME = "mlflow.db"  # the default sqlite store, in `results_dir` beside every experiment's folder
SMALL_ARTIFACT_BYTES = 5 * 1024 * 1024


def resolve_tracking_uri(configured: str | None = None, results_dir: str | os.PathLike = "results") -> str:
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(Path(results_dir) / STORE_NAME).resolve()}"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def flatten(obj, prefix: str = "") -> dict[str, str]:
    """Nested settings as MLflow params: `train.lr` -> "0.0001"."""
    if isinstance(obj, dict):
        items: dict[str, str] = {}
        for key, value in obj.items():
            items.update(flatten(value, f"{prefix}{key}."))
        return items
    return {prefix.rstrip("."): json.dumps(obj) if isinstance(obj, (list, tuple)) else str(obj)}


def path_digest(path: Path) -> tuple[str, int]:
    """sha256 of a file, or of a folder's (relative path, file sha256) list; and total bytes."""
    if path.is_file():
        return sha256_file(path), path.stat().st_size
    files = sorted(p for p in path.rglob("*") if p.is_file())
    listing = [(str(p.relative_to(path)), sha256_file(p)) for p in files]
    return sha256_json(listing), sum(p.stat().st_size for p in files)


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise creation of a sqlite store: several jobs may start on a fresh one at once."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _experiment_id(client, name: str, uri: str) -> str:
    """The experiment's id, creating it if needed. Jobs on a cluster start at once and reach the
    tracking server unserialised: a creation that loses that race finds the winner's experiment."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    artifacts = None
    if uri.startswith("sqlite:///"):
        artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifacts)
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


# MLflow's own HTTP defaults retry a refused request for minutes (7 retries, backoff factor 2): a job logging a
# metric per step would stall for hours on a store that went away. A user's own settings win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}  # fmt: skip
# After a failed call the store is left alone this long (calls in between are counted, not made), then tried again.
RETRY_AFTER_S = 60.0


class StageRun:
    """Handle on the MLflow run of one stage execution; every call reports, never raises, on store errors."""

    def __init__(self, client, run_id: str | None, uri: str = ""):
        self.client = client
        self.run_id = run_id
        self.uri = uri
        self.errors: list[str] = []
        self.skipped = 0  # calls not made while the store was failing
        self._retry_at = 0.0

    def _call(self, what: str, method: str, *args, run_id: str | None = None, **kwargs) -> None:
        """Call `MlflowClient.<method>(run_id, ...)`; a store error is reported and remembered."""
        run_id = run_id or self.run_id
        if run_id is None:
            return
        if time.monotonic() < self._retry_at:
            self.skipped += 1
            return
        try:
            getattr(self.client, method)(run_id, *args, **kwargs)
        except Exception as exc:  # the store failing must not lose the stage's outputs
            self._report(f"MLflow {what} failed at {self.uri}: {type(exc).__name__}: {exc}")
            self._retry_at = time.monotonic() + RETRY_AFTER_S

    def _report(self, message: str) -> None:
        self.errors.append(message)
        print(f"vlalign tracking: {message}", file=sys.stderr, flush=True)

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        flat = flatten(params)
        batch = [Param(k, v[:6000]) for k, v in flat.items()]
        for start in range(0, len(batch), 100):
            self._call("log params", "log_batch", params=batch[start : start + 100])

    def log_metrics(self, metrics: dict, step: int | None = None, run_id: str | None = None) -> None:
        """Log numeric values; `run_id` logs to another run (an evaluation onto its trained model)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(k, float(v), now, step or 0)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        for start in range(0, len(batch), 500):
            self._call("log metrics", "log_batch", metrics=batch[start : start + 500], run_id=run_id)

    def set_tags(self, tags: dict) -> None:
        for key, value in tags.items():
            self._call("set tag", "set_tag", key, str(value))

    def log_output(self, name: str, path: str | os.PathLike) -> None:
        """Small files become artifacts; large files and folders are recorded as path + sha256."""
        path = Path(path)
        digest, size = path_digest(path)
        self.set_tags({f"output.{name}.path": str(path.resolve()), f"output.{name}.sha256": digest,
                       f"output.{name}.bytes": size})  # fmt: skip
        if path.is_file() and size <= SMALL_ARTIFACT_BYTES:
            self._call("log artifact", "log_artifact", str(path))


@contextlib.contextmanager
def stage_run(
    rule: str,
    settings: dict,
    experiment: str,
    tracking_uri: str | None = None,
    wildcards: dict | None = None,
    run_name: str | None = None,
    results_dir: str | os.PathLike = "results",
) -> Iterator[StageRun]:
    """Open an MLflow run for one stage execution; it ends FINISHED, or FAILED if the block raises."""
    uri = resolve_tracking_uri(tracking_uri, results_dir)
    wildcards = wildcards or {}
    tags = {
        "rule": rule,
        "wildcards": json.dumps(wildcards, sort_keys=True),
        "config_digest": sha256_json(settings)[:16],
        "git_commit": git_commit(),
        **{f"wildcard.{k}": v for k, v in wildcards.items()},
    }
    name = run_name or "-".join([rule, *map(str, wildcards.values())])
    run = StageRun(None, None, uri)
    for variable, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(variable, value)
    try:
        from mlflow import MlflowClient

        with _store_lock(uri):
            client = MlflowClient(tracking_uri=uri)
            experiment_id = _experiment_id(client, experiment, uri)
            created = client.create_run(experiment_id, run_name=name, tags=tags)
        run = StageRun(client, created.info.run_id, uri)
        run.log_params(settings)
    except Exception as exc:
        run._report(f"MLflow run could not be opened at {uri}: {type(exc).__name__}: {exc}")
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    finally:
        if run.errors and status == "FINISHED":
            run.set_tags({"tracking_errors": len(run.errors)})
        run._call("end run", "set_terminated", status=status)
        if run.errors:
            # The last word in the job's log: its outputs stand, its MLflow record does not.
            print(f"vlalign tracking: {len(run.errors)} MLflow call(s) failed and {run.skipped} were skipped: this "
                  f"{rule} run is not recorded in MLflow in full ({uri})", file=sys.stderr, flush=True)
