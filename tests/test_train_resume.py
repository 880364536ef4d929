"""`vlalign train` keeps its training state beside the output, resumes after a kill, then removes it."""

import contextlib
from argparse import Namespace

import pandas as pd
import pytest
import torch
from train_fixtures import write_pair_stores

from vlalign.align import train_stage
from vlalign.align.checkpoint import load_checkpoint
from vlalign.tracking import stage_run

SETTINGS = {
    "experiment": "test", "tracking_uri": None, "device": "cpu",
    "encoders": {"image": {"alias": "img", "spec": "test"}, "text": {"alias": "txt", "spec": "test"}},
    "train": {"head": "star", "target_dim": 16, "width_factor": 2, "batch_size": 64, "epochs": 3, "lr": 1e-2,
              "val_fraction": 0.1, "checkpoint_every": 2},
}  # fmt: skip


class Killed(Exception):
    pass


@pytest.fixture
def inputs(tmp_path):
    return write_pair_stores(tmp_path, 200, 12, 8)


def _train(inputs, monkeypatch, out, kill_at=None) -> list:
    """Run the train stage, tracked in a real MLflow store; it raises when the step `kill_at` is logged, as a kill
    there would. The (step, metrics) logged, in order."""
    logged = []

    @contextlib.contextmanager
    def track(rule, settings, **wildcards):
        with stage_run(rule, settings, experiment="resume", tracking_uri=f"sqlite:///{inputs / 'mlflow.db'}",
                       wildcards=wildcards) as run:  # fmt: skip
            log_metrics = run.log_metrics

            def log(metrics, step=None, **options):
                if step is not None and step == kill_at:
                    raise Killed(step)
                logged.append((step, metrics))
                log_metrics(metrics, step=step, **options)

            run.log_metrics = log
            yield run

    monkeypatch.setattr(train_stage, "track", track)
    args = Namespace(image_embeddings=str(inputs / "img"), text_embeddings=str(inputs / "txt"),
                     pool_decisions=str(inputs / "decisions.parquet"), out=str(out), run="basic",
                     negative_embeddings=None, extra_text_embeddings=[])
    train_stage.STAGE.run(SETTINGS, args)
    return logged


def test_train_resumes_after_a_kill_and_removes_its_state(inputs, monkeypatch, capsys):
    _train(inputs, monkeypatch, inputs / "train" / "reference")
    out, state = inputs / "train" / "basic", inputs / "train" / ".basic.state"
    with pytest.raises(Killed):
        _train(inputs, monkeypatch, out, kill_at=5)  # 180 pairs: 3 steps per epoch, states every 2
    assert not out.exists() and [p.name for p in state.iterdir()] == ["step-000000004"]
    logged = _train(inputs, monkeypatch, out)
    assert "resuming from step 4/9" in capsys.readouterr().out
    assert (None, {"resumed_from_step": 4}) in logged
    assert min(step for step, _ in logged if step is not None) == 5
    assert not state.exists()
    reference = inputs / "train" / "reference"
    a, b = load_checkpoint(out)[0].state_dict(), load_checkpoint(reference)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The curves hold the steps from before the kill too.
    curves, expected = (pd.read_csv(f / "curves.csv").drop(columns="pairs_per_s") for f in (out, reference))
    pd.testing.assert_frame_equal(curves, expected)
