"""One table of every evaluated run and probe, as markdown and CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from vlalign.io import atomic_path

# Columns shown in the printed table, in this order, when present.
HEADLINE = [
    "eval_tuxpaint.image_to_text_recall_at_1",
    "eval_tuxpaint.text_to_image_recall_at_1",
    "eval_tuxpaint.mean_recall_at_10",
    "eval_tuxpaint.zeroshot_top1_accuracy",
    "eval_fashion_mnist.zeroshot_top1_accuracy",
]


def collect(metrics_files: list[Path]) -> pd.DataFrame:
    rows = []
    for path in metrics_files:
        data = json.loads(Path(path).read_text())
        rows.append({"model": data["name"], **data["metrics"]})
    return pd.DataFrame(rows).set_index("model").sort_index(axis=1)


def write_report(metrics_files: list[Path], out_dir: Path) -> str:
    """Write summary.csv (every metric) and summary.md (headline metrics, then all); return the headline table."""
    table = collect(metrics_files)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "summary.csv") as part:
        table.to_csv(part)
    headline = [c for c in HEADLINE if c in table.columns] or list(table.columns)
    short = table[headline].rename(columns=lambda c: c.replace("_recall_at_", " R@").replace(".", " "))
    text = short.to_markdown(floatfmt=".3f")
    full = table.T.to_markdown(floatfmt=".4f")
    with atomic_path(out_dir / "summary.md") as part:
        part.write_text(f"# vlalign results\n\n## Headline\n\n{text}\n\n## All metrics\n\n{full}\n")
    return text
