"""Contrastive losses on L2-normalised embeddings: SigLIP (SAIL's choice) and InfoNCE (CLIP baseline).

Both take optional extra positive caption sets ("multi-positive", SAIL): each set forms its
own B×B block against the same images, and the loss is the mean over the blocks.
With `chunk_size` below the batch size a block is computed in column chunks and recomputed in
the backward pass (`vlalign.align.chunked_loss`), so the B×B logits are never held; without it
the plain formulas below materialise them, which is fine up to a batch of a few thousand.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vlalign.align.chunked_loss import chunked_infonce_block, chunked_siglip_block


def _siglip_block(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor):
    logits = scale * img @ txt.T + bias
    labels = 2.0 * torch.eye(len(img), device=img.device, dtype=logits.dtype) - 1.0
    # Mean over all B×B pairs, as SAIL's code and DESIGN.md have it. The SigLIP paper divides
    # the sum by B instead (= B × this value); that only rescales the gradient, which Lion
    # (sign update) and AdamW ignore, but it changes the loss values and what grad_clip means.
    return -F.logsigmoid(labels * logits).mean()


def siglip_loss(
    img: torch.Tensor,
    txt: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    extra_txt: Sequence[torch.Tensor] | None = None,
    chunk_size: int | None = None,
    negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sigmoid loss, labels 2I−1: -mean(logsigmoid(labels · (exp(logit_scale) · img @ txt.T + bias))).

    `negatives` (M × D hard-negative captions, e.g. one per pair) add one more block in which
    every pair is labelled −1.
    """
    chunked = chunk_size is not None and chunk_size < len(txt)
    captions = [txt, *(extra_txt or [])]
    if chunked:
        blocks = [chunked_siglip_block(img, t, logit_scale, logit_bias, chunk_size) for t in captions]
        if negatives is not None:
            blocks.append(chunked_siglip_block(img, negatives, logit_scale, logit_bias, chunk_size, positives=False))
    else:
        scale = logit_scale.exp()
        blocks = [_siglip_block(img, t, scale, logit_bias) for t in captions]
        if negatives is not None:
            blocks.append(F.softplus(scale * img @ negatives.T + logit_bias).mean())
    return torch.stack(blocks).mean()


def _infonce_block(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, negatives: torch.Tensor | None):
    logits = scale * img @ txt.T
    target = torch.arange(len(img), device=img.device)
    # Hard negatives are extra columns of the image→text rows only.
    rows = logits if negatives is None else torch.cat([logits, scale * img @ negatives.T], dim=1)
    return 0.5 * (F.cross_entropy(rows, target) + F.cross_entropy(logits.T, target))


def infonce_loss(
    img: torch.Tensor,
    txt: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor | None = None,
    extra_txt: Sequence[torch.Tensor] | None = None,
    chunk_size: int | None = None,
    negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric CLIP cross-entropy (image→text and text→image, averaged).

    logit_bias is accepted only so that every LOSSES entry is called alike: a constant shift
    of all logits leaves a softmax unchanged, so InfoNCE has no use for it. `negatives`
    (M × D hard-negative captions) join every image's softmax over captions.
    """
    captions = [txt, *(extra_txt or [])]
    if chunk_size is not None and chunk_size < len(txt):
        blocks = [chunked_infonce_block(img, t, logit_scale, chunk_size, negatives) for t in captions]
    else:
        scale = logit_scale.exp()
        blocks = [_infonce_block(img, t, scale, negatives) for t in captions]
    return torch.stack(blocks).mean()


LOSSES = {"siglip": siglip_loss, "infonce": infonce_loss}
# Losses whose value depends on logit_bias; for the others the trainer leaves the bias untouched.
USES_BIAS = frozenset({"siglip"})
