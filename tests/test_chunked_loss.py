"""The chunked losses equal the plain formulas in value and in every gradient, ties and all."""

import math

import pytest
import torch
import torch.nn.functional as F

from vlalign.align.losses import LOSSES


def _inputs(n: int, dim: int, seed: int, extra: int = 0):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1)
    txt = F.normalize(img + 0.7 * torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1)
    extras = [F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1) for _ in range(extra)]
    log_scale = torch.tensor(math.log(20.0), dtype=torch.float64)
    bias = torch.tensor(-10.0, dtype=torch.float64)
    return [t.requires_grad_() for t in (img, txt, log_scale, bias, *extras)]


def _value_and_grads(loss_name: str, tensors, chunk_size, negatives=None):
    img, txt, log_scale, bias, *extras = tensors
    for t in [*tensors, *([negatives] if negatives is not None else [])]:
        t.grad = None
    loss = LOSSES[loss_name](img, txt, log_scale, bias, extra_txt=extras, chunk_size=chunk_size, negatives=negatives)
    loss.backward()
    grads = [t.grad.clone() if t.grad is not None else torch.zeros_like(t) for t in tensors]
    return loss.detach(), grads


@pytest.mark.parametrize("loss_name", ["siglip", "infonce"])
@pytest.mark.parametrize("n, chunk, extra", [(37, 8, 0), (37, 37, 0), (64, 5, 2), (16, 1, 1)])
def test_chunked_equals_plain_in_value_and_gradient(loss_name, n, chunk, extra):
    tensors = _inputs(n, 12, seed=n + chunk, extra=extra)
    plain, plain_grads = _value_and_grads(loss_name, tensors, chunk_size=None)
    chunked, chunked_grads = _value_and_grads(loss_name, tensors, chunk_size=chunk)
    torch.testing.assert_close(chunked, plain, rtol=1e-10, atol=1e-12)
    for name, a, b in zip(["img", "txt", "log_scale", "bias", *["extra"] * extra], chunked_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=f"gradient of {name}")


def test_chunked_handles_ties_and_float32():
    # Identical rows: every pair ties; the positives must still be the diagonal, not the argmax.
    img = F.normalize(torch.ones(6, 4), dim=1).requires_grad_()
    txt = F.normalize(torch.ones(6, 4), dim=1).requires_grad_()
    log_scale, bias = torch.tensor(math.log(10.0)), torch.tensor(-5.0)
    for loss_name in ("siglip", "infonce"):
        plain = LOSSES[loss_name](img, txt, log_scale, bias)
        chunked = LOSSES[loss_name](img, txt, log_scale, bias, chunk_size=4)
        torch.testing.assert_close(chunked, plain)
        (g_plain,) = torch.autograd.grad(plain, img)
        (g_chunked,) = torch.autograd.grad(chunked, img)
        torch.testing.assert_close(g_chunked, g_plain)


def test_chunked_gradcheck():
    img, txt, log_scale, bias = _inputs(9, 3, seed=1)
    for loss_name in ("siglip", "infonce"):
        assert torch.autograd.gradcheck(
            lambda a, b, s, c: LOSSES[loss_name](a, b, s, c, chunk_size=4), (img, txt, log_scale, bias))


@pytest.mark.parametrize("loss_name", ["siglip", "infonce"])
@pytest.mark.parametrize("negatives", [37, 11])
def test_hard_negatives_chunked_equal_plain(loss_name, negatives):
    tensors = _inputs(37, 12, seed=3, extra=1)
    g = torch.Generator().manual_seed(9)
    neg = F.normalize(torch.randn(negatives, 12, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    plain, plain_grads = _value_and_grads(loss_name, tensors, None, neg)
    plain_neg = neg.grad.clone()
    chunked, chunked_grads = _value_and_grads(loss_name, tensors, 8, neg)
    torch.testing.assert_close(chunked, plain, rtol=1e-10, atol=1e-12)
    for a, b in zip(chunked_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(neg.grad, plain_neg, rtol=1e-9, atol=1e-12)


def test_hard_negatives_match_hand_computation_and_raise_the_loss():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    txt = img.clone()
    neg = torch.tensor([[0.6, 0.8]], dtype=torch.float64)  # cosines with img: 0.6, 0.8
    log_scale, bias = torch.tensor(math.log(2.0), dtype=torch.float64), torch.tensor(-1.0, dtype=torch.float64)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    # SigLIP: the positive block (logits 2·I − 1) and a block where both pairs are negatives.
    positive_block = (2 * sp(-1.0) + 2 * sp(-1.0)) / 4
    negative_block = (sp(2 * 0.6 - 1) + sp(2 * 0.8 - 1)) / 2
    got = LOSSES["siglip"](img, txt, log_scale, bias, negatives=neg)
    assert got.item() == pytest.approx((positive_block + negative_block) / 2, rel=1e-12)
    # InfoNCE: image→text rows gain the negative column; text→image columns do not.
    rows = [math.log(math.exp(2) + 1 + math.exp(1.2)) - 2, math.log(1 + math.exp(2) + math.exp(1.6)) - 2]
    cols = [math.log(math.exp(2) + 1) - 2] * 2
    got = LOSSES["infonce"](img, txt, log_scale, negatives=neg)
    assert got.item() == pytest.approx(0.5 * (sum(rows) / 2 + sum(cols) / 2), rel=1e-12)
    assert got > LOSSES["infonce"](img, txt, log_scale)
