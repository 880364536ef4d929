"""MLflow as its users read it: a Snakemake invocation's rule runs nest under one run, inputs are MLflow datasets
with cheap digests, and a trained aligner is an MLflow model that `mlflow.pyfunc.load_model` scores."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from test_model import trained  # noqa: F401  (the fixture: convert, embed and the real train command)
from train_fixtures import write_pair_stores

import vlalign
from mlflow.entities import LoggedModelStatus
from vlalign.lineage import FINGERPRINT_BLOCK, FINGERPRINT_FILES, fingerprint
from vlalign.tracking import PARENT_RUN_VARIABLE, end_workflow_run, stage_run, start_workflow_run

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <finalize object:pytest.PytestUnraisableExceptionWarning"
)


def _config(tmp_path: Path) -> dict:
    return {"experiment": "e", "results_dir": str(tmp_path), "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "train": {"lr": 1e-3}}  # fmt: skip


def _runs(config: dict) -> dict:
    client = mlflow.MlflowClient(config["tracking_uri"])
    experiment = client.get_experiment_by_name(config["experiment"]).experiment_id
    return {run.info.run_name: run for run in client.search_runs([experiment])}


def test_rule_runs_of_an_invocation_nest_under_its_run(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(PARENT_RUN_VARIABLE, raising=False)
    config = _config(tmp_path)
    parent_id = start_workflow_run(config, ["all"], jobs=3)
    assert os.environ[PARENT_RUN_VARIABLE] == parent_id
    settings = {"experiment": "e", "tracking_uri": config["tracking_uri"]}
    with stage_run("convert", settings, "e", config["tracking_uri"], wildcards={"dataset": "pool"}):
        pass
    with pytest.raises(RuntimeError):
        with stage_run("train", settings, "e", config["tracking_uri"], wildcards={"run": "basic"}):
            raise RuntimeError("boom")
    end_workflow_run(config, succeeded=False)
    assert PARENT_RUN_VARIABLE not in os.environ
    with stage_run("report", settings, "e", config["tracking_uri"]):  # standalone: no invocation
        pass

    runs = _runs(config)
    parent = next(run for name, run in runs.items() if name.startswith("snakemake "))
    assert parent.info.run_id == parent_id and parent.info.status == "FAILED"
    assert parent.info.run_name.endswith(" e") and parent.data.tags["workflow_run"] == parent.info.run_name
    assert json.loads(parent.data.tags["targets"]) == ["all"] and parent.data.tags["command"]
    assert len(parent.data.tags["config_digest"]) == 16 and parent.data.params["train.lr"] == "0.001"
    assert parent.data.metrics == {"jobs_planned": 3, "rule_runs": 2, "rule_runs_finished": 1, "rule_runs_failed": 1,
                                   "rule_runs_running": 0}  # fmt: skip
    for name in ("convert-pool", "train-basic"):
        assert runs[name].data.tags["mlflow.parentRunId"] == parent_id
        assert runs[name].data.tags["workflow_run"] == parent.info.run_name
    assert "mlflow.parentRunId" not in runs["report"].data.tags and "workflow_run" not in runs["report"].data.tags
    assert "vlalign tracking" not in capsys.readouterr().err


def test_a_parent_from_another_store_nests_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(PARENT_RUN_VARIABLE, "0123456789abcdef0123456789abcdef")
    config = _config(tmp_path)
    with stage_run("convert", {}, "e", config["tracking_uri"]) as run:
        pass
    assert run.run_id and not run.errors
    assert "mlflow.parentRunId" not in _runs(config)["convert"].data.tags
    assert "names run 0123456789abcdef0123456789abcdef, not found here" in capsys.readouterr().err


def test_an_unreachable_store_leaves_the_workflow_ungrouped(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(PARENT_RUN_VARIABLE, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    config = {**_config(tmp_path), "tracking_uri": "http://127.0.0.1:9"}
    assert start_workflow_run(config, ["all"], jobs=1) is None
    assert PARENT_RUN_VARIABLE not in os.environ
    assert "rule runs are logged ungrouped" in capsys.readouterr().err


def _rchar() -> int:
    """Bytes this process has read through read() calls so far."""
    return int(dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())["rchar"])


def test_fingerprint_reads_samples_of_large_files_only(tmp_path):
    big = tmp_path / "part-00000.npy"
    with open(big, "wb") as f:
        f.truncate(256 << 20)
    before = _rchar()
    digest = fingerprint(big)
    assert _rchar() - before < 4 * FINGERPRINT_BLOCK
    copy = tmp_path / "copy" / "part-00000.npy"
    copy.parent.mkdir()
    with open(copy, "wb") as f:
        f.truncate(256 << 20)
    assert fingerprint(copy) == digest  # contents and size, not path or time
    with open(copy, "r+b") as f:
        f.seek((256 << 20) - 10)
        f.write(b"changed")
    assert fingerprint(copy) != digest
    with open(copy, "ab") as f:
        f.write(b"x")
    assert fingerprint(copy) not in (digest, fingerprint(big))
    many = tmp_path / "images"
    many.mkdir()
    for i in range(FINGERPRINT_FILES + 100):
        (many / f"{i:04d}.png").write_bytes(bytes([i % 256]) * 10_000)
    before = _rchar()
    fingerprint(many)
    assert _rchar() - before < (FINGERPRINT_FILES + 10) * 10_000


def test_inputs_are_datasets_named_in_the_experiment_folder_with_cheap_digests(tmp_path, monkeypatch):
    monkeypatch.delenv(PARENT_RUN_VARIABLE, raising=False)
    config = _config(tmp_path)
    experiment_dir = tmp_path / "e"
    write_pair_stores(experiment_dir / "embeddings" / "pool", pairs=10, image_dim=8, text_dim=6)
    pool = experiment_dir / "curate" / "pools" / "basic"
    pool.mkdir(parents=True)
    (experiment_dir / "embeddings" / "pool" / "decisions.parquet").rename(pool / "decisions.parquet")
    image_store = experiment_dir / "embeddings" / "pool" / "img"
    with stage_run("embed", {}, "e", config["tracking_uri"], results_dir=tmp_path) as producer:
        producer.log_output("embeddings", image_store)
    with stage_run("train", {}, "e", config["tracking_uri"], results_dir=tmp_path) as run:
        run.log_inputs("training", pool / "decisions.parquet", image_store, None)
    assert not run.errors

    client = mlflow.MlflowClient(config["tracking_uri"])
    inputs = client.get_run(run.run_id).inputs.dataset_inputs
    found = {i.dataset.name: i for i in inputs}
    assert list(found) == ["curate/pools/basic/decisions.parquet", "embeddings/pool/img"]
    for name, path in (("curate/pools/basic/decisions.parquet", pool / "decisions.parquet"),
                       ("embeddings/pool/img", image_store)):  # fmt: skip
        dataset = found[name].dataset
        assert dataset.digest == fingerprint(path) and len(dataset.digest) == 16
        assert (dataset.source_type, json.loads(dataset.source)) == ("local", {"uri": str(path.resolve())})
        assert [(t.key, t.value) for t in found[name].tags] == [("mlflow.data.context", "training")]
    store = found["embeddings/pool/img"].dataset
    assert json.loads(store.profile)["num_rows"] == 10 and json.loads(store.profile)["encoder"] == "test"
    spec = json.loads(json.loads(store.schema)["mlflow_tensorspec"]["features"])
    assert spec[0]["tensor-spec"] == {"dtype": "float16", "shape": [-1, 8]}
    table = found["curate/pools/basic/decisions.parquet"].dataset
    assert json.loads(table.profile)["num_rows"] == 10
    assert json.loads(table.schema)["mlflow_colspec"] == [{"name": "key", "type": "string"},
                                                          {"name": "kept", "type": "boolean"}]  # fmt: skip
    # The consumer's digest is the producer's fingerprint tag: search finds the run that wrote the input.
    experiment = client.get_experiment_by_name("e").experiment_id
    (writer,) = client.search_runs([experiment], f"tags.`output.embeddings.fingerprint` = '{store.digest}'")
    assert writer.info.run_id == producer.run_id


def test_an_input_that_cannot_be_described_is_reported_not_raised(tmp_path, capsys):
    config = _config(tmp_path)
    with stage_run("train", {}, "e", config["tracking_uri"]) as run:
        run.log_inputs("training", tmp_path / "missing.parquet")
        run.log_metrics({"after": 1})
    assert len(run.errors) == 1 and "missing.parquet: input not found" in capsys.readouterr().err
    assert mlflow.MlflowClient(config["tracking_uri"]).get_run(run.run_id).data.metrics == {"after": 1}


SCORE = """
import sys
import mlflow.pyfunc
import pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1], model_config={"device": "cpu"})
model.predict(pd.read_parquet(sys.argv[2])).to_parquet(sys.argv[3])
"""


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_trained_aligner_is_an_mlflow_model_scoring_like_load_model(trained, tmp_path, monkeypatch):  # noqa: F811
    uri = f"sqlite:///{trained['root'] / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("model-test").experiment_id
    (run,) = client.search_runs([experiment], "tags.rule = 'train'")
    (output,) = run.outputs.model_outputs
    logged = client.get_logged_model(output.model_id)
    assert (logged.name, logged.source_run_id, logged.status) == ("model", run.info.run_id, LoggedModelStatus.READY)
    assert logged.params["image_encoder"] == "efficientnet-lite0" and logged.params["train_pairs"] == "8"
    # Outside an experiment folder, an input is named by its last two path parts.
    root = trained["root"].name
    assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["pool/decisions.parquet", f"{root}/img",
                                                                    f"{root}/txt"]  # fmt: skip

    items = trained["items"]
    path = tmp_path / "k1.png"
    items[1][1].save(path)
    frame = pd.DataFrame({
        "image": [_png(items[0][1]), None, _png(items[2][1]), None],
        "image_path": [None, str(path), None, None],
        "text": [items[0][2], items[1][2], None, "a red circle"],
    })  # fmt: skip
    frame.to_parquet(tmp_path / "in.parquet")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    command = [sys.executable, "-c", SCORE, f"runs:/{run.info.run_id}/model", str(tmp_path / "in.parquet"),
               str(tmp_path / "out.parquet")]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = pd.read_parquet(tmp_path / "out.parquet")

    model = vlalign.load_model(trained["out"], device="cpu")
    images = model.encode_image([items[0][1], path, items[2][1]]).numpy()
    texts = model.encode_text([items[0][2], items[1][2], "a red circle"]).numpy()
    np.testing.assert_allclose(np.stack(got["image_embedding"][:3]), images, atol=1e-6)
    assert got["image_embedding"][3] is None and got["text_embedding"][2] is None
    np.testing.assert_allclose(np.stack(got["text_embedding"][[0, 1, 3]]), texts, atol=1e-6)
    expected = model.similarity(images[:2], texts[:2]).diagonal().numpy()
    np.testing.assert_allclose(got["similarity"][:2], expected, atol=1e-6)
    assert got["similarity"][2:].isna().all()

    # The model carries its signature and an input example, so the UI documents how to call it.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    local = Path(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model", dst_path=str(tmp_path / "m")))
    meta = mlflow.models.Model.load(local / "MLmodel")
    assert [c["name"] for c in meta.signature.inputs.to_dict()] == ["image", "image_path", "text"]
    assert meta.saved_input_example_info is not None
    pyfunc = meta.flavors["python_function"]
    assert (local / pyfunc["artifacts"]["run"]["path"] / "model.safetensors").is_file()
    assert pyfunc["loader_module"] == "mlflow.pyfunc.loaders.code_model" and not list(local.rglob("*.pkl"))
