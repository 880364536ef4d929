"""Error against float64 of the plain and the chunked SigLIP/InfoNCE, and their time per call.

    python benchmarks/chunked_loss_precision.py [--batch 4096] [--dim 512] [--chunk 1024]
                                                [--precision-batch 100] [--precision-chunk 7] [--smoke]

Precision: for each loss, input dtype (fp32, bf16) and block (easy: captions close to their images at
logit scale 100; hard: random captions at 20), the relative error ‖got − float64‖ / ‖float64‖ of the
loss and of each gradient, root-mean-squared over 8 seeds. The float64 reference is the plain
formula on the same inputs (embeddings rounded to the dtype, scale and bias to float32).
Time: one forward + backward on fp32 embeddings of `--batch` × `--dim` on the CPU, plain and
chunked, the median of 3 calls after a warm-up. Prints one JSON line. `--smoke`: tiny sizes, 2 seeds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F

from machine import describe_machine
from vlalign.align.losses import LOSSES, USES_BIAS

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
BLOCKS = {"easy": (1.0, 100.0), "hard": (None, 20.0)}  # (caption noise, or None for random captions; logit scale)


def block_inputs(block: str, n: int, dim: int, seed: int) -> dict:
    noise, scale = BLOCKS[block]
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1)
    if noise is None:
        txt = F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1)
    else:
        txt = F.normalize(img + noise / math.sqrt(dim) * torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1)
    return {"img": img, "txt": txt, "log_scale": torch.tensor(math.log(scale)), "bias": torch.tensor(-10.0)}


def value_and_grads(loss: str, inputs: dict, dtype: torch.dtype, chunk: int | None) -> dict:
    """Loss and gradients as float64; embeddings in `dtype`, scale and bias float32 (float64 for float64)."""
    params_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    tensors = {key: inputs[key].to(dtype if key in ("img", "txt") else params_dtype).requires_grad_()
               for key in ("img", "txt", "log_scale", "bias")}  # fmt: skip
    value = LOSSES[loss](*tensors.values(), chunk_size=chunk)
    value.backward()
    names = ["img", "txt", "log_scale", *(["bias"] if loss in USES_BIAS else [])]
    return {"loss": value.detach().double(), **{name: tensors[name].grad.double() for name in names}}


def rms_errors(loss: str, dtype: torch.dtype, block: str, n: int, chunk: int | None, seeds: int) -> dict:
    squares: dict[str, list[float]] = {}
    for seed in range(seeds):
        inputs = block_inputs(block, n, 32, seed)
        rounded = {key: t.to(dtype if key in ("img", "txt") else torch.float32).double() for key, t in inputs.items()}
        reference = value_and_grads(loss, rounded, torch.float64, None)
        got = value_and_grads(loss, inputs, dtype, chunk)
        for name, ref in reference.items():
            squares.setdefault(name, []).append(float((got[name] - ref).norm() / ref.norm()) ** 2)
    return {name: float(f"{math.sqrt(statistics.fmean(values)):.2e}") for name, values in squares.items()}


def seconds_per_call(loss: str, batch: int, dim: int, chunk: int | None, repeats: int = 3) -> float:
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(batch, dim, generator=g), dim=1).requires_grad_()
    txt = F.normalize(torch.randn(batch, dim, generator=g), dim=1).requires_grad_()
    log_scale = torch.tensor(math.log(20.0), requires_grad=True)
    bias = torch.tensor(-10.0, requires_grad=True)
    times = []
    for _ in range(repeats + 1):  # the first call warms up
        started = time.perf_counter()
        LOSSES[loss](img, txt, log_scale, bias, chunk_size=chunk).backward()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times[1:]), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--precision-batch", type=int, default=100)
    parser.add_argument("--precision-chunk", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="batch 256, dim 64, 2 seeds: check that it runs")
    args = parser.parse_args()
    batch, dim, chunk, seeds = (256, 64, 100, 2) if args.smoke else (args.batch, args.dim, args.chunk, 8)
    n, precision_chunk = args.precision_batch, args.precision_chunk
    precision = {
        f"{loss}/{dtype_name}/{block}": {
            "plain": rms_errors(loss, dtype, block, n, None, seeds),
            "chunked": rms_errors(loss, dtype, block, n, precision_chunk, seeds),
        }
        for loss in LOSSES for dtype_name, dtype in DTYPES.items() for block in BLOCKS
    }  # fmt: skip
    timing = {loss: {"plain_s": seconds_per_call(loss, batch, dim, None),
                     "chunked_s": seconds_per_call(loss, batch, dim, chunk)} for loss in LOSSES}  # fmt: skip
    print(json.dumps({
        "benchmark": "chunked_loss_precision", "date": datetime.date.today().isoformat(),
        "machine": describe_machine(), "precision_batch": n, "precision_chunk": precision_chunk, "seeds": seeds,
        "relative_error_vs_float64": precision,
        "timing": {"batch": batch, "dim": dim, "chunk": chunk, "dtype": "fp32", "device": "cpu", **timing},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
