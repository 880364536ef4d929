"""What a measurement ran on, for the JSON lines of the benchmarks and docs/PERFORMANCE.md."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe_machine(device: str = "cpu") -> dict:
    """CPU model, usable cores, torch threads, and the GPU's name when `device` is a CUDA device."""
    gpu = torch.cuda.get_device_name(torch.device(device)) if torch.device(device).type == "cuda" else None
    return {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
            "gpu": gpu}  # fmt: skip
