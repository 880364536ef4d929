"""Which device and which precision a model runs on: the `device` and `precision` keys of the config."""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(device: str = "auto", part: int = 0) -> str:
    """"auto" is CUDA when present; part i of a scattered job takes GPU i mod the visible GPUs, so
    parallel parts fill a multi-GPU box (a SLURM job that sees one GPU always gets cuda:0)."""
    if device == "auto":
        return f"cuda:{part % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" is bf16 where the hardware runs it natively (CUDA with bf16, a CPU with AVX512-BF16 or
    AMX through oneDNN), else fp32: emulated bf16 is slower than fp32 on older CPUs."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} not in {PRECISIONS}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return "bf16" if device.type == "cpu" and native else "fp32"


def autocast(device: torch.device, precision: str):
    """Autocast to a resolved precision (see `resolve_precision`); fp32 runs without autocast."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[precision])


@contextlib.contextmanager
def loss_matmuls(device: torch.device, precision: str):
    """Under mixed precision, float32 matmuls on CUDA may use TF32 tensor cores (10-bit mantissa inputs, float32
    accumulation) while the block runs, forward and backward: the losses keep their logits in float32 for
    exp(scale)·cosine and logsigmoid, and plain FP32 would run them at an eighth of the TF32 rate (A100).
    `fp32` keeps them exact."""
    allowed = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allowed or (torch.device(device).type == "cuda" and precision != "fp32")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allowed
