"""FLOPs counted with `torch.utils.flop_counter` (a multiply-add is 2 FLOPs; matmuls, convolutions and
attention, the ops it knows): per item of a frozen encoder, per pair of a run's training step."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from vlalign import devices
from vlalign.plan.architectures import Architecture
from vlalign.plan.gpus import PRECISIONS
from vlalign.plan.step import TrainingStep


class PrecisionFlopCounter(FlopCounterMode):
    """FlopCounterMode that also splits the count by the precision each op ran in and by whether a module
    ran it (the heads) or not (the loss, computed outside the model): their rates and their sharing across
    GPUs differ."""

    def __init__(self):
        super().__init__(display=False)
        self.split: Counter = Counter()  # (precision, in a module) -> FLOPs

    def _count_flops(self, func_packet, out, args, kwargs):
        if func_packet in self.flop_registry:
            flops = self.flop_registry[func_packet](*args, **kwargs, out_val=out)
            dtype = next(t.dtype for t in tree_leaves(out) if isinstance(t, torch.Tensor))
            precision = PRECISIONS.get(dtype, "fp32")
            if precision == "fp32" and torch.backends.cuda.matmul.allow_tf32:
                precision = "tf32"  # as the trainer runs float32 matmuls on CUDA under mixed precision
            # The tracker's parents always hold "Global"; anything more is a module of the model.
            self.split[(precision, len(self.mod_tracker.parents) > 1)] += flops
        return super()._count_flops(func_packet, out, args, kwargs)

    def by_precision(self, in_module: bool | None = None) -> dict[str, float]:
        totals: Counter = Counter()
        for (precision, inside), flops in self.split.items():
            if in_module is None or inside == in_module:
                totals[precision] += flops
        return dict(totals)


def encoder_flops(architecture: Architecture, tokens: int | None = None) -> int:
    """FLOPs of one item through the encoder: an image at its input side, or a text of `tokens` tokens."""
    counter = PrecisionFlopCounter()
    with counter, torch.no_grad():
        architecture.features(tokens)
    return counter.get_total_flops()


@dataclass(frozen=True)
class StepFlops:
    """FLOPs per training pair of one optimiser step, by precision: the heads (forward and backward, shared out
    across data-parallel GPUs) and the loss (every GPU computes it over the whole gathered batch); and the
    forward alone (a validation pair)."""

    heads: dict[str, float]
    loss: dict[str, float]
    forward: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.heads.values()) + sum(self.loss.values())


def training_flops(settings: dict, image_dim: int, text_dim: int, extra_sets: int = 0) -> StepFlops:
    """Count one step of the run at its batch size on fake tensors (nothing is allocated), per pair."""
    batch = settings["batch_size"]
    with FakeTensorMode(), devices.loss_matmuls(torch.device("cuda"), settings["precision"]):
        step = TrainingStep(settings, image_dim, text_dim, batch, extra_sets)
        forward, whole = PrecisionFlopCounter(), PrecisionFlopCounter()
        with whole:
            with forward:
                loss = step.forward()
            step.update(loss)

    def per_pair(flops: dict) -> dict:
        return {precision: value / batch for precision, value in flops.items()}

    return StepFlops(per_pair(whole.by_precision(True)), per_pair(whole.by_precision(False)),
                     per_pair(forward.by_precision()))  # fmt: skip
