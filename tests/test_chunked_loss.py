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


def _value_and_grads(loss_name: str, tensors, chunk_size):
    img, txt, log_scale, bias, *extras = tensors
    for t in tensors:
        t.grad = None
    loss = LOSSES[loss_name](img, txt, log_scale, bias, extra_txt=extras, chunk_size=chunk_size)
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
