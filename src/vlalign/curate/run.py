"""Curate stage: training-pool shards in, curated shards + decisions.parquet + a filter figure out."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pandas as pd

from vlalign.curate.filters import FILTERS, decide, measure
from vlalign.data.shards import ShardWriter, iter_samples, shard_paths
from vlalign.io import atomic_dir, atomic_path
from vlalign.progress import Progress


def _sample_table(folders: list[Path]) -> pd.DataFrame:
    rows = []
    for sample in iter_samples(p for folder in folders for p in shard_paths(folder)):
        rows.append({
            "key": sample.key,
            "source": sample.meta.get("source"),
            "caption": sample.caption,
            "width": sample.meta.get("width"),
            "height": sample.meta.get("height"),
            "image_sha256": hashlib.sha256(sample.image).hexdigest(),
        })  # fmt: skip
    return pd.DataFrame(rows)


def run_curate(input_folders: list[str | Path], out_dir: str | Path, config: dict, samples_per_shard: int) -> dict:
    """Measure and decide every sample; write the kept ones to `out_dir/shards/`."""
    started = time.time()
    folders = [Path(f) for f in input_folders]
    decisions = decide(measure(_sample_table(folders)), config)
    if decisions["key"].duplicated().any():
        dup = decisions.loc[decisions["key"].duplicated(), "key"].iloc[0]
        raise ValueError(f"sample key {dup!r} occurs twice in {', '.join(map(str, folders))}")
    kept = set(decisions.loc[decisions["kept"], "key"])
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        progress = Progress("curate: writing kept samples", total=len(kept))
        with ShardWriter(tmp / "shards", samples_per_shard) as writer:
            for sample in iter_samples(p for folder in folders for p in shard_paths(folder)):
                if sample.key in kept:
                    writer.write(sample)
                    progress.update(1)
        progress.close()
        with atomic_path(tmp / "decisions.parquet") as part:
            decisions.to_parquet(part, index=False)
        plot_filters(decisions, config, tmp / "filters.png")
    return summarize_decisions(decisions, seconds=time.time() - started)


def summarize_decisions(decisions: pd.DataFrame, seconds: float = 0.0) -> dict:
    summary = {"samples": int(len(decisions)), "kept": int(decisions["kept"].sum()), "seconds": round(seconds, 2)}
    summary["dropped"] = summary["samples"] - summary["kept"]
    for f in FILTERS:
        summary[f"dropped_by.{f.name}"] = int((decisions["reason"] == f.name).sum())
        summary[f"failing.{f.name}"] = int((~decisions[f"pass_{f.name}"]).sum())
    for source, group in decisions.groupby("source"):
        summary[f"kept.{source}"] = int(group["kept"].sum())
    return summary


def plot_filters(decisions: pd.DataFrame, config: dict, path: Path) -> None:
    """Histograms of each measured value with its thresholds, per source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("n_words", "caption length (words)", [config["min_words"], config["max_words"]], False),
        ("n_chars", "caption length (characters)", [config["min_chars"]], True),
        ("min_side", "image shorter side (pixels)", [config["min_side"]], True),
        ("aspect_ratio", "image aspect ratio (long / short)", [config["max_aspect_ratio"]], True),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (column, label, thresholds, log_x) in zip(axes, panels):
        for source, group in decisions.groupby("source"):
            values = group[column].astype(float)
            if log_x:
                import numpy as np

                bins = np.geomspace(max(values.min(), 1e-3), max(values.max(), 1.001), 40)
                ax.set_xscale("log")
            else:
                bins = range(0, int(values.max()) + 2)
            ax.hist(values, bins=bins, alpha=0.6, label=source)
        for t in thresholds:
            ax.axvline(t, color="black", linestyle="--", linewidth=1)
        ax.set_xlabel(label)
        ax.set_ylabel("samples")
    axes[0].legend(title="source")
    kept = int(decisions["kept"].sum())
    fig.suptitle(f"Curation: {kept} of {len(decisions)} samples kept (dashed lines: thresholds)")
    fig.tight_layout()
    with atomic_path(path) as part:
        fig.savefig(part, dpi=110, format="png")
    plt.close(fig)
