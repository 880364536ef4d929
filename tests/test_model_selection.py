"""Model selection: the weights of the lowest validation loss are kept (through a kill too), early stopping, and
the records of both in the run's outputs."""

import json

import matplotlib.axes
import numpy as np
import pytest
import torch
from train_fixtures import write_pair_stores

from vlalign.align.checkpoint import load_checkpoint
from vlalign.align.trainer import resolve_settings, train_alignment

# Captions barely tied to their images and a large learning rate: the validation loss falls, then rises as the
# heads memorise the training pairs (lowest at step 12 of 40), so the best weights are not the last ones.
# Evaluated every 2 steps: 20 evaluations.
SETTINGS = {"head": "star", "target_dim": 16, "width_factor": 2, "batch_size": 32, "samples_seen": 32 * 40,
            "lr": 3e-2, "precision": "fp32", "val_fraction": 0.25, "val_every_steps": 2, "optimizer": "adamw",
            "loss": "infonce", "warmup_fraction": 0.0}


@pytest.fixture(scope="module")
def pairs():
    rng = np.random.default_rng(0)
    image = rng.standard_normal((160, 16)).astype(np.float32)
    text = image @ rng.standard_normal((16, 12)) + 30.0 * rng.standard_normal((160, 12))
    return image, text.astype(np.float32)


@pytest.fixture(scope="module")
def full_run(pairs):
    return train_alignment(*pairs, SETTINGS)


class Killed(Exception):
    pass


def killer(at_step: int | None):
    def log_fn(step, metrics):
        if step == at_step:
            raise Killed(step)

    return log_fn


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def evaluations(history: list[dict]) -> dict[int, float]:
    return {h["step"]: h["val_loss"] for h in history if "val_loss" in h}


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "pairs_per_s"} for h in history]


def test_best_val_returns_the_weights_of_the_lowest_validation_loss(pairs, full_run, tmp_path):
    evals = evaluations(full_run.history)
    assert list(evals) == list(range(2, 41, 2))
    kept = full_run.summary["kept_step"]
    assert evals[kept] == min(evals.values()) == full_run.summary["best_val_loss"]
    assert kept < full_run.summary["steps"] == 40 and evals[40] > evals[kept]  # the loss rose after it
    # The same run keeping its last weights, a state saved every step and stopped right after the kept step: that
    # state holds the weights of the kept step.
    with pytest.raises(Killed):
        train_alignment(*pairs, {**SETTINGS, "keep": "last", "checkpoint_every": 1}, log_fn=killer(kept + 1),
                        state_dir=tmp_path)  # fmt: skip
    at_kept_step = load_checkpoint(tmp_path / f"step-{kept:09d}")[0].state_dict()
    assert same_weights(full_run.model.state_dict(), at_kept_step)
    last = train_alignment(*pairs, {**SETTINGS, "keep": "last"})
    assert last.summary["kept_step"] == 40 and last.summary["best_val_loss"] == full_run.summary["best_val_loss"]
    assert not same_weights(last.model.state_dict(), at_kept_step)


@pytest.mark.parametrize("keep", ["best_val", "last"])
def test_early_stopping_ends_the_run_after_patience_evaluations_without_improvement(pairs, full_run, keep):
    stopped = train_alignment(*pairs, {**SETTINGS, "early_stop_patience": 3, "keep": keep})
    evals = evaluations(stopped.history)
    best = full_run.summary["kept_step"]
    # The same evaluations as the full run's up to the third after the best one, then no more steps.
    assert list(evals) == [s for s in evaluations(full_run.history) if s <= best + 3 * 2]
    assert all(evals[s] == evaluations(full_run.history)[s] for s in evals)
    assert max(h["step"] for h in stopped.history) == best + 6
    summary = stopped.summary
    assert summary["stopped_early"] and summary["steps"] == best + 6 and summary["best_val_loss"] == evals[best]
    assert summary["kept_step"] == (best if keep == "best_val" else best + 6)
    assert stopped.history[-1]["stopped_early"] and "epoch" in stopped.history[-1]  # the part-way epoch's row
    if keep == "best_val":
        assert same_weights(stopped.model.state_dict(), full_run.model.state_dict())


# A state every 5 steps. Kills at 9, then at 23: the second run resumes from 5, the last from 20, whose kept weights
# (of step 12) are not the model's; with patience 3 the run stops at 18 and a kill at 17 resumes from 15.
@pytest.mark.parametrize(("patience", "kills", "resumes"), [(None, [9, 23], [5, 20]), (3, [9, 17], [5, 15])])
def test_a_killed_and_resumed_run_keeps_the_same_weights(pairs, full_run, tmp_path, patience, kills, resumes):
    settings = {**SETTINGS, "checkpoint_every": 5, "early_stop_patience": patience}
    uninterrupted = full_run if patience is None else train_alignment(*pairs, settings)
    for kill, newest in zip(kills, resumes, strict=True):
        with pytest.raises(Killed):
            train_alignment(*pairs, settings, log_fn=killer(kill), state_dir=tmp_path)
        assert [p.name for p in tmp_path.iterdir()] == [f"step-{newest:09d}"]
    resumed = train_alignment(*pairs, settings, state_dir=tmp_path)
    assert resumed.resumed_from_step == resumes[-1]
    assert same_weights(resumed.model.state_dict(), uninterrupted.model.state_dict())
    assert without_timing(resumed.history) == without_timing(uninterrupted.history)
    assert resumed.summary == uninterrupted.summary


def test_without_a_validation_split_best_val_falls_back_to_last(pairs, capsys):
    settings = {**SETTINGS, "val_fraction": 0.0}
    result = train_alignment(*pairs, settings)
    assert "keeping the last weights: val_fraction is 0" in capsys.readouterr().out
    assert result.summary["keep"] == "last" and result.summary["kept_step"] == 40
    assert result.summary["keep_reason"] == "val_fraction is 0: no validation loss to select by"
    assert "best_val_loss" not in result.summary and not any("val_loss" in h for h in result.history)
    last = train_alignment(*pairs, {**settings, "keep": "last"})
    assert same_weights(result.model.state_dict(), last.model.state_dict())
    with pytest.raises(ValueError, match="early_stop_patience needs a validation loss, and val_fraction is 0"):
        resolve_settings({**settings, "early_stop_patience": 2})


def test_validation_is_per_epoch_by_default_and_at_the_last_step(pairs):
    # 120 training pairs: 4 steps per epoch; 30 steps end part-way through the eighth epoch.
    result = train_alignment(*pairs, {**SETTINGS, "val_every_steps": None, "samples_seen": 32 * 30})
    assert list(evaluations(result.history)) == [4, 8, 12, 16, 20, 24, 28, 30]


def test_the_run_folder_records_the_budget_and_the_kept_step(tmp_path, monkeypatch):
    from vlalign.align.curves import plot_training_curves
    from vlalign.align.fit import fit_pool, save_fit
    from vlalign.model import export_model

    inputs = write_pair_stores(tmp_path, 200, 12, 8)
    train = {"head": "star", "target_dim": 16, "width_factor": 2, "batch_size": 64, "samples_seen": 640,
             "lr": 1e-2, "val_fraction": 0.1, "val_every_steps": 3}  # fmt: skip
    settings = {"device": "cpu", "train": train, "convert": {"max_resolution": 64},
                "encoders": {"image": {"alias": "img", "spec": "test"}, "text": {"alias": "txt", "spec": "test"}}}
    decisions = str(inputs / "decisions.parquet")
    fit = fit_pool(settings, str(inputs / "img"), str(inputs / "txt"), decisions)
    out = tmp_path / "out"
    save_fit(fit, out, settings, decisions)
    info = json.loads((out / "model.json").read_text())
    summary = fit.result.summary
    # 180 training pairs: batches of 64, 64 and 52; 10 steps are 3 epochs and one batch.
    assert info["training"] == summary and summary["steps"] == 10 and summary["samples_seen"] == 3 * 180 + 64
    assert summary["keep"] == "best_val" and summary["kept_step"] in (3, 6, 9, 10)
    # The train stage writes the last row's numbers as train_summary.json.
    final = {k: v for k, v in fit.result.history[-1].items() if isinstance(v, (int, float))}
    assert {k: final[k] for k in ("steps", "samples_seen", "epochs_seen", "kept_step", "best_val_loss")} == {
        k: summary[k] for k in ("steps", "samples_seen", "epochs_seen", "kept_step", "best_val_loss")}
    assert final["stopped_early"] is False
    export_model(out, "basic", settings, inputs / "img", inputs / "txt", final)
    card = (out / "README.md").read_text()
    assert f"10 optimiser steps (604 pairs seen, {604 / 180:.2f} epochs); kept the weights of step " \
           f"{summary['kept_step']}, the lowest validation loss" in card
    lines = []
    real_axvline = matplotlib.axes.Axes.axvline
    monkeypatch.setattr(matplotlib.axes.Axes, "axvline",
                        lambda self, x, *a, **kw: lines.append(x) or real_axvline(self, x, *a, **kw))
    plot_training_curves(fit.result.history, out / "curves.png")
    assert (out / "curves.png").stat().st_size > 0 and lines == [summary["kept_step"]] * 3
