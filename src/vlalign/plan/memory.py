"""Peak memory of a run's training step, from the sizes of the tensors it holds, without allocating them.

`torch.distributed._tools.mem_tracker.MemTracker` does this per module, but refuses a module that runs
twice in one step, which SAIL's multi-positive training does (the text tower once per caption set); so
the storages are tracked here directly: every tensor an op creates is counted until it is freed.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from vlalign.plan.step import TrainingStep


class LiveTensors(TorchDispatchMode):
    """Bytes of the tensor storages created inside it and still alive, and their peak (views share their
    base's storage, so they add nothing)."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes = WeakIdKeyDictionary()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self._count(tensor.untyped_storage())
        return out

    def _count(self, storage) -> None:
        size = storage.nbytes()
        if storage in self._sizes:
            return
        self._sizes[storage] = size
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, size)

    def _free(self, size: int) -> None:
        self.live -= size


@dataclass(frozen=True)
class StepMemory:
    peak_bytes: int  # the step's own peak: weights, gradients, optimiser state, batch, activations, loss
    weights_bytes: int  # the model's parameters


def training_step_memory(settings: dict, image_dim: int, text_dim: int, extra_sets: int = 0,
                         fake: bool = True) -> StepMemory:  # fmt: skip
    """Peak bytes over two optimiser steps of the run at its batch size (the second holds the optimiser's
    state and the first step's gradients until they are cleared, as every later step does). `fake=False`
    allocates the tensors for real (a check on small settings)."""
    tracker = LiveTensors()
    with FakeTensorMode() if fake else contextlib.nullcontext(), tracker:
        step = TrainingStep(settings, image_dim, text_dim, settings["batch_size"], extra_sets)
        for _ in range(2):
            step.update(step.forward())
        weights = sum(p.numel() * p.element_size() for p in step.model.parameters())
    return StepMemory(tracker.peak, weights)
