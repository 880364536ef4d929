"""How close `vlalign plan`'s peak memory of a training step comes to a real one on this machine.

    python benchmarks/plan_memory.py [--batch 4096] [--image-dim 1024] [--text-dim 512] [--extra 1] [--chunk 0]

Prints one JSON line. The plan tracks the sizes of the step's tensors on fake tensors (nothing allocated);
here the same two optimiser steps run on real CPU tensors in a fresh process, and the growth of the
process's maximum resident set over them is the real peak (the allocator's caching and fragmentation
included; on the CPU the bf16 autocast copies are real too).
"""

from __future__ import annotations

import argparse
import datetime
import json

from machine import describe_machine, in_fresh_process, peak_memory_mark, peak_memory_since
from vlalign.plan.memory import training_step_memory
from vlalign.schema import complete


def real_step(settings: dict, image_dim: int, text_dim: int, extra: int) -> dict:
    mark = peak_memory_mark("cpu")
    tracked = training_step_memory(settings, image_dim, text_dim, extra, fake=False)
    return {"rss_peak_bytes": peak_memory_since("cpu", mark), "tracked_real_bytes": tracked.peak_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--image-dim", type=int, default=1024)
    parser.add_argument("--text-dim", type=int, default=512)
    parser.add_argument("--extra", type=int, default=1, help="extra caption sets (multi-positive); 0 for none")
    parser.add_argument("--chunk", type=int, default=0, help="loss_chunk_size; 0 for the plain loss")
    args = parser.parse_args()
    settings = complete("train.defaults", {"batch_size": args.batch, "multi_positive": args.extra > 0,
                                           "loss_chunk_size": args.chunk or None})  # fmt: skip
    planned = training_step_memory(settings, args.image_dim, args.text_dim, args.extra)
    real = in_fresh_process(real_step, settings, args.image_dim, args.text_dim, args.extra)
    mib = 2**20
    print(json.dumps({
        "benchmark": "plan_memory", "date": datetime.date.today().isoformat(), "machine": describe_machine("cpu"),
        "batch": args.batch, "image_dim": args.image_dim, "text_dim": args.text_dim, "extra_sets": args.extra,
        "loss_chunk_size": args.chunk or None, "head": settings["head"], "width_factor": settings["width_factor"],
        "target_dim": settings["target_dim"], "precision": settings["precision"],
        "planned_peak_mib": round(planned.peak_bytes / mib, 1),
        "tracked_on_real_tensors_mib": round(real["tracked_real_bytes"] / mib, 1),
        "rss_peak_growth_mib": round(real["rss_peak_bytes"] / mib, 1),
        "rss_over_planned": round(real["rss_peak_bytes"] / planned.peak_bytes, 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
