"""The trainer's optimiser step, built from a run's settings, on whatever tensors the caller's mode makes.

Under `FakeTensorMode` nothing is allocated, so the step of SAIL's batch of 32,768 can be counted (FLOPs)
and tracked (memory) on any machine; with real tensors it is the same step, measurable.
"""

from __future__ import annotations

import functools

import torch

from vlalign import devices
from vlalign.align.heads import MODEL_KEYS, AlignmentModel
from vlalign.align.losses import LOSSES
from vlalign.align.optim import make_optimizer

# The trainer's own loss and parameter groups, so that what is counted is what runs.
from vlalign.align.trainer import _loss, _param_groups, resolve_settings


class TrainingStep:
    """One run's model, optimiser and a batch: image, text, one text set per extra caption set (multi-positive)
    and the hard negatives, as `train_alignment` feeds them (float32 rows on the device)."""

    def __init__(self, settings: dict, image_dim: int, text_dim: int, batch: int, extra_sets: int = 0):
        cfg = resolve_settings(settings)
        self.cfg = cfg
        self.model = AlignmentModel(image_dim, text_dim, **{k: cfg[k] for k in MODEL_KEYS})
        self.model.train()
        groups = _param_groups(self.model, cfg["weight_decay"], cfg["loss"])
        self.optimizer = make_optimizer(cfg["optimizer"], groups, cfg["lr"], cfg["betas"], cfg["weight_decay"])
        self.loss_fn = functools.partial(LOSSES[cfg["loss"]], chunk_size=cfg["loss_chunk_size"])
        # Autocast on the CPU casts the heads' matmuls to bf16 as CUDA's does.
        self.autocast = functools.partial(devices.autocast, torch.device("cpu"), cfg["precision"])
        self.image = torch.randn(batch, image_dim)
        self.text = torch.randn(batch, text_dim)
        self.extra = [torch.randn(batch, text_dim) for _ in range(extra_sets if cfg["multi_positive"] else 0)]
        self.negatives = torch.randn(batch, text_dim) if cfg["hard_negatives"] else None

    def forward(self) -> torch.Tensor:
        return _loss(self.model, self.loss_fn, self.image, self.text, self.extra, self.negatives, self.autocast)

    def update(self, loss: torch.Tensor) -> None:
        """The rest of the trainer's step: gradients, clipping, the optimiser, the temperature's clamp."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg["grad_clip"] is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg["grad_clip"])
        self.optimizer.step()
        self.model.clamp_logit_scale()
