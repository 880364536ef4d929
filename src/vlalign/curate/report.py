"""The curation report of one curated pool: counts (CSV + markdown), figures, and a summary.

Files written to `out_dir`:
  counts.csv         one row per enabled filter: evaluated, failing, dropped here, remaining
  reasons.csv        dropped samples per (filter, failed check) and source
  contamination.csv  pool samples whose image matches an evaluation image, kept or not
  curation.md        the tables above, per-source counts, OCR cost, notes
  filters.png        every measured number's histogram with the thresholds drawn
  concepts.png       samples per concept entry before and after balancing
  examples.png       kept and dropped images with captions and reasons
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vlalign.curate.decide import resolve_filter
from vlalign.curate.figures import plot_concepts, plot_examples, plot_measurements
from vlalign.io import atomic_path


def filter_counts(decisions: pd.DataFrame, filters: list[dict]) -> pd.DataFrame:
    rows = []
    remaining = len(decisions)
    for spec in (s for s in map(resolve_filter, filters) if s["enabled"]):
        name = spec["name"]
        passed = decisions[f"pass_{name}"]
        dropped = int((decisions["reason"] == name).sum())
        remaining -= dropped
        settings = ", ".join(f"{k}={v}" for k, v in spec.items() if k not in ("name", "enabled"))
        rows.append({"filter": name, "settings": settings, "evaluated": int(passed.notna().sum()),
                     "failing": int((passed == False).sum()), "dropped": dropped,  # noqa: E712
                     "remaining": remaining})  # fmt: skip
    return pd.DataFrame(rows, columns=["filter", "settings", "evaluated", "failing", "dropped", "remaining"])


def reason_counts(decisions: pd.DataFrame) -> pd.DataFrame:
    dropped = decisions[~decisions["kept"]]
    table = dropped.groupby(["reason", "reason_detail", "source"]).size().unstack("source", fill_value=0)
    table["total"] = table.sum(axis=1)
    return table.reset_index()


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as part:
        frame.to_csv(part, index=False)


def _ocr_lines(decisions: pd.DataFrame) -> list[str]:
    seconds = decisions["ocr_seconds"].dropna()
    if seconds.empty:
        return ["OCR was not run (measure setting `ocr: off`)."]
    lines = [f"OCR read {len(seconds)} of {len(decisions)} images: {seconds.sum():.1f} s on one core in all, "
             f"{seconds.mean() * 1000:.0f} ms per image (median {seconds.median() * 1000:.0f} ms, "
             f"95th percentile {seconds.quantile(0.95) * 1000:.0f} ms)."]  # fmt: skip
    failed = int(decisions["ocr_error"].notna().sum())
    if failed:
        lines.append(f"OCR failed on {failed} images (see `ocr_error`).")
    unread = int((decisions["kept"] & decisions["ocr_seconds"].isna()).sum())
    if unread and "pass_text_spotting" in decisions:
        lines.append(f"{unread} kept samples were not read by OCR and passed text spotting unjudged.")
    return lines


def _markdown(decisions: pd.DataFrame, counts: pd.DataFrame, reasons: pd.DataFrame,
              contamination: pd.DataFrame, filters: list[dict]) -> str:  # fmt: skip
    kept = int(decisions["kept"].sum())
    per_source = decisions.groupby("source")["kept"].agg(samples="size", kept="sum").reset_index()
    alignment = next((resolve_filter(f) for f in filters if f["name"] == "alignment"), None)
    parts = [
        "# Curation report",
        f"{kept} of {len(decisions)} samples kept ({100 * kept / max(len(decisions), 1):.1f} %). Filters run in "
        "the order below; a sample leaves at its first failure (`reason`). `failing` counts every sample the "
        "filter rejects, also those an earlier filter dropped; dedup, balance and a top-fraction alignment filter "
        "judge only the samples that reach them.",
        "## Filters", counts.to_markdown(index=False) if len(counts) else "No filter enabled: every sample is kept.",
        "## Dropped samples by filter and failed check", reasons.to_markdown(index=False) if len(reasons) else "None.",
        "## Samples per source", per_source.to_markdown(index=False),
        "## Decontamination",
        f"{len(contamination)} pool samples match an evaluation image (exact bytes or pHash within the measured "
        f"distance); {int(contamination['kept'].sum())} of them are kept. The list is in `contamination.csv`.",
        "## Text spotting (OCR) cost", *_ocr_lines(decisions),
    ]  # fmt: skip
    if alignment is not None and alignment["enabled"] and alignment["run"]:
        parts.insert(2, f"Alignment scores come from the aligner of training run `{alignment['run']}`.")
    return "\n\n".join(parts) + "\n"


def write_curation_report(decisions: pd.DataFrame, shard_folders: list[Path], out_dir: Path,
                          filters: list[dict]) -> dict:  # fmt: skip
    """Write the report files (see the module docstring); return a flat summary of numbers for tracking."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = filter_counts(decisions, filters)
    reasons = reason_counts(decisions)
    contamination = decisions.loc[decisions["contaminates"].notna(),
                                  ["key", "source", "caption", "contaminates", "eval_hamming", "eval_exact", "kept",
                                   "reason"]]  # fmt: skip
    _write_csv(counts, out_dir / "counts.csv")
    _write_csv(reasons, out_dir / "reasons.csv")
    _write_csv(contamination, out_dir / "contamination.csv")
    with atomic_path(out_dir / "curation.md") as part:
        part.write_text(_markdown(decisions, counts, reasons, contamination, filters))
    plot_measurements(decisions, filters, out_dir / "filters.png")
    plot_concepts(decisions, filters, out_dir / "concepts.png")
    plot_examples(decisions, [Path(f) for f in shard_folders], out_dir / "examples.png")

    summary = {"samples": len(decisions), "kept": int(decisions["kept"].sum())}
    summary["dropped"] = summary["samples"] - summary["kept"]
    for row in counts.itertuples():
        summary[f"dropped_by.{row.filter}"] = row.dropped
        summary[f"failing.{row.filter}"] = row.failing
    for source, group in decisions.groupby("source"):
        summary[f"kept.{source}"] = int(group["kept"].sum())
    summary["contaminating"] = len(contamination)
    summary["contaminating_kept"] = int(contamination["kept"].sum())
    seconds = decisions["ocr_seconds"].dropna()
    summary["ocr_images"] = len(seconds)
    if len(seconds):
        summary["ocr_seconds_per_image"] = round(float(seconds.mean()), 4)
    return summary
