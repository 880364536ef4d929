"""Alignment-training throughput: vlalign's trainer against a plain reimplementation of the authors' step.

    python benchmarks/train_throughput.py [--pairs 16384] [--batch 4096] [--image-dim 512] [--text-dim 256] \\
        [--width-factor 8] [--target-dim 256] [--chunk 1024] [--device auto]
    # SAIL-L-GTE at full shape on a GPU:
    python benchmarks/train_throughput.py --device cuda --pairs 262144 --batch 32768 --image-dim 2048 \\
        --text-dim 1024 --target-dim 1024 --chunk 4096

Prints one JSON line. Both sides train the same StarMLP towers (LayerNorm → GLU ×width → L2) with
SigLIP and Lion on the same random embeddings for the same number of epochs:
- `plain`: the authors' step as their code has it — embeddings held as a Python list of
  per-sample arrays, every batch collated sample by sample, fp16 autocast with a GradScaler on
  CUDA (bf16 on the CPU, which has no fast fp16), the B×B logits and labels materialised;
- `vlalign`: `train_alignment` — float16 arrays indexed a batch at a time, bf16 autocast,
  the chunked loss (`loss_chunk_size`) that never holds the B×B logits.
Figures: pairs/s of the steps after the first (warm-up), peak memory of the run (CUDA:
max_memory_allocated; CPU: growth of the maximum resident set, each side in a fresh process),
and on CUDA model FLOP utilisation. FLOPs per pair = 3 × the towers' forward FLOPs per pair
(forward + backward ≈ 3 × forward) counted by torch's FlopCounterMode, plus the loss's
similarity matmuls: 2·D·B per pair forward, ×3 with the backward (the chunked loss recomputes
the forward once more, which is not counted as useful work). `--peak-tflops` defaults to 989
(H100 SXM / H200 dense bf16).
"""

from __future__ import annotations

import argparse
import datetime
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from vlalign.align.heads import AlignmentModel
from vlalign.align.optim import Lion
from vlalign.align.trainer import train_alignment
from vlalign.devices import resolve_device
from machine import describe_machine, in_fresh_process, peak_memory_mark, peak_memory_since


def _embeddings(args) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.standard_normal((args["pairs"], args["image_dim"]), dtype=np.float32).astype(np.float16)
    text = rng.standard_normal((args["pairs"], args["text_dim"]), dtype=np.float32).astype(np.float16)
    return image, text


def plain_run(args: dict) -> dict:
    """The authors' training step, reimplemented plainly (see the module docstring)."""
    device = torch.device(args["device"])
    image, text = _embeddings(args)
    image_list, text_list = list(image), list(text)  # per-sample arrays, as their loader keeps them
    del image, text
    torch.manual_seed(0)
    model = AlignmentModel(args["image_dim"], args["text_dim"], head="star", target_dim=args["target_dim"],
                           width_factor=args["width_factor"]).to(device)  # fmt: skip
    optimizer = Lion(model.parameters(), lr=1e-5, betas=(0.9, 0.99), weight_decay=1e-4)
    half = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=half == torch.float16)
    start = peak_memory_mark(device)
    step_times, batch = [], args["batch"]
    for _ in range(args["epochs"]):
        order = np.random.default_rng(len(step_times)).permutation(len(image_list))
        for begin in range(0, len(order) - batch + 1, batch):
            t0 = time.perf_counter()
            idx = order[begin:begin + batch]
            img = torch.stack([torch.from_numpy(image_list[i].astype(np.float32)) for i in idx]).to(device)
            txt = torch.stack([torch.from_numpy(text_list[i].astype(np.float32)) for i in idx]).to(device)
            with torch.autocast(device.type, dtype=half):
                z_img, z_txt = model(img, txt)
                logits = model.logit_scale.exp() * z_img @ z_txt.T + model.logit_bias
                labels = 2 * torch.eye(batch, device=device) - 1
                loss = -F.logsigmoid(labels * logits).mean()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss.item()
            step_times.append(time.perf_counter() - t0)
    return {"step_times": step_times, "peak_bytes": peak_memory_since(device, start)}


def vlalign_run(args: dict) -> dict:
    device = torch.device(args["device"])
    image, text = _embeddings(args)
    settings = {"head": "star", "width_factor": args["width_factor"], "target_dim": args["target_dim"],
                "batch_size": args["batch"], "epochs": args["epochs"], "precision": "bf16",
                "loss_chunk_size": args["chunk"], "warmup_fraction": 0.1}  # fmt: skip
    start = peak_memory_mark(device)
    result = train_alignment(image, text, settings, device=device)
    step_times = [args["batch"] / h["pairs_per_s"] for h in result.history if "pairs_per_s" in h]
    return {"step_times": step_times, "peak_bytes": peak_memory_since(device, start)}


def flops_per_pair(args: dict) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model = AlignmentModel(args["image_dim"], args["text_dim"], head="star", target_dim=args["target_dim"],
                           width_factor=args["width_factor"])  # fmt: skip
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, args["image_dim"]), torch.zeros(1, args["text_dim"]))
    towers = 3 * counter.get_total_flops()
    loss = 3 * 2 * args["target_dim"] * args["batch"]  # img @ txt.T: 2·D per pair and partner, B partners
    return float(towers + loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=16384)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--image-dim", type=int, default=512)
    parser.add_argument("--text-dim", type=int, default=256)
    parser.add_argument("--width-factor", type=int, default=8)
    parser.add_argument("--target-dim", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    args = vars(parser.parse_args())
    args["device"] = resolve_device(args["device"])
    if args["pairs"] < 2 * args["batch"]:
        parser.error("--pairs must hold at least two batches (the first step is warm-up)")

    plain = in_fresh_process(plain_run, args)
    ours = in_fresh_process(vlalign_run, args)

    def pairs_per_s(result: dict) -> float:
        return args["batch"] / float(np.median(result["step_times"][1:]))

    flops = flops_per_pair(args)
    mib = 2**20
    figures = {
        "benchmark": "train_throughput", "date": datetime.date.today().isoformat(),
        "machine": describe_machine(args["device"]), **{k: args[k] for k in (
            "pairs", "batch", "image_dim", "text_dim", "width_factor", "target_dim", "chunk", "epochs")},
        "plain_pairs_per_s": round(pairs_per_s(plain), 1), "vlalign_pairs_per_s": round(pairs_per_s(ours), 1),
        "ratio_vlalign_to_plain": round(pairs_per_s(ours) / pairs_per_s(plain), 2),
        "plain_peak_mib": round(plain["peak_bytes"] / mib, 1), "vlalign_peak_mib": round(ours["peak_bytes"] / mib, 1),
        "ratio_peak_vlalign_to_plain": round(ours["peak_bytes"] / max(plain["peak_bytes"], 1), 3),
        "gflops_per_pair": round(flops / 1e9, 4),
        "vlalign_tflops": round(flops * pairs_per_s(ours) / 1e12, 3),
        "plain_tflops": round(flops * pairs_per_s(plain) / 1e12, 3),
    }  # fmt: skip
    if torch.device(args["device"]).type == "cuda":
        mfu = figures["vlalign_tflops"] / args["peak_tflops"]
        figures.update(peak_tflops=args["peak_tflops"], vlalign_mfu=round(mfu, 3))
    # SAIL: 23M pairs x 100 epochs.
    figures["projected_hours_23m_pairs_100_epochs"] = round(23e6 * 100 / pairs_per_s(ours) / 3600, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
