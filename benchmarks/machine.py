"""What a measurement ran on, for the JSON lines of the benchmarks and docs/PERFORMANCE.md."""

from __future__ import annotations

import multiprocessing
import os
import platform
import resource
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


def peak_memory_mark(device: str | torch.device) -> int:
    """Start a peak-memory measurement: CUDA's allocator peak is reset; on the CPU the process's
    maximum resident set so far is the baseline (it only grows, so run each case in a fresh process)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def peak_memory_since(device: str | torch.device, mark: int) -> int:
    """Bytes the peak grew by since `peak_memory_mark`."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - mark
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - mark


def in_fresh_process(fn, *args):
    """fn(*args) in a new spawned process, so one measured case's allocations never count in another's peak."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)
