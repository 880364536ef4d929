"""Data-parallel alignment training across the processes torchrun starts (one per GPU).

Every rank draws the same global batch (same seed), encodes only its contiguous share of it,
and gathers every rank's features with `gather_rows` — differentiable, so the loss sees the
whole global batch as one process would. Each rank computes that same loss; the gather's
backward then sums the world's identical upstream gradients into each rank's share (× world),
and `average_gradients` averages the parameter gradients over the ranks, which leaves exactly
the one-process gradient. Nothing here runs in a single process.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F


def join_process_group(device: torch.device) -> torch.device:
    """Join the process group that torchrun describes in the environment (WORLD_SIZE > 1) and return
    this rank's device: cuda:LOCAL_RANK with NCCL, or the CPU with gloo. Alone, `device` unchanged."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def rank_and_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(idx: np.ndarray, rank: int, size: int) -> np.ndarray:
    """This rank's contiguous share of a global batch: concatenated in rank order, the shares are the batch."""
    return np.array_split(idx, size)[rank]


def gather_rows(local: torch.Tensor) -> torch.Tensor:
    """Every rank's rows concatenated in rank order; gradients flow back to each rank's own rows."""
    from torch.distributed.nn.functional import all_gather

    _, size = rank_and_size()
    counts = [torch.zeros(1, dtype=torch.long, device=local.device) for _ in range(size)]
    dist.all_gather(counts, torch.tensor([len(local)], device=local.device))
    counts = [int(c) for c in counts]
    # all_gather needs equal shapes: pad to the largest share, then drop the padding.
    padded = F.pad(local, (0, 0, 0, max(counts) - len(local)))
    return torch.cat([part[:n] for part, n in zip(all_gather(padded), counts)])


def average_gradients(model: torch.nn.Module) -> None:
    _, size = rank_and_size()
    for parameter in model.parameters():
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad /= size


def broadcast_parameters(model: torch.nn.Module) -> None:
    """Rank 0's initial weights everywhere (the same seed gives them already; this makes it certain)."""
    for parameter in model.parameters():
        dist.broadcast(parameter.data, src=0)
