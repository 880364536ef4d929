"""Named GPUs (`gpus.yaml`): peak rates per precision, memory, the stated utilisation of each stage, and
throughputs measured on them; the time a stage's FLOPs take on one."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlalign.plan.assumptions import Assumptions, load_data

# torch dtypes of counted matmuls -> the precision column of gpus.yaml
PRECISIONS = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


@dataclass(frozen=True)
class Gpu:
    name: str
    peak_tflops: dict[str, float | None]  # precision -> dense peak; None: no native support
    memory_bytes: int
    source: str


def gpu_names() -> list[str]:
    return list(load_data("gpus.yaml")["gpus"])


def find_gpu(name: str) -> Gpu:
    """The GPU of that name (case and `-`/`_`/space insensitive); unknown names raise listing the known ones."""
    wanted = _squash(name)
    for known, entry in load_data("gpus.yaml")["gpus"].items():
        if _squash(known) == wanted:
            peaks = {p: entry[p] for p in ("bf16", "fp16", "tf32", "fp32")}
            return Gpu(known, peaks, int(entry["memory_gib"] * 2**30), entry["source"])
    raise ValueError(f"unknown GPU {name!r}; known: {', '.join(gpu_names())} (add one to {__package__}/gpus.yaml)")


def _squash(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def peak_flops(gpu: Gpu, precision: str, assumptions: Assumptions) -> float:
    """FLOP/s of a matmul in `precision` (bf16, fp16, tf32: float32 on TF32 tensor cores, or fp32) on the GPU; a
    precision the GPU lacks at its fp32 rate."""
    if precision == "tf32":
        assumptions.note("gpu.fp32_matmuls", "TF32 under mixed precision",
                         "the trainer lets the loss's float32 matmuls use TF32 (vlalign.devices.loss_matmuls)")
    if gpu.peak_tflops[precision] is None:
        assumptions.note(f"gpu.{gpu.name}.{precision}", "fp32 rate", f"{gpu.name} has no native {precision}")
        return gpu.peak_tflops["fp32"] * 1e12
    return gpu.peak_tflops[precision] * 1e12


def utilisation(stage: str, assumptions: Assumptions) -> float:
    entry = load_data("gpus.yaml")["utilisation"][stage]
    assumptions.note(f"utilisation.{stage}", entry["value"], entry["source"])
    return entry["value"]


def gpu_seconds(flops_by_precision: dict[str, float], gpu: Gpu, stage: str, assumptions: Assumptions) -> float:
    """Seconds for matmul FLOPs split by precision: each part at the GPU's peak for it × the stage's utilisation."""
    fraction = utilisation(stage, assumptions)
    return sum(flops / (peak_flops(gpu, precision, assumptions) * fraction)
               for precision, flops in flops_by_precision.items() if flops)  # fmt: skip


def measured_rate(gpu: Gpu, stage: str, key: str) -> dict | None:
    """A throughput measured on this GPU for this stage and key (gpus.yaml `measured`), if one is listed."""
    for entry in load_data("gpus.yaml")["measured"]:
        if _squash(entry["gpu"]) == _squash(gpu.name) and entry["stage"] == stage and entry["key"] == key:
            return entry
    return None
