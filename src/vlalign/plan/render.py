"""A Plan as the terminal table, plan.md, plan.csv, plan.json and MLflow metrics."""

from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path

from tabulate import tabulate

from vlalign.io import atomic_path, write_json
from vlalign.plan.plan import Plan, Row
from vlalign.plan.units import human_bytes, human_count, human_duration

FILES = ("plan.md", "plan.csv", "plan.json")


def totals(plan: Plan) -> Row:
    """The sum of every row (peak memory: the largest); a total over rows with unknowns is a lower bound."""
    row = Row("total", "", None, where="")
    row.total_flops = sum(r.total_flops for r in plan.rows if r.total_flops is not None)
    row.disk_bytes = sum(r.disk_bytes for r in plan.rows if r.disk_bytes is not None)
    row.peak_memory_bytes = max((r.peak_memory_bytes for r in plan.rows if r.peak_memory_bytes), default=None)
    for gpu in plan.gpus:
        row.seconds[gpu.name] = sum(r.seconds.get(gpu.name) or 0.0 for r in plan.rows)
    unknown = sum(any(v is None for v in r.seconds.values()) for r in plan.rows)
    row.note = f"at least: {unknown} stages of unknown size" if unknown else "stages one after another"
    return row


def _cells(row: Row, plan: Plan) -> list[str]:
    lower = "≥ " if row.stage == "total" and row.note.startswith("at least") else ""
    return [f"{row.stage} {row.what}".strip(), human_count(row.items), human_count(row.flops_per_item),
            lower + human_count(row.total_flops), lower + human_bytes(row.disk_bytes),
            human_bytes(row.peak_memory_bytes) if row.peak_memory_bytes else "",
            *(lower + human_duration(row.seconds.get(gpu.name)) for gpu in plan.gpus), row.where, row.note]  # fmt: skip


def _headers(plan: Plan) -> list[str]:
    return ["stage", "items", "FLOPs/item", "FLOPs", "disk", "peak memory",
            *(f"time on {gpu.name}" for gpu in plan.gpus), "runs on", "note"]  # fmt: skip


def render(plan: Plan, tablefmt: str = "simple") -> str:
    """The table with a totals row, then every assumption, numbered."""
    rows = [_cells(row, plan) for row in [*plan.rows, totals(plan)]]
    table = tabulate(rows, headers=_headers(plan), tablefmt=tablefmt, disable_numparse=True)
    gpus = "; ".join(f"{g.name}: {g.peak_tflops['bf16'] or '-'} bf16 / {g.peak_tflops['fp32']} fp32 TFLOP/s, "
                     f"{human_bytes(g.memory_bytes)} ({g.source})" for g in plan.gpus)  # fmt: skip
    notes = [f"{i}. {line}" for i, line in enumerate(plan.assumptions, start=1)]
    return "\n".join([table, "", f"GPUs: {gpus}",
                      "FLOPs: matmuls, convolutions and attention as torch.utils.flop_counter counts them "
                      "(a multiply-add is 2); times: FLOPs / (peak of the precision they run in × utilisation), "
                      "or a measured throughput; CPU stages at stated rates on the cores the config gives them.",
                      "", "Assumptions:", *notes])  # fmt: skip


def write_outputs(plan: Plan, folder: Path) -> None:
    """plan.md (the table), plan.csv (raw numbers, one row per stage and the totals) and plan.json, atomically."""
    with atomic_path(folder / "plan.md") as tmp:
        tmp.write_text("# vlalign plan\n\n" + render(plan, tablefmt="github") + "\n")
    rows = [*plan.rows, totals(plan)]
    with atomic_path(folder / "plan.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        names = [g.name for g in plan.gpus]
        writer.writerow(["stage", "what", "items", "flops_per_item", "total_flops", "disk_bytes", "peak_memory_bytes",
                         *(f"seconds_{n}" for n in names), "runs_on", "note", "key"])  # fmt: skip
        for r in rows:
            seconds = [r.seconds.get(n) for n in names]
            writer.writerow([r.stage, r.what, r.items, r.flops_per_item, r.total_flops, r.disk_bytes,
                             r.peak_memory_bytes, *seconds, r.where, r.note, r.key])  # fmt: skip
    write_json(folder / "plan.json", {"gpus": [asdict(g) for g in plan.gpus], "rows": [asdict(r) for r in plan.rows],
                                      "totals": asdict(totals(plan)), "assumptions": plan.assumptions})  # fmt: skip


def metrics(plan: Plan) -> dict[str, float]:
    """GPU-hours (wall time × GPUs held) of every GPU stage, e.g. `train.<run>.gpu_hours` and
    `embed.pool.<encoder>.gpu_hours`, their sum `total.gpu_hours` and the wall time of all stages `total.hours`,
    on the first GPU named; the same prefixed by every GPU's name."""
    found: dict[str, float] = {}
    total = totals(plan)
    for i, gpu in enumerate(plan.gpus):
        hours = {f"{row.stage}.{row.what.replace(' x ', '.')}.gpu_hours": row.seconds[gpu.name] * row.gpus / 3600
                 for row in plan.rows if row.where.startswith("GPU") and row.seconds.get(gpu.name) is not None}
        hours["total.gpu_hours"] = sum(hours.values())
        hours["total.hours"] = total.seconds[gpu.name] / 3600
        for prefix in [f"{gpu.name}."] + ([""] if i == 0 else []):
            found.update({prefix + name: value for name, value in hours.items()})
    found["total.flops"] = total.total_flops
    found["total.disk_bytes"] = total.disk_bytes
    pool = next((r.items for r in plan.rows if r.stage == "convert" and r.what == "pool"), None)
    if pool is not None:
        found["pool.samples"] = pool
    return found
