"""Peak memory and time of one SigLIP/InfoNCE forward + backward: plain (B×B logits) vs chunked.

    python benchmarks/loss_memory.py [--batch 8192] [--dim 1024] [--chunk 1024] [--loss siglip] [--device auto]

Prints one JSON line. Each variant runs in a fresh process; on the CPU its peak is the growth
of the process's maximum resident set over the loss step (inputs already allocated), on CUDA
`torch.cuda.max_memory_allocated` over the same step.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import time

import torch
import torch.nn.functional as F

from vlalign.align.losses import LOSSES
from vlalign.devices import resolve_device
from machine import describe_machine, in_fresh_process, peak_memory_mark, peak_memory_since


def loss_step(loss: str, batch: int, dim: int, chunk: int | None, device: str) -> dict:
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(batch, dim, generator=g), dim=1).to(device).requires_grad_()
    txt = F.normalize(torch.randn(batch, dim, generator=g), dim=1).to(device).requires_grad_()
    log_scale = torch.tensor(math.log(20.0), device=device, requires_grad=True)
    bias = torch.tensor(-10.0, device=device, requires_grad=True)
    mark = peak_memory_mark(device)
    started = time.perf_counter()
    value = LOSSES[loss](img, txt, log_scale, bias, chunk_size=chunk)
    value.backward()
    peak = peak_memory_since(device, mark)  # synchronises on CUDA, so the time below is the step's
    seconds = time.perf_counter() - started
    return {"loss": value.item(), "seconds": seconds, "peak_bytes": peak,
            "grad_norm": float(img.grad.norm())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--loss", default="siglip", choices=sorted(LOSSES))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    plain = in_fresh_process(loss_step, args.loss, args.batch, args.dim, None, device)
    chunked = in_fresh_process(loss_step, args.loss, args.batch, args.dim, args.chunk, device)
    mib = 2**20
    print(json.dumps({
        "benchmark": "loss_memory", "date": datetime.date.today().isoformat(), "machine": describe_machine(device),
        "loss": args.loss, "batch": args.batch, "dim": args.dim, "chunk": args.chunk,
        "bxb_fp32_mib": round(args.batch**2 * 4 / mib, 1),
        "plain_peak_mib": round(plain["peak_bytes"] / mib, 1),
        "chunked_peak_mib": round(chunked["peak_bytes"] / mib, 1),
        "peak_ratio_chunked_to_plain": round(chunked["peak_bytes"] / max(plain["peak_bytes"], 1), 3),
        "plain_seconds": round(plain["seconds"], 3), "chunked_seconds": round(chunked["seconds"], 3),
        "loss_difference": abs(plain["loss"] - chunked["loss"]),
        "grad_norm_relative_difference": abs(plain["grad_norm"] - chunked["grad_norm"]) / plain["grad_norm"],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
