"""The report's figures: every run's training curves, the curation effect; how metric columns are labelled."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vlalign.figures import pyplot, save_figure


def metric_label(column: str, separator: str = " ") -> str:
    """A metric column as a short label: `eval_x.mean_recall_at_10` -> `eval_x mean R@10`."""
    return column.replace("_recall_at_", " R@").replace(".", separator)


def plot_runs_training_curves(curves: dict[str, pd.DataFrame], path: Path) -> Path:
    """Every run's training loss per step (a moving average over 1/20 of its steps, the raw values faint)
    and validation loss per epoch, one colour per run: the runs of a sweep compared at a glance."""
    plt = pyplot()
    fig, (train_ax, val_ax) = plt.subplots(1, 2, figsize=(12, 4))
    for index, (run, frame) in enumerate(curves.items()):
        colour = f"C{index % 10}"
        steps = frame.dropna(subset=["loss"])
        window = max(1, len(steps) // 20)
        train_ax.plot(steps["step"], steps["loss"], color=colour, alpha=0.2, linewidth=0.8)
        train_ax.plot(steps["step"], steps["loss"].rolling(window, min_periods=1).mean(), color=colour, label=run)
        if "val_loss" in frame:
            val = frame.dropna(subset=["val_loss"])
            val_ax.plot(val["step"], val["val_loss"], "o-", color=colour, markersize=3, label=run)
    train_ax.set(xlabel="step", ylabel="loss", title="training loss (per step, moving average)")
    val_ax.set(xlabel="step", ylabel="loss", title="validation loss (per epoch)")
    for ax in (train_ax, val_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="run")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_curation_effect(fates: dict[str, dict[str, int]], scores: pd.DataFrame, path: Path) -> Path:
    """Left: each pool's samples, kept or dropped and by which filter (the first that failed). Right: the
    headline scores of the run trained on each pool, in pool order, training pairs in the tick labels.

    `fates`: pool -> {"kept": n, filter name: samples it dropped}; `scores`: one row per pool (index), the
    metrics as columns, plus "train_pairs"."""
    plt = pyplot()
    pools = list(fates)
    filters = list(dict.fromkeys(name for fate in fates.values() for name in fate if name != "kept"))
    colours = {name: f"C{(index + 3) % 10}" for index, name in enumerate(filters)}
    fig, (fate_ax, score_ax) = plt.subplots(1, 2, figsize=(13, 2.6 + 0.55 * max(len(pools), 4)),
                                            gridspec_kw={"width_ratios": [1.2, 1]})  # fmt: skip
    for row, pool in enumerate(pools):
        left = 0
        for name in ["kept", *filters]:
            width = fates[pool].get(name, 0)
            label = None if row else ("kept" if name == "kept" else f"dropped by {name}")
            fate_ax.barh(row, width, left=left, color="tab:green" if name == "kept" else colours[name], label=label)
            left += width
    fate_ax.set_yticks(range(len(pools)), pools)
    fate_ax.invert_yaxis()
    fate_ax.set(xlabel="samples of the pool", title="what each curated pool keeps")
    fate_ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.18), ncol=3)
    ordered = scores.reindex(pools)
    for metric in (c for c in scores.columns if c != "train_pairs"):
        score_ax.plot(range(len(pools)), ordered[metric].to_numpy(float), "o-",
                      label=metric_label(metric))  # fmt: skip
    labels = [f"{pool}\n{int(fates[pool].get('kept', 0)):,} kept" for pool in pools]
    score_ax.set_xticks(range(len(pools)), labels, fontsize=8)
    score_ax.set(ylabel="score (fraction)", ylim=(0, 1), title="the run trained on each pool")
    score_ax.grid(alpha=0.3)
    score_ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.22), ncol=2)
    fig.tight_layout()
    return save_figure(fig, path)
