"""SigLIP and InfoNCE over a B×B block without ever holding the B×B logits.

The logits are computed a column chunk (B × chunk) at a time in the forward pass, and computed
again chunk by chunk in the backward pass, which writes the gradients by hand. Peak memory is a
few B × chunk matrices instead of several B × B ones: at B = 32768 in fp32 one B × B matrix is
4 GiB, a 32768 × 4096 chunk 512 MiB. The values and gradients equal the plain formulas in
`vlalign.align.losses` up to floating-point summation order (tests/test_chunked_loss.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _chunks(n: int, chunk: int, device: torch.device):
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        # Positives of this chunk: pair i sits at row i, column i - start.
        rows = torch.arange(start, stop, device=device)
        yield start, stop, rows, rows - start


class _ChunkedSiglip(torch.autograd.Function):
    """-mean over all pairs of logsigmoid(label · (scale · img @ txt.T + bias)): labels 2I − 1, or all
    −1 when `positives` is False (a block of hard-negative captions)."""

    @staticmethod
    def forward(ctx, img, txt, logit_scale, logit_bias, chunk: int, positives: bool):
        scale = logit_scale.exp()
        total = img.new_zeros(())
        for start, stop, rows, cols in _chunks(len(txt), chunk, img.device):
            logits = scale * (img @ txt[start:stop].T) + logit_bias
            # Every pair as a negative (softplus(z) = -logsigmoid(-z)), then the positives corrected.
            total = total + F.softplus(logits).sum()
            if positives:
                diagonal = logits[rows, cols]
                total = total + (F.softplus(-diagonal) - F.softplus(diagonal)).sum()
        ctx.save_for_backward(img, txt, logit_scale, logit_bias)
        ctx.chunk, ctx.positives = chunk, positives
        return total / (len(img) * len(txt))

    @staticmethod
    def backward(ctx, grad_out):
        img, txt, logit_scale, logit_bias = ctx.saved_tensors
        scale = logit_scale.exp()
        norm = grad_out / (len(img) * len(txt))
        grad_img = torch.zeros_like(img)
        grad_txt = torch.empty_like(txt)
        grad_log_scale = img.new_zeros(())
        grad_bias = img.new_zeros(())
        for start, stop, rows, cols in _chunks(len(txt), ctx.chunk, img.device):
            cosine = img @ txt[start:stop].T
            # d softplus(-y·z)/dz = sigmoid(z) for a negative (y = -1), sigmoid(z) - 1 for a positive.
            grad = torch.sigmoid(scale * cosine + logit_bias)
            if ctx.positives:
                grad[rows, cols] -= 1.0
            grad *= norm
            grad_img += scale * (grad @ txt[start:stop])
            grad_txt[start:stop] = scale * (grad.T @ img)
            grad_log_scale += scale * (grad * cosine).sum()
            grad_bias += grad.sum()
        return (grad_img, grad_txt, grad_log_scale.reshape(logit_scale.shape), grad_bias.reshape(logit_bias.shape),
                None, None)


class _ChunkedInfoNCE(torch.autograd.Function):
    """0.5 · (cross-entropy image→text + text→image) of scale · img @ txt.T, positives on the diagonal.

    `neg` (M × D, M may be 0) are hard-negative captions: extra columns of every image→text row.
    """

    @staticmethod
    def forward(ctx, img, txt, neg, logit_scale, chunk: int):
        scale = logit_scale.exp()
        row_lse = torch.full((len(img),), float("-inf"), dtype=img.dtype, device=img.device)
        col_lse = torch.empty(len(txt), dtype=img.dtype, device=img.device)
        diagonal = torch.empty(len(txt), dtype=img.dtype, device=img.device)
        for start, stop, rows, cols in _chunks(len(txt), chunk, img.device):
            logits = scale * (img @ txt[start:stop].T)
            # A chunk holds whole columns (text→image) and a slice of every row (image→text),
            # whose log-sum-exp is accumulated across chunks.
            col_lse[start:stop] = torch.logsumexp(logits, dim=0)
            row_lse = torch.logaddexp(row_lse, torch.logsumexp(logits, dim=1))
            diagonal[start:stop] = logits[rows, cols]
        for start, stop, _, _ in _chunks(len(neg), chunk, img.device):
            row_lse = torch.logaddexp(row_lse, torch.logsumexp(scale * (img @ neg[start:stop].T), dim=1))
        ctx.save_for_backward(img, txt, neg, logit_scale, row_lse, col_lse)
        ctx.chunk = chunk
        n = len(img)
        return 0.5 * ((row_lse - diagonal).sum() + (col_lse - diagonal).sum()) / n

    @staticmethod
    def backward(ctx, grad_out):
        img, txt, neg, logit_scale, row_lse, col_lse = ctx.saved_tensors
        scale = logit_scale.exp()
        norm = 0.5 * grad_out / len(img)
        grad_img = torch.zeros_like(img)
        grad_txt = torch.empty_like(txt)
        grad_neg = torch.empty_like(neg)
        grad_log_scale = img.new_zeros(())

        def accumulate(captions, start, stop, grad, cosine):
            nonlocal grad_log_scale
            grad *= norm
            grad_img.add_(scale * (grad @ captions[start:stop]))
            grad_log_scale = grad_log_scale + scale * (grad * cosine).sum()
            return scale * (grad.T @ img)

        for start, stop, rows, cols in _chunks(len(txt), ctx.chunk, img.device):
            cosine = img @ txt[start:stop].T
            logits = scale * cosine
            # Softmax over each row plus softmax over each column, minus 1 per direction at a positive.
            grad = torch.exp(logits - row_lse[:, None]) + torch.exp(logits - col_lse[None, start:stop])
            grad[rows, cols] -= 2.0
            grad_txt[start:stop] = accumulate(txt, start, stop, grad, cosine)
        for start, stop, _, _ in _chunks(len(neg), ctx.chunk, img.device):
            cosine = img @ neg[start:stop].T
            # A negative caption only takes part in the image→text softmax.
            grad_neg[start:stop] = accumulate(neg, start, stop, torch.exp(scale * cosine - row_lse[:, None]), cosine)
        return grad_img, grad_txt, grad_neg, grad_log_scale.reshape(logit_scale.shape), None


def chunked_siglip_block(img, txt, logit_scale, logit_bias, chunk: int, positives: bool = True) -> torch.Tensor:
    return _ChunkedSiglip.apply(img, txt, logit_scale, logit_bias, chunk, positives)


def chunked_infonce_block(img, txt, logit_scale, chunk: int, negatives: torch.Tensor | None = None) -> torch.Tensor:
    if negatives is None:
        negatives = img.new_zeros((0, img.shape[1]))
    return _ChunkedInfoNCE.apply(img, txt, negatives, logit_scale, chunk)
