"""One table of every evaluated run and probe, as markdown and CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from vlalign.io import atomic_path

# Columns shown in the printed table, in this order, when present.
HEADLINE = [
    "train_pairs",
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
    figure = plot_comparison(table, out_dir / "comparison.png")
    image = f"\n\n![comparison]({figure.name})" if figure else ""
    with atomic_path(out_dir / "summary.md") as part:
        part.write_text(f"# vlalign results\n\n## Headline\n\n{text}{image}\n\n## All metrics\n\n{full}\n")
    return text


def plot_comparison(table: pd.DataFrame, path: Path) -> Path | None:
    """Grouped bars of the headline metrics per model, pool sizes in the legend."""
    metrics = [c for c in HEADLINE if c in table.columns and c != "train_pairs"]
    if not metrics:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(2.2 * len(metrics) + 3, 4.2))
    width = 0.8 / len(table)
    for i, (model, row) in enumerate(table.iterrows()):
        pairs = row.get("train_pairs")
        label = f"{model} ({int(pairs):,} pairs)" if pd.notna(pairs) else model
        ax.bar(np.arange(len(metrics)) + i * width, row[metrics].fillna(0).to_numpy(float), width, label=label)
    ax.set_xticks(np.arange(len(metrics)) + width * (len(table) - 1) / 2)
    ax.set_xticklabels([m.replace("_recall_at_", " R@").replace(".", "\n") for m in metrics], fontsize=8)
    ax.set_ylabel("score (fraction)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, title="model (training pool)")
    ax.set_title("Evaluation of every run and the linear probe")
    fig.tight_layout()
    with atomic_path(path) as part:
        fig.savefig(part, dpi=110, format="png")
    plt.close(fig)
    return path
