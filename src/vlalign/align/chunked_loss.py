"""SigLIP and InfoNCE over a B×B block without ever holding the B×B logits.

The logits are computed a column chunk (B × chunk) at a time in the forward pass, and computed
again chunk by chunk in the backward pass, which writes the gradients by hand. Peak memory is a
few B × chunk matrices instead of several B × B ones: at B = 32768 in fp32 one B × B matrix is
4 GiB, a 32768 × 4096 chunk 512 MiB.

Precision. Products, sums and the returned loss are float32, or the inputs' dtype where that is
wider (float64): bf16/fp16 embeddings are cast up before the block product, so their loss comes
back in float32. InfoNCE reduces each row (and column) with an online log-sum-exp over its
*negatives* only (a running maximum and a sum rescaled to it) and takes the positive logit from
the same block, so a pair's term is log(1 + Σ exp(negative − positive)) = log1p(exp(excess)):
an easy pair whose loss is ≪ 1 keeps its relative precision, where subtracting the positive from
an absolute log-sum-exp near the logit scale (50–100) would leave only its rounding error. The
positives' gradients, 1 − softmax, are likewise sigmoid(excess) rather than a difference from 1.
Value and gradients agree with the plain formulas of `vlalign.align.losses` to rounding
(tests/test_chunked_loss.py); against a float64 reference their error is at most the plain
formulas' error in the same input dtype, within a factor of 2 (tests/test_chunked_loss_precision.py).
"""

from __future__ import annotations

import functools

import torch


def _chunks(n: int, chunk: int, device: torch.device):
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        # Positives of this chunk: pair i sits at row i, column i - start.
        rows = torch.arange(start, stop, device=device)
        yield start, stop, rows, rows - start


def _accumulation_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float32, or the widest input dtype above it: bf16/fp16 logits and sums lose too much."""
    return functools.reduce(torch.promote_types, (t.dtype for t in tensors), torch.float32)


def _log1p_exp(x: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(x)) to full relative precision for every x, -inf included (F.softplus returns x above 20)."""
    return torch.logaddexp(x, x.new_zeros(()))


def _empty_logsumexp(n: int, like: torch.Tensor):
    """(running max, running sum) of n log-sum-exps over nothing yet. The max starts at the lowest
    finite value, not -inf, so that a row with no finite logit gives exp(-inf - max) = 0, not NaN."""
    return like.new_full((n,), torch.finfo(like.dtype).min), like.new_zeros(n)


def _accumulate_logsumexp(running_max, running_sum, logits, dim: int):
    """One block of an online log-sum-exp along `dim`: the max is updated, the sum so far rescaled to
    it, and the block's exp(logits - max) added, so no exp overflows whatever the logit scale."""
    new_max = torch.maximum(running_max, logits.amax(dim))
    rescaled = running_sum * torch.exp(running_max - new_max)
    return new_max, rescaled + (logits - new_max.unsqueeze(dim)).exp_().sum(dim)


def _excess(running_max, running_sum, positive):
    """log Σ_negatives exp(logit - positive). The difference of two logits is taken before log(sum) is
    added: max + log(sum) alone would round to the ulp of the logit scale."""
    return (running_max - positive) + torch.log(running_sum)


def _softmax(logits, positive, loss):
    """exp(logit - logsumexp) with logsumexp = positive + loss, the difference of two logits taken first:
    the absolute logsumexp, rounded to the ulp of the logit scale, would scale every softmax of a row by
    the same error, and the gradient of the scale (Σ softmax · logit) cancels down to that error."""
    return (logits - positive).sub_(loss).exp_()


def _as_grad_of(grad: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
    """A gradient accumulated in float32 (or wider), in the dtype and shape of the tensor it belongs to."""
    return grad.to(tensor.dtype).reshape(tensor.shape)


class _ChunkedSiglip(torch.autograd.Function):
    """-mean over all pairs of logsigmoid(label · (scale · img @ txt.T + bias)): labels 2I − 1, or all
    −1 when `positives` is False (a block of hard-negative captions)."""

    @staticmethod
    def forward(ctx, img, txt, logit_scale, logit_bias, chunk: int, positives: bool):
        dtype = _accumulation_dtype(img, txt)
        scale, bias = logit_scale.to(dtype).exp(), logit_bias.to(dtype)
        img_up = img.to(dtype)
        total = img_up.new_zeros(())
        for start, stop, rows, cols in _chunks(len(txt), chunk, img.device):
            logits = scale * (img_up @ txt[start:stop].to(dtype).T) + bias
            if positives:
                # -logsigmoid(label · z) = softplus(-label · z): the positives' logits change sign.
                logits[rows, cols] = -logits[rows, cols]
            total = total + _log1p_exp(logits).sum()
        ctx.save_for_backward(img, txt, logit_scale, logit_bias)
        ctx.chunk, ctx.positives = chunk, positives
        return total / (len(img) * len(txt))

    @staticmethod
    def backward(ctx, grad_out):
        img, txt, logit_scale, logit_bias = ctx.saved_tensors
        dtype = grad_out.dtype
        scale, bias = logit_scale.to(dtype).exp(), logit_bias.to(dtype)
        img_up = img.to(dtype)
        norm = grad_out / (len(img) * len(txt))
        grad_img = torch.zeros_like(img_up)
        grad_txt = torch.empty_like(txt)
        grad_log_scale = img_up.new_zeros(())
        grad_bias = img_up.new_zeros(())
        for start, stop, rows, cols in _chunks(len(txt), ctx.chunk, img.device):
            captions = txt[start:stop].to(dtype)
            cosine = img_up @ captions.T
            # d softplus(z)/dz = sigmoid(z) for a negative; d softplus(-z)/dz = -sigmoid(-z) for a
            # positive, which keeps the precision that sigmoid(z) - 1 loses for an easy pair.
            grad = (scale * cosine + bias).sigmoid_()
            if ctx.positives:
                grad[rows, cols] = -torch.sigmoid(-(scale * cosine[rows, cols] + bias))
            grad *= norm
            grad_img += scale * (grad @ captions)
            grad_txt[start:stop] = scale * (grad.T @ img_up)
            grad_log_scale += scale * (grad * cosine).sum()
            grad_bias += grad.sum()
        return (_as_grad_of(grad_img, img), grad_txt, _as_grad_of(grad_log_scale, logit_scale),
                _as_grad_of(grad_bias, logit_bias), None, None)  # fmt: skip


class _ChunkedInfoNCE(torch.autograd.Function):
    """0.5 · (cross-entropy image→text + text→image) of scale · img @ txt.T, positives on the diagonal.

    `neg` (M × D, M may be 0) are hard-negative captions: extra columns of every image→text row.
    A chunk holds whole columns, so the text→image log-sum-exps are finished within it; every
    image→text row gets a slice per chunk and is accumulated online across them.
    """

    @staticmethod
    def forward(ctx, img, txt, neg, logit_scale, chunk: int):
        dtype = _accumulation_dtype(img, txt, neg)
        scale = logit_scale.to(dtype).exp()
        img_up = img.to(dtype)
        n = len(img)
        row_max, row_sum = _empty_logsumexp(n, img_up)
        positive = img_up.new_empty(n)
        col_excess = img_up.new_empty(n)
        for start, stop, rows, cols in _chunks(len(txt), chunk, img.device):
            logits = scale * (img_up @ txt[start:stop].to(dtype).T)
            positive[start:stop] = logits[rows, cols]
            logits[rows, cols] = float("-inf")  # from here on the block holds the negatives only
            col_max, col_sum = _accumulate_logsumexp(*_empty_logsumexp(stop - start, img_up), logits, 0)
            col_excess[start:stop] = _excess(col_max, col_sum, positive[start:stop])
            row_max, row_sum = _accumulate_logsumexp(row_max, row_sum, logits, 1)
        for start, stop, _, _ in _chunks(len(neg), chunk, img.device):
            logits = scale * (img_up @ neg[start:stop].to(dtype).T)
            row_max, row_sum = _accumulate_logsumexp(row_max, row_sum, logits, 1)
        row_excess = _excess(row_max, row_sum, positive)
        # -log softmax of the positive = log(1 + Σ_negatives exp(logit - positive)).
        row_loss, col_loss = _log1p_exp(row_excess), _log1p_exp(col_excess)
        # At a positive the gradient is softmax - 1 per direction, and 1 - softmax = sigmoid(excess).
        positive_grad = -(torch.sigmoid(row_excess) + torch.sigmoid(col_excess))
        ctx.save_for_backward(img, txt, neg, logit_scale, positive, row_loss, col_loss, positive_grad)
        ctx.chunk = chunk
        return 0.5 * (row_loss.sum() + col_loss.sum()) / n

    @staticmethod
    def backward(ctx, grad_out):
        img, txt, neg, logit_scale, positive, row_loss, col_loss, positive_grad = ctx.saved_tensors
        dtype = grad_out.dtype
        scale = logit_scale.to(dtype).exp()
        img_up = img.to(dtype)
        norm = 0.5 * grad_out / len(img)
        grad_img = torch.zeros_like(img_up)
        grad_txt = torch.empty_like(txt)
        grad_neg = torch.empty_like(neg)
        grad_log_scale = img_up.new_zeros(())

        def accumulate(captions, grad, cosine):
            """Adds a block's share to the image and scale gradients; returns the captions' gradient."""
            nonlocal grad_log_scale
            grad *= norm * scale  # d logits = scale · d cosine, and d logits / d log_scale = scale · cosine
            grad_img.add_(grad @ captions)
            grad_log_scale = grad_log_scale + (grad * cosine).sum()
            return grad.T @ img_up

        for start, stop, rows, cols in _chunks(len(txt), ctx.chunk, img.device):
            captions = txt[start:stop].to(dtype)
            cosine = img_up @ captions.T
            logits = scale * cosine
            # Softmax over each row plus softmax over each column; at a positive, each minus 1.
            grad = _softmax(logits, positive[:, None], row_loss[:, None])
            grad += _softmax(logits, positive[None, start:stop], col_loss[None, start:stop])
            grad[rows, cols] = positive_grad[start:stop]
            grad_txt[start:stop] = accumulate(captions, grad, cosine)
        for start, stop, _, _ in _chunks(len(neg), ctx.chunk, img.device):
            captions = neg[start:stop].to(dtype)
            cosine = img_up @ captions.T
            # A negative caption only takes part in the image→text softmax.
            grad = _softmax(scale * cosine, positive[:, None], row_loss[:, None])
            grad_neg[start:stop] = accumulate(captions, grad, cosine)
        return _as_grad_of(grad_img, img), grad_txt, grad_neg, _as_grad_of(grad_log_scale, logit_scale), None


def chunked_siglip_block(img, txt, logit_scale, logit_bias, chunk: int, positives: bool = True) -> torch.Tensor:
    return _ChunkedSiglip.apply(img, txt, logit_scale, logit_bias, chunk, positives)


def chunked_infonce_block(img, txt, logit_scale, chunk: int, negatives: torch.Tensor | None = None) -> torch.Tensor:
    if negatives is None:
        negatives = img.new_zeros((0, img.shape[1]))
    return _ChunkedInfoNCE.apply(img, txt, negatives, logit_scale, chunk)
