"""SigLIP and InfoNCE losses against hand-computed 2×2 examples; multi-positive blocks."""

import math

import pytest
import torch

from vlalign.align.losses import LOSSES, infonce_loss, siglip_loss

IMG = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
TXT = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # cosines with IMG: [[1, 0.6], [0, 0.8]]
LOG_SCALE = torch.tensor(math.log(2.0))
BIAS = torch.tensor(-1.0)


def softplus(x):
    return math.log1p(math.exp(x))


def test_siglip_matches_hand_computed_mean_over_pairs():
    # logits = 2·cos − 1 = [[1, 0.2], [−1, 0.6]], labels [[1, −1], [−1, 1]];
    # −logsigmoid(y·z) = softplus(−y·z); the mean over all 4 pairs (SAIL / DESIGN.md).
    expected = (softplus(-1.0) + softplus(0.2) + softplus(-1.0) + softplus(-0.6)) / 4
    assert siglip_loss(IMG, TXT, LOG_SCALE, BIAS).item() == pytest.approx(expected, rel=1e-6)


def test_infonce_matches_hand_computed_symmetric_cross_entropy():
    # logits = 2·cos = [[2, 1.2], [0, 1.6]]
    rows = [-math.log(math.exp(2) / (math.exp(2) + math.exp(1.2))),
            -math.log(math.exp(1.6) / (math.exp(0) + math.exp(1.6)))]
    cols = [-math.log(math.exp(2) / (math.exp(2) + math.exp(0))),
            -math.log(math.exp(1.6) / (math.exp(1.2) + math.exp(1.6)))]
    expected = 0.5 * (sum(rows) / 2 + sum(cols) / 2)
    assert infonce_loss(IMG, TXT, LOG_SCALE).item() == pytest.approx(expected, rel=1e-6)


def test_infonce_ignores_the_bias():
    assert infonce_loss(IMG, TXT, LOG_SCALE, BIAS).item() == infonce_loss(IMG, TXT, LOG_SCALE).item()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_multi_positive_averages_the_blocks(name):
    torch.manual_seed(0)
    img, txt, txt2 = (torch.nn.functional.normalize(torch.randn(5, 3), dim=-1) for _ in range(3))
    loss = LOSSES[name]
    combined = loss(img, txt, LOG_SCALE, BIAS, extra_txt=[txt2])
    separate = (loss(img, txt, LOG_SCALE, BIAS) + loss(img, txt2, LOG_SCALE, BIAS)) / 2
    assert combined.item() == pytest.approx(separate.item(), rel=1e-6)
    assert loss(img, txt, LOG_SCALE, BIAS, extra_txt=[txt]).item() == pytest.approx(
        loss(img, txt, LOG_SCALE, BIAS).item(), rel=1e-6)


def test_siglip_gradients_reach_scale_bias_and_embeddings():
    img = IMG.clone().requires_grad_()
    scale = LOG_SCALE.clone().requires_grad_()
    bias = BIAS.clone().requires_grad_()
    siglip_loss(img, TXT, scale, bias).backward()
    assert scale.grad.item() != 0 and bias.grad.item() != 0
    assert torch.count_nonzero(img.grad) > 0


def test_matching_pairs_score_lower_than_shuffled():
    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    for loss in LOSSES.values():
        assert loss(z, z, LOG_SCALE, BIAS) < loss(z, z.roll(1, 0), LOG_SCALE, BIAS)
