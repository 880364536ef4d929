"""MLflow tracking: every stage execution is one run, tagged so runs can be traced back.

Tags: rule, wildcards, config digest, git commit. Inputs are logged as MLflow datasets
(vlalign.lineage); small outputs as artifacts, large ones as path + sha256. The runs of
one Snakemake invocation nest under its own run (`start_workflow_run`). The store is
`sqlite:///results/mlflow.db` unless the config or $MLFLOW_TRACKING_URI names another
(a tracking server on clusters).
A failing store never destroys a stage's real outputs: the error is reported on stderr
and in the run summary, and the stage goes on.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
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
    """The commit of the vlalign checkout that runs (the code's, not the working directory's: workflows run in
    folders of their own); "unknown" for an installed package."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)  # fmt: skip
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


# The MLflow UI opens an experiment of this kind on its model-training views (runs, datasets, models), not GenAI's.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def _experiment_id(client, name: str, uri: str) -> str:
    """The experiment's id, creating it if needed. Jobs on a cluster start at once and reach the
    tracking server unserialised: a creation that loses that race finds the winner's experiment."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        if EXPERIMENT_KIND[0] not in found.tags:  # made by an older vlalign
            client.set_experiment_tag(found.experiment_id, *EXPERIMENT_KIND)
        return found.experiment_id
    artifacts = None
    if uri.startswith("sqlite:///"):
        artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifacts, tags=dict([EXPERIMENT_KIND]))
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

    def __init__(self, client, run_id: str | None, uri: str = "", root: Path | None = None):
        self.client = client
        self.run_id = run_id
        self.uri = uri
        self.root = root  # the experiment's folder: input datasets are named by their path inside it
        self.errors: list[str] = []
        self.skipped = 0  # calls not made while the store was failing
        self._retry_at = 0.0

    def attempt(self, what: str, function, *args, **kwargs) -> None:
        """Call `function(*args, **kwargs)` for this run; an error is reported and remembered, never raised."""
        if self.run_id is None:
            return
        if time.monotonic() < self._retry_at:
            self.skipped += 1
            return
        try:
            function(*args, **kwargs)
        except Exception as exc:  # the store failing must not lose the stage's outputs
            self._report(f"MLflow {what} failed at {self.uri}: {type(exc).__name__}: {exc}")
            self._retry_at = time.monotonic() + RETRY_AFTER_S

    def _call(self, what: str, method: str, *args, run_id: str | None = None, **kwargs) -> None:
        """Call `MlflowClient.<method>(run_id, ...)`; a store error is reported and remembered."""
        run_id = run_id or self.run_id
        if run_id is not None:
            self.attempt(what, getattr(self.client, method), run_id, *args, **kwargs)

    def _report(self, message: str) -> None:
        self.errors.append(message)
        print(f"vlalign tracking: {message}", file=sys.stderr, flush=True)

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        flat = flatten(params)
        batch = [Param(k, v[:6000]) for k, v in flat.items()]
        for start in range(0, len(batch), 100):
            self._call("log params", "log_batch", params=batch[start : start + 100])

    def log_metrics(self, metrics: dict, step: int | None = None, run_id: str | None = None,
                    model_id: str | None = None) -> None:  # fmt: skip
        """Log numeric values; `run_id` logs to another run (an evaluation onto its trained model), `model_id`
        links them to an MLflow model (the UI's model pages show them)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(k, float(v), now, step or 0, model_id=model_id)
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
        from vlalign.lineage import fingerprint

        path = Path(path)
        digest, size = path_digest(path)
        # The fingerprint is the digest a run reading this output logs for its input dataset.
        self.set_tags({f"output.{name}.path": str(path.resolve()), f"output.{name}.sha256": digest,
                       f"output.{name}.fingerprint": fingerprint(path), f"output.{name}.bytes": size})  # fmt: skip
        if path.is_file() and size <= SMALL_ARTIFACT_BYTES:
            self._call("log artifact", "log_artifact", str(path))

    def log_model_input(self, model_id: str) -> None:
        """Record that this run read the MLflow model `model_id` (an evaluation, the model it scores)."""
        from mlflow.entities import LoggedModelInput

        self._call("log model input", "log_inputs", models=[LoggedModelInput(model_id)])

    def log_inputs(self, context: str, *paths: str | os.PathLike | None) -> None:
        """Log files and folders this run reads as MLflow datasets (the UI's Dataset column), with `context`
        (training, evaluation, ...) as their tag; None entries (optional inputs not given) are skipped."""
        from vlalign.lineage import dataset_input

        paths = [path for path in paths if path]
        if self.run_id is None or not paths:
            return
        try:
            datasets = [dataset_input(path, context, self.root) for path in paths]
        except Exception as exc:  # an input that cannot be described is reported; the stage itself decides
            self._report(f"describing the {context} inputs failed: {type(exc).__name__}: {exc}")
            return
        self._call(f"log {context} inputs", "log_inputs", datasets=datasets)


PARENT_RUN_VARIABLE = "VLALIGN_PARENT_RUN_ID"  # set by start_workflow_run; jobs, local or sbatch'ed, inherit it
WORKFLOW_RUN_TAG = "workflow_run"  # on an invocation's run and on every rule run under it: the UI groups by it


def _workflow_tags(client, experiment_id: str) -> dict:
    """The tags nesting a rule run under the Snakemake invocation that started it, if any, and if that run is in
    the same experiment of the same store (a variable left over from elsewhere nests nothing)."""
    parent_id = os.environ.get(PARENT_RUN_VARIABLE)
    if not parent_id:
        return {}
    try:
        parent = client.get_run(parent_id)
    except Exception as exc:
        print(f"vlalign tracking: ${PARENT_RUN_VARIABLE} names run {parent_id}, not found here ({type(exc).__name__}); "
              "this run is not nested", file=sys.stderr, flush=True)  # fmt: skip
        return {}
    if parent.info.experiment_id != experiment_id:
        return {}
    return {"mlflow.parentRunId": parent_id, WORKFLOW_RUN_TAG: parent.data.tags.get(WORKFLOW_RUN_TAG, parent_id)}


GROUP_TAG = "group"  # on the run that holds the runs of one configuration under several seeds


def _group_run_id(client, experiment_id: str, group: str, workflow_tags: dict) -> str:
    """The run grouping `group`'s runs under the current invocation (or outside any), made by the first of them.
    A finished container: its children carry the status. Under the store lock the look-up and creation are one
    step for a sqlite store; jobs racing on a tracking server may make two groups of one configuration, which
    the `group` tag still joins."""
    query = f"tags.{GROUP_TAG} = '{group}' and tags.rule = 'group'"
    if WORKFLOW_RUN_TAG in workflow_tags:
        query += f" and tags.{WORKFLOW_RUN_TAG} = '{workflow_tags[WORKFLOW_RUN_TAG]}'"
    found = client.search_runs([experiment_id], query, max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(experiment_id, run_name=group, tags={**workflow_tags, GROUP_TAG: group, "rule": "group"})
    client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id


def _create_run(uri: str, experiment: str, name: str, tags: dict, nest: bool = False, group: str | None = None):
    """(client, new RUNNING run) in `experiment` at `uri`; with `nest`, under the current Snakemake invocation,
    and with `group`, under that configuration's group run (see `_group_run_id`)."""
    from mlflow import MlflowClient

    for variable, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(variable, value)
    with _store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        experiment_id = _experiment_id(client, experiment, uri)
        workflow_tags = _workflow_tags(client, experiment_id) if nest else {}
        tags = {**tags, **workflow_tags}
        if group is not None:
            tags = {**tags, GROUP_TAG: group, "mlflow.parentRunId": _group_run_id(client, experiment_id, group,
                                                                                  workflow_tags)}  # fmt: skip
        return client, client.create_run(experiment_id, run_name=name, tags=tags)


def start_workflow_run(config: dict, targets: list[str], jobs: int) -> str | None:
    """Open the MLflow run of one Snakemake invocation (its `onstart`, which a dry run never calls) and export its
    id, so that the rule runs of every job started from this process nest under it. None, with a line on stderr,
    when the store cannot be reached: the workflow runs on, ungrouped."""
    uri = resolve_tracking_uri(config["tracking_uri"], config["results_dir"])
    name = f"snakemake {time.strftime('%Y-%m-%d %H:%M:%S')} {config['experiment']}"
    tags = {WORKFLOW_RUN_TAG: name, "rule": "snakemake", "config_digest": sha256_json(config)[:16],
            "git_commit": git_commit(), "command": shlex.join(sys.argv), "targets": json.dumps(targets)}  # fmt: skip
    try:
        client, run = _create_run(uri, config["experiment"], name, tags)
        client.log_metric(run.info.run_id, "jobs_planned", jobs)
        StageRun(client, run.info.run_id, uri).log_params(config)  # the whole config, as the UI compares it
    except Exception as exc:
        print(f"vlalign tracking: the workflow's MLflow run could not be opened at {uri}: {type(exc).__name__}: "
              f"{exc}; rule runs are logged ungrouped", file=sys.stderr, flush=True)  # fmt: skip
        return None
    os.environ[PARENT_RUN_VARIABLE] = run.info.run_id
    return run.info.run_id


def _rule_runs(client, run) -> list:
    """The rule runs of an invocation's run: nested under it, or under a group run nested under it."""
    query = f"tags.{WORKFLOW_RUN_TAG} = '{run.data.tags.get(WORKFLOW_RUN_TAG, run.info.run_id)}'"
    runs, token = [], None
    while True:
        page = client.search_runs([run.info.experiment_id], query, max_results=1000, page_token=token)
        runs.extend(r for r in page if r.info.run_id != run.info.run_id and r.data.tags.get("rule") != "group")
        if not (token := page.token):
            return runs


def end_workflow_run(config: dict, succeeded: bool) -> None:
    """End the invocation's run (Snakemake's `onsuccess`/`onerror`) FINISHED or FAILED, with the count of its
    rule runs by status."""
    run_id = os.environ.pop(PARENT_RUN_VARIABLE, None)
    if not run_id:
        return
    uri = resolve_tracking_uri(config["tracking_uri"], config["results_dir"])
    try:
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        client = MlflowClient(tracking_uri=uri)
        statuses = [child.info.status for child in _rule_runs(client, client.get_run(run_id))]
        counts = {"rule_runs": len(statuses), **{f"rule_runs_{status.lower()}": statuses.count(status)
                                                 for status in ("FINISHED", "FAILED", "RUNNING")}}  # fmt: skip
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(key, value, now, 0) for key, value in counts.items()])
        client.set_terminated(run_id, status="FINISHED" if succeeded else "FAILED")
    except Exception as exc:
        print(f"vlalign tracking: the workflow's MLflow run {run_id} could not be ended at {uri}: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)  # fmt: skip


@contextlib.contextmanager
def stage_run(
    rule: str,
    settings: dict,
    experiment: str,
    tracking_uri: str | None = None,
    wildcards: dict | None = None,
    run_name: str | None = None,
    results_dir: str | os.PathLike = "results",
    group: str | None = None,
) -> Iterator[StageRun]:
    """Open an MLflow run for one stage execution; it ends FINISHED, or FAILED if the block raises.

    Under a Snakemake invocation (see `start_workflow_run`) the run nests under the invocation's run; with
    `group` (one configuration's runs under several seeds), under the group's run, itself under the invocation's."""
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
    try:
        client, created = _create_run(uri, experiment, name, tags, nest=True, group=group)
        # Inputs are named by their path in the experiment's folder (vlalign.config.experiment_dir).
        run = StageRun(client, created.info.run_id, uri, root=Path(results_dir) / experiment)
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
