"""Runs under several seeds: which (run, seed) pairs a config trains, what each is compared with, and how MLflow
groups one configuration's seeds under one run."""

from __future__ import annotations

import os

import mlflow
import pytest
import yaml
from test_workflow import REPO

from vlalign.config import ConfigError, run_baseline, run_instances, run_seeds, train_settings, validate_config
from vlalign.stage import stage_settings
from vlalign.align.train_stage import STAGE as TRAIN
from vlalign.tracking import PARENT_RUN_VARIABLE, end_workflow_run, stage_run, start_workflow_run


def demo() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_seeds_default_to_each_runs_own_seed():
    config = demo()
    config["train"]["seeds"] = None
    config["train"]["runs"]["basic"] = {"pool": "basic", "seed": 7}
    config = validate_config(config)
    assert run_seeds(config, "basic") == [7] and run_seeds(config, "raw") == [config["train"]["defaults"]["seed"]]
    assert ("basic", 7) in run_instances(config)


def test_every_run_is_trained_under_every_seed_and_only_its_seed_changes():
    config = demo()
    config["train"]["seeds"] = [3, 1]
    config = validate_config(config)
    assert run_instances(config) == [(run, seed) for run in config["train"]["runs"] for seed in (3, 1)]
    a, b = (stage_settings(config, TRAIN, run="basic", seed=str(seed)) for seed in (3, 1))
    assert (a["train"]["seed"], b["train"]["seed"]) == (3, 1)
    assert {**a["train"], "seed": 0} == {**b["train"], "seed": 0}
    # Adding a seed leaves the settings of the trainings already done as they were (Snakemake re-runs nothing).
    config["train"]["seeds"] = [3, 1, 2]
    assert stage_settings(config, TRAIN, run="basic", seed="3") == a
    assert train_settings(config, "basic", 3) == a["train"]


def test_baselines_are_the_first_run_unless_a_run_names_its_own():
    config = demo()
    config["train"]["runs"]["star"] = {"pool": "basic", "head": "star", "baseline": "basic"}
    config["train"]["runs"]["alone"] = {"pool": "basic", "baseline": None}
    config = validate_config(config)
    first = next(iter(config["train"]["runs"]))
    assert run_baseline(config, first) is None
    assert run_baseline(config, "aligned") == first
    assert run_baseline(config, "star") == "basic" and run_baseline(config, "alone") is None
    config["train"]["baseline"] = "basic"
    assert run_baseline(config, "aligned") == "basic" and run_baseline(config, "basic") is None


@pytest.mark.parametrize("where", ["run", "train"])
def test_an_unknown_baseline_is_refused_naming_its_key(where):
    config = demo()
    if where == "run":
        config["train"]["runs"]["basic"]["baseline"] = "nope"
    else:
        config["train"]["baseline"] = "nope"
    with pytest.raises(ConfigError, match="train.runs.basic.baseline: 'nope'" if where == "run" else "train.baseline"):
        validate_config(config)


def test_repeated_seeds_are_refused():
    config = demo()
    config["train"]["seeds"] = [0, 0]
    with pytest.raises(ConfigError, match="train.seeds"):
        validate_config(config)


def test_a_configurations_seeds_nest_under_one_group_run(tmp_path, monkeypatch):
    monkeypatch.delenv(PARENT_RUN_VARIABLE, raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = {"experiment": "e", "results_dir": str(tmp_path), "tracking_uri": uri}
    settings = {"experiment": "e", "tracking_uri": uri}
    parent_id = start_workflow_run(config, ["all"], jobs=5)
    for run, seed in (("basic", "0"), ("basic", "1"), ("raw", "0")):
        with stage_run("train", settings, "e", uri, wildcards={"run": run, "seed": seed}, group=f"train {run}"):
            pass
    with pytest.raises(RuntimeError):
        with stage_run("train", settings, "e", uri, wildcards={"run": "raw", "seed": "1"}, group="train raw"):
            raise RuntimeError("boom")
    with stage_run("report", settings, "e", uri):
        pass
    end_workflow_run(config, succeeded=False)
    assert PARENT_RUN_VARIABLE not in os.environ

    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    groups = {r.info.run_name: r for r in runs if r.data.tags["rule"] == "group"}
    assert sorted(groups) == ["train basic", "train raw"]
    assert all(g.data.tags["mlflow.parentRunId"] == parent_id and g.info.status == "FINISHED" for g in groups.values())
    trains = [r for r in runs if r.data.tags["rule"] == "train"]
    assert sorted((r.data.tags["wildcard.run"], r.data.tags["wildcard.seed"]) for r in trains) == [
        ("basic", "0"), ("basic", "1"), ("raw", "0"), ("raw", "1")]  # fmt: skip
    for r in trains:
        assert r.data.tags["mlflow.parentRunId"] == groups[f"train {r.data.tags['wildcard.run']}"].info.run_id
    # The invocation counts its rule runs, grouped or not, and not the group runs themselves.
    parent = client.get_run(parent_id)
    assert parent.data.metrics["rule_runs"] == 5 and parent.data.metrics["rule_runs_failed"] == 1
