"""Optimisers and the learning-rate schedule of the SAIL recipe (Lion, cosine with warm-up)."""

from __future__ import annotations

import math

import torch
from torch.optim import AdamW, Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["Lion", "AdamW", "cosine_schedule", "make_optimizer"]


class Lion(Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms").

    Per step, with gradient g and momentum m:
        c = β1·m + (1−β1)·g
        p ← p − lr·(sign(c) + wd·p)          (decoupled weight decay, scaled by lr)
        m ← β2·m + (1−β2)·g
    """

    def __init__(self, params, lr: float = 1e-5, betas=(0.9, 0.99), weight_decay: float = 1e-4):
        if lr < 0:
            raise ValueError(f"Lion: lr must be >= 0, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Lion: betas must lie in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                update = m.mul(beta1).add_(p.grad, alpha=1.0 - beta1).sign_()
                p.mul_(1.0 - lr * wd)
                p.add_(update, alpha=-lr)
                m.mul_(beta2).add_(p.grad, alpha=1.0 - beta2)
        return loss


def make_optimizer(name: str, param_groups, lr: float, betas, weight_decay: float) -> Optimizer:
    if name == "lion":
        return Lion(param_groups, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adamw":
        return AdamW(param_groups, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected 'lion' or 'adamw'")


def cosine_schedule(optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.1) -> LambdaLR:
    """Linear warm-up over the first warmup_fraction of steps, then cosine decay towards 0.

    The factor for step s (0-based) is (s+1)/W during warm-up, so the first step already moves
    the weights, and reaches 1 at the last warm-up step; the cosine reaches 0 at s = total_steps.
    """
    warmup = int(round(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
