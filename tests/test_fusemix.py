"""FuseMix: latent mixup of the frozen encoders' embeddings, one λ and one permutation shared by every modality."""

import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from slurm_cluster import free_port

from vlalign.align import trainer
from vlalign.align.trainer import fusemix, fusemix_draw, train_alignment

FAST = {"head": "star", "target_dim": 16, "width_factor": 2, "batch_size": 32, "epochs": 3, "lr": 1e-2,
        "precision": "fp32", "val_fraction": 0.0}


def pairs(n: int = 128):
    rng = np.random.default_rng(0)
    image = rng.standard_normal((n, 16)).astype(np.float32)
    text = image @ rng.standard_normal((16, 12)) + 0.5 * rng.standard_normal((n, 12))
    return image, text.astype(np.float32)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_draw_is_a_coefficient_and_a_permutation_fixed_by_seed_and_step():
    mixing, partner = fusemix_draw(1.0, 50, seed=3, step=7)
    assert 0.0 <= mixing <= 1.0 and sorted(partner) == list(range(50))
    again = fusemix_draw(1.0, 50, seed=3, step=7)
    assert again[0] == mixing and np.array_equal(again[1], partner)
    for other in (fusemix_draw(1.0, 50, seed=3, step=8), fusemix_draw(1.0, 50, seed=4, step=7)):
        assert other[0] != mixing and not np.array_equal(other[1], partner)
    # Beta(α, α) with small α puts λ near 0 or 1, with large α near 1/2.
    draws = {alpha: [fusemix_draw(alpha, 2, 0, s)[0] for s in range(400)] for alpha in (0.1, 20.0)}
    assert np.mean(np.minimum(draws[0.1], 1 - np.asarray(draws[0.1]))) < 0.15
    assert abs(np.mean(draws[20.0]) - 0.5) < 0.02 and np.std(draws[20.0]) < 0.1


def test_every_modality_is_mixed_with_the_same_coefficient_and_partners():
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.standard_normal((8, 5)))
    mapping = torch.from_numpy(rng.standard_normal((5, 3)))
    text, extra = image @ mapping, 2.0 * image[:, :4]
    mixing, partner = fusemix_draw(1.0, 8, seed=0, step=1)
    order = torch.from_numpy(partner)
    mixed_image, mixed_text, mixed_extra = fusemix([image, text, extra], [image[order], text[order], extra[order]],
                                                   mixing)  # fmt: skip
    torch.testing.assert_close(mixed_image, mixing * image + (1 - mixing) * image[order])
    # A linear relation between the modalities survives only a mix with one λ and one π for both.
    torch.testing.assert_close(mixed_text, mixed_image @ mapping)
    torch.testing.assert_close(mixed_extra, 2.0 * mixed_image[:, :4])


def test_the_heads_see_mixed_pairs_in_training_and_plain_pairs_in_validation(monkeypatch):
    """One-hot embeddings show each row's mix: image row j is λ·e_a + (1−λ)·e_b, its caption must be the same mix of
    the captions of a and b (the one-hots of a fixed relabelling σ), with one λ per batch."""
    n, relabel = 64, np.random.default_rng(2).permutation(64)
    image, text = np.eye(n, dtype=np.float32), np.eye(n, dtype=np.float32)[relabel]
    seen = []
    real_loss = trainer._loss

    def spy(model, loss_fn, img, txt, *rest):
        seen.append((torch.is_grad_enabled(), img.detach().clone(), txt.detach().clone()))
        return real_loss(model, loss_fn, img, txt, *rest)

    monkeypatch.setattr(trainer, "_loss", spy)
    train_alignment(image, text, {**FAST, "epochs": 1, "val_fraction": 0.25, "fusemix_alpha": 1.0, "keep": "last"})
    training = [(img, txt) for grad, img, txt in seen if grad]
    validation = [img for grad, img, _ in seen if not grad]
    assert len(training) == 2 and validation
    for img in validation:  # one-hots, as stored
        assert torch.equal(img.max(dim=1).values, torch.ones(len(img)))
    coefficients = set()
    for img, txt in training:
        for image_row, text_row in zip(img, txt, strict=True):
            weights = {int(i): float(image_row[i]) for i in torch.nonzero(image_row)}
            assert {int(np.flatnonzero(relabel == i)[0]): float(w) for i, w in enumerate(text_row) if w} == \
                pytest.approx(weights)  # fmt: skip
            assert sum(weights.values()) == pytest.approx(1.0)
            coefficients.add(round(max(weights.values()), 6))
        mixed = {round(max(float(w) for w in row if w), 6) for row in img}
        assert len(mixed - {1.0}) == 1  # one λ per batch (a pair mixed with itself stays whole)
    assert len(coefficients - {1.0}) == 2  # a fresh λ for each of the two batches


def test_alpha_zero_never_mixes_and_mixing_is_reproducible_from_the_seed(monkeypatch):
    image, text = pairs()
    plain = train_alignment(image, text, FAST)
    mixed = train_alignment(image, text, {**FAST, "fusemix_alpha": 1.0})
    assert not same_weights(plain.model, mixed.model)
    assert same_weights(mixed.model, train_alignment(image, text, {**FAST, "fusemix_alpha": 1.0}).model)
    assert not same_weights(mixed.model, train_alignment(image, text, {**FAST, "fusemix_alpha": 1.0, "seed": 1}).model)

    def refuse(*args, **kwargs):
        raise AssertionError("mixed with fusemix_alpha 0")

    monkeypatch.setattr(trainer, "fusemix_draw", refuse)
    monkeypatch.setattr(trainer, "fusemix", refuse)
    off = train_alignment(image, text, {**FAST, "fusemix_alpha": 0})
    assert same_weights(off.model, plain.model)
    assert [h["loss"] for h in off.history if "loss" in h] == [h["loss"] for h in plain.history if "loss" in h]


class Killed(Exception):
    pass


def test_a_killed_and_resumed_mixing_run_reaches_the_same_weights(tmp_path):
    image, text = pairs()
    settings = {**FAST, "fusemix_alpha": 0.4, "checkpoint_every": 5}
    uninterrupted = train_alignment(image, text, settings)

    def kill_at_7(step, metrics):
        if step == 7:
            raise Killed(step)

    with pytest.raises(Killed):
        train_alignment(image, text, settings, log_fn=kill_at_7, state_dir=tmp_path)
    resumed = train_alignment(image, text, settings, state_dir=tmp_path)
    assert resumed.resumed_from_step == 5 and same_weights(resumed.model, uninterrupted.model)


def _rank(rank: int, world: int, port: int, settings: dict, out: str) -> None:
    # The environment torchrun gives each process.
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    image, text = pairs()
    torch.save(train_alignment(image, text, settings, extra_text_emb=[text[::-1].copy()]).model.state_dict(),
               f"{out}.{rank}")  # fmt: skip
    torch.distributed.destroy_process_group()


def test_two_data_parallel_ranks_mix_as_one_process_does(tmp_path):
    """A rank's partners may lie in the other rank's share of the batch: it reads them, and the result is the one
    process's (2 gloo ranks on the CPU)."""
    image, text = pairs()
    settings = {**FAST, "epochs": 1, "fusemix_alpha": 1.0, "multi_positive": True}
    torch.set_num_threads(1)
    alone = train_alignment(image, text, settings, extra_text_emb=[text[::-1].copy()]).model.state_dict()
    mp.spawn(_rank, args=(2, free_port(), settings, str(tmp_path / "out")), nprocs=2, join=True)
    for rank in range(2):
        state = torch.load(f"{tmp_path / 'out'}.{rank}", weights_only=True)
        assert all(torch.allclose(state[k], alone[k], rtol=1e-4, atol=1e-5) for k in alone)
