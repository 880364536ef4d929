"""Compute budgets in DataComp's convention: `samples_seen` fixes the optimiser steps whatever the pool's size."""

import math

import numpy as np
import pytest
import torch

from vlalign.align.optim import cosine_schedule
from vlalign.align.trainer import resolve_settings, train_alignment

# fp32 and no validation split: exact comparisons, every pair trained on.
BUDGET = {"head": "star", "target_dim": 16, "width_factor": 2, "batch_size": 64, "samples_seen": 1100, "lr": 1e-2,
          "precision": "fp32", "val_fraction": 0.0, "optimizer": "adamw"}


def pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n)
    image = rng.standard_normal((n, 16)).astype(np.float32)
    text = image @ rng.standard_normal((16, 12)).astype(np.float32) + 0.5 * rng.standard_normal((n, 12))
    return image, text.astype(np.float32)


class Killed(Exception):
    pass


def killer(at_step: int):
    def log_fn(step, metrics):
        if step == at_step:
            raise Killed(step)

    return log_fn


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ceil(1100 / 64) = 18 steps on either pool. 200 pairs: batches of 64, 64, 64 and 8, so 4 steps per epoch and
# 4 epochs and 2 steps (800 + 128 pairs). 500 pairs: 7 batches of 64 and one of 52, so 8 steps per epoch and
# 2 epochs and 2 steps (1000 + 128 pairs). The last epoch ends part-way and is recorded as such.
@pytest.mark.parametrize(("pool", "pairs_seen", "epoch_ends"), [
    (200, 928, [4, 8, 12, 16, 18]),
    (500, 1128, [8, 16, 18]),
])  # fmt: skip
def test_a_budget_takes_the_same_steps_on_pools_of_any_size(pool, pairs_seen, epoch_ends):
    result = train_alignment(*pairs(pool), BUDGET)
    steps = [h for h in result.history if "loss" in h]
    assert [h["step"] for h in steps] == list(range(1, 19)) and math.ceil(1100 / 64) == 18
    assert [h["step"] for h in result.history if "epoch" in h] == epoch_ends
    assert result.summary == {"steps": 18, "samples_seen": pairs_seen, "epochs_seen": pairs_seen / pool,
                              "kept_step": 18, "stopped_early": False, "keep": "last",
                              "keep_reason": "val_fraction is 0: no validation loss to select by"}  # fmt: skip
    # What train_summary.json holds: the numbers of the last row.
    final = result.history[-1]
    assert {k: final[k] for k in ("steps", "samples_seen", "epochs_seen", "kept_step")} == {
        "steps": 18, "samples_seen": pairs_seen, "epochs_seen": pairs_seen / pool, "kept_step": 18}
    # The warm-up and cosine span the budget's 18 steps, ending near 0 whatever the epochs.
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BUDGET["lr"])
    schedule = cosine_schedule(optimizer, 18, resolve_settings(BUDGET)["warmup_fraction"])
    expected = []
    for _ in range(18):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    np.testing.assert_allclose([h["lr"] for h in steps], expected, rtol=1e-12)


def test_epochs_are_unused_under_a_budget():
    image, text = pairs(200)
    a = train_alignment(image, text, {**BUDGET, "epochs": 1})
    b = train_alignment(image, text, {**BUDGET, "epochs": 40})
    assert same_weights(a.model, b.model)
    without_budget = train_alignment(image, text, {**BUDGET, "samples_seen": None, "epochs": 2})
    assert without_budget.summary["steps"] == 8 and without_budget.summary["epochs_seen"] == 2.0


def test_a_budget_below_one_batch_is_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"samples_seen \(63\) is below batch_size \(64\)"):
        train_alignment(*pairs(200), {**BUDGET, "samples_seen": 63})
    with pytest.raises(ValueError, match="samples_seen"):
        resolve_settings({**BUDGET, "samples_seen": 1})  # the schema's minimum
    assert resolve_settings({**BUDGET, "samples_seen": 64})["samples_seen"] == 64


# States at each epoch's end (4, 8, 12, 16) and at the run's (18): a kill in the last, partial epoch resumes
# from 16, one at its last step too; from the final state, the trained model comes back as it was.
@pytest.mark.parametrize("kill", [17, 18])
def test_a_budget_ending_part_way_through_an_epoch_resumes_to_the_same_weights(tmp_path, kill):
    image, text = pairs(200)
    uninterrupted = train_alignment(image, text, BUDGET)
    with pytest.raises(Killed):
        train_alignment(image, text, BUDGET, log_fn=killer(kill), state_dir=tmp_path)
    resumed = train_alignment(image, text, BUDGET, state_dir=tmp_path)
    assert resumed.resumed_from_step == 16
    assert same_weights(resumed.model, uninterrupted.model) and resumed.summary == uninterrupted.summary
    again = train_alignment(image, text, BUDGET, state_dir=tmp_path)
    assert again.resumed_from_step == 18 and same_weights(again.model, uninterrupted.model)
    assert again.history[-1] == resumed.history[-1]
