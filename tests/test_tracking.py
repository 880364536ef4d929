import mlflow
import pytest

from vlalign.tracking import flatten, stage_run


def test_stage_run_records_tags_params_metrics_and_outputs(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    small = tmp_path / "small.json"
    small.write_text("{}")
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "a.tar").write_bytes(b"x" * 10)
    with stage_run("curate", {"curate": {"min_words": 2}}, experiment="e", tracking_uri=uri, wildcards={"source": "s"}) as run:
        run.log_metrics({"kept": 5, "flag": True, "name": "not a number"})
        run.log_output("small", small)
        run.log_output("shards", folder)
    client = mlflow.MlflowClient(uri)
    (found,) = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert found.info.status == "FINISHED"
    assert found.data.tags["rule"] == "curate" and found.data.tags["wildcard.source"] == "s"
    assert len(found.data.tags["config_digest"]) == 16 and "git_commit" in found.data.tags
    assert found.data.params["curate.min_words"] == "2"
    assert found.data.metrics == {"kept": 5.0}
    assert len(found.data.tags["output.shards.sha256"]) == 64
    assert [a.path for a in client.list_artifacts(found.info.run_id)] == ["small.json"]


def test_failed_stage_marks_run_failed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(RuntimeError):
        with stage_run("train", {}, experiment="e", tracking_uri=uri):
            raise RuntimeError("boom")
    client = mlflow.MlflowClient(uri)
    (found,) = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert found.info.status == "FAILED"


def test_unreachable_store_does_not_stop_the_stage(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with stage_run("train", {}, experiment="e", tracking_uri="http://127.0.0.1:9") as run:
        run.log_metrics({"x": 1})
        done = True
    assert done and run.errors
    assert "MLflow run could not be opened" in capsys.readouterr().err


def test_flatten():
    assert flatten({"a": {"b": 1, "c": [1, 2]}}) == {"a.b": "1", "a.c": "[1, 2]"}


def test_runs_are_tagged_with_the_code_commit_wherever_the_workflow_runs(tmp_path, monkeypatch):
    import subprocess
    from pathlib import Path

    from vlalign.tracking import git_commit

    repo = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    monkeypatch.chdir(tmp_path)  # a workflow's own folder, outside any checkout
    assert git_commit() == head and len(head) == 40
