"""profiles/slurm on a real one-node SLURM cluster: a small demo through sbatch, logging to a real
tracking server, checked job by job in SLURM's accounting and against a local run of the same config."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from mlflow_server import tracking_server  # noqa: F401  (fixture)
from slurm_cluster import slurm_cluster  # noqa: F401  (fixture)
from test_workflow import BIN, REPO, demo_config, job_counts, tiny_config, write_config

PROFILE = REPO / "profiles" / "slurm"
# Rules that need a GPU on a cluster; every other submitted rule must get none.
GPU_RULES = {"embed", "embed_part", "embed_extra_captions", "embed_negatives", "score_alignment", "train", "probe",
             "evaluate"}  # fmt: skip


def small_demo(deb_cache: Path) -> dict:
    config = tiny_config(deb_cache)
    # The demo's curation sweep; the feature runs of the tiny test add jobs, not cluster coverage.
    for run in ("negatives", "multi"):
        del config["train"]["runs"][run]
    config["train"]["seeds"] = None
    return config


def site_profile(folder: Path, cluster) -> Path:
    """profiles/slurm with only the keys a user must change (marked CHANGE) set for this cluster."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert profile["default-resources"]["slurm_account"] == profile["default-resources"]["slurm_partition"] == "CHANGE_ME"
    profile["default-resources"].update(slurm_account=cluster.account, slurm_partition=cluster.partition)
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def run_snakemake(*args: str, cwd: Path, tracking_uri: str | None = None, timeout: int = 1500):
    """Snakemake as a user starts it, and its wall time; a hung run is stopped with SIGINT, which
    cancels its SLURM jobs."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    argv = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), *args]
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        pytest.fail(f"snakemake {' '.join(args)} ran past {timeout} s\n{err[-5000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), time.monotonic() - start


def logs(results: Path) -> str:
    return "\n".join(f"== {p}\n{p.read_text()[-2000:]}" for p in sorted(results.rglob("*.log")))


def runs_by_rule(client: mlflow.MlflowClient, experiment: str) -> list:
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)


@pytest.mark.workflow
def test_small_demo_runs_through_slurm_like_locally(slurm_cluster, tracking_server, deb_cache, tmp_path):  # noqa: F811
    config = small_demo(deb_cache)
    local, cluster_dir = tmp_path / "local", tmp_path / "slurm"
    for workdir in (local, cluster_dir):
        write_config(workdir, config)

    planned, _ = run_snakemake("-n", "--quiet", "rules", cwd=local, timeout=300)
    submitted = {rule: n for rule, n in job_counts(planned.stdout).items() if rule not in ("all", "report", "total")}
    result, local_seconds = run_snakemake("--cores", "2", "--resources", "gpu=1", cwd=local)
    assert result.returncode == 0, result.stderr[-5000:] + logs(local / "results")
    experiment = config["experiment"]

    profile = site_profile(tmp_path / "profile", slurm_cluster)
    # profiles/default (the one-GPU box) would also apply and cap every job at gpu=1: `--workflow-profile none`.
    result, slurm_seconds = run_snakemake(
        "--profile", str(profile), "--workflow-profile", "none",
        # This cluster answers at once: poll for job states every few seconds, not every 40.
        "--slurm-init-seconds-before-status-checks", "3",
        cwd=cluster_dir, tracking_uri=tracking_server.uri,
    )  # fmt: skip
    print(f"\nsmall demo: local {local_seconds:.0f} s, through SLURM {slurm_seconds:.0f} s "
          f"({sum(submitted.values())} sbatch jobs)")  # fmt: skip
    assert result.returncode == 0, result.stderr[-8000:] + logs(cluster_dir / "results") + slurm_cluster.logs_tail()

    # Every job ran through SLURM, finished, and got a GPU exactly when its rule is model-bound.
    acct = slurm_cluster.run("sacct", "-X", "-n", "-P", "-a", "-S", "now-1days",
                             "-o", "JobID,State,ExitCode,Account,AllocTRES,Comment").stdout  # fmt: skip
    jobs = pd.DataFrame([line.split("|", 5) for line in acct.splitlines()],
                        columns=["id", "state", "exit", "account", "tres", "comment"])  # fmt: skip
    jobs["rule"] = jobs.comment.str.removeprefix("rule_").str.split("_wildcards_").str[0]
    assert jobs.rule.value_counts().to_dict() == submitted
    assert (jobs.state == "COMPLETED").all() and (jobs.exit == "0:0").all(), jobs
    assert (jobs.account == slurm_cluster.account).all()
    assert (jobs.tres.str.contains("gres/gpu=1") == jobs.rule.isin(GPU_RULES)).all(), jobs[["rule", "tres"]]

    # The results equal the local run's.
    cluster_results, local_results = (workdir / "results" / experiment for workdir in (cluster_dir, local))
    for results in (local_results, cluster_results):
        assert (results / "report" / "summary.md").exists()
    pd.testing.assert_frame_equal(
        pd.read_csv(cluster_results / "report" / "summary.csv", index_col=0),
        pd.read_csv(local_results / "report" / "summary.csv", index_col=0),
    )
    for pool in config["curate"]["pools"]:
        decisions = f"curate/pools/{pool}/decisions.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(cluster_results / decisions),
                                      pd.read_parquet(local_results / decisions))  # fmt: skip
    for path in ("train/basic/seed-0/model.safetensors", "curate/alignment/basic.parquet", "beton/pool.parquet"):
        assert (cluster_results / path).read_bytes() == (local_results / path).read_bytes(), path

    # Every job logged its run to the tracking server over HTTP, none to a sqlite file of its own.
    assert not (cluster_dir / "results" / "mlflow.db").exists()
    server_runs = runs_by_rule(mlflow.MlflowClient(tracking_server.uri), experiment)
    local_runs = runs_by_rule(mlflow.MlflowClient(f"sqlite:///{local / 'results' / 'mlflow.db'}"), experiment)
    count = lambda runs: pd.Series([r.data.tags["rule"] for r in runs]).value_counts().to_dict()  # noqa: E731
    assert count(server_runs) == count(local_runs)
    assert all(r.info.status == "FINISHED" and "tracking_errors" not in r.data.tags for r in server_runs)
    # sbatch'ed jobs inherit the invocation's run from the submit host's environment and nest under it (a training
    # under its configuration's group run, itself under the invocation's).
    (parent,) = [r for r in server_runs if r.data.tags["rule"] == "snakemake"]
    groups = {r.info.run_id for r in server_runs if r.data.tags["rule"] == "group"}
    assert groups and all(r.data.tags.get("workflow_run") == parent.info.run_name for r in server_runs)
    for r in server_runs:
        if r is not parent:
            expected = groups if r.data.tags["rule"] == "train" else {parent.info.run_id}
            assert r.data.tags.get("mlflow.parentRunId") in expected, (r.info.run_name, r.data.tags)


def dry_run_resources(output: str) -> dict[str, set[str]]:
    """rule -> the distinct `resources:` lines of its jobs in a dry run's listing."""
    resources, rule = {}, None
    for line in output.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("resources:") and rule:
            resources.setdefault(rule, set()).add(line.strip())
    return resources


def test_profile_gives_scattered_embedding_and_multi_gpu_training_their_gpus(tmp_path):
    config = demo_config()
    config["embed"]["parts"] = 2
    config["train"]["gpus"] = 4
    write_config(tmp_path, config)
    args = ("--profile", str(PROFILE), "--workflow-profile", "none", "-n")
    refused, _ = run_snakemake(*args, cwd=tmp_path, timeout=300)
    assert refused.returncode != 0 and "MLFLOW_TRACKING_URI" in refused.stdout + refused.stderr  # no server, no run
    result, _ = run_snakemake(*args, cwd=tmp_path, tracking_uri="http://127.0.0.1:5000", timeout=300)
    assert result.returncode == 0, result.stderr[-5000:]
    resources = dry_run_resources(result.stdout)
    assert all("gpu=4" in r and "nodes=1" in r for r in resources["train"]), resources["train"]
    assert all("gpu=1" in r for r in resources["embed_part"])
    assert not any("gpu=" in r for rule in ("gather_embeddings", "convert", "download") for r in resources[rule])
