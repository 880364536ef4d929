"""Alignment-training throughput on synthetic embeddings: one JSON line of figures.

    python benchmarks/train_throughput.py [--pairs 8192] [--batch 1024] [--head star] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from vlalign.align.trainer import train_alignment
from vlalign.embed import resolve_device
from vlalign.machine import describe_machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=8192)
    parser.add_argument("--image-dim", type=int, default=1280)
    parser.add_argument("--text-dim", type=int, default=384)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--head", default="star")
    parser.add_argument("--width-factor", type=int, default=2)
    parser.add_argument("--target-dim", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    image = rng.standard_normal((args.pairs, args.image_dim), dtype=np.float32).astype(np.float16)
    text = rng.standard_normal((args.pairs, args.text_dim), dtype=np.float32).astype(np.float16)
    settings = {"head": args.head, "width_factor": args.width_factor, "target_dim": args.target_dim,
                "batch_size": args.batch, "epochs": args.epochs, "lr": 1e-4, "val_fraction": 0.0}  # fmt: skip
    device = resolve_device(args.device)
    started = time.perf_counter()
    result = train_alignment(image, text, settings, device=device)
    seconds = time.perf_counter() - started
    steps = [h for h in result.history if "pairs_per_s" in h]
    print(json.dumps({
        "benchmark": "train_throughput", "device": device,
        "machine": describe_machine(device),
        "pairs": args.pairs, "batch": args.batch, "head": args.head, "width_factor": args.width_factor,
        "target_dim": args.target_dim, "epochs": args.epochs, "seconds": round(seconds, 3),
        "pairs_per_s_overall": round(args.pairs * args.epochs / seconds, 1),
        "pairs_per_s_median_step": round(float(np.median([h["pairs_per_s"] for h in steps])), 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
