"""The report's figures: the headline bars with their intervals, every run's training curves, the curation effect;
how metric columns are labelled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vlalign.figures import pyplot, save_figure


def metric_label(column: str, separator: str = " ") -> str:
    """A metric column as a short label: `eval_x.mean_recall_at_10` -> `eval_x mean R@10`."""
    return column.replace("_recall_at_", " R@").replace(".", separator)


def plot_comparison(mean: pd.DataFrame, low: pd.DataFrame, high: pd.DataFrame, train_pairs: pd.Series | None,
                    path: Path) -> Path | None:  # fmt: skip
    """Grouped bars of the metrics (columns) per model (rows), each bar's 95 % interval as an error bar (none where
    `low`/`high`, shaped like `mean`, are NaN), pool sizes in the legend; None when there is nothing to draw."""
    if mean.empty or mean.columns.empty:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(2.2 * len(mean.columns) + 3, 4.2))
    width = 0.8 / len(mean)
    positions = np.arange(len(mean.columns))
    for i, model in enumerate(mean.index):
        heights = mean.loc[model].fillna(0).to_numpy(float)
        # matplotlib leaves out the error bar of a NaN extent: a model without item outcomes has bars only.
        # A percentile interval need not hold the mean (a skewed metric on few items); matplotlib refuses a
        # negative extent.
        extent = np.clip([heights - low.loc[model].to_numpy(float), high.loc[model].to_numpy(float) - heights], 0, None)
        pairs = train_pairs.get(model) if train_pairs is not None else None
        label = f"{model} ({int(pairs):,} pairs)" if pairs is not None and pd.notna(pairs) else model
        ax.bar(positions + i * width, heights, width, yerr=extent, capsize=2, error_kw={"linewidth": 0.8},
               label=label)  # fmt: skip
    ax.set_xticks(positions + width * (len(mean) - 1) / 2)
    ax.set_xticklabels([metric_label(m, "\n") for m in mean.columns], fontsize=8)
    ax.set_ylabel("score (fraction), 95 % interval")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, title="model (training pool)")
    ax.set_title("Evaluation of every trained run (mean over seeds)")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_runs_training_curves(curves: dict[str, dict[int, pd.DataFrame]], path: Path) -> Path:
    """Every run's training loss per step (a moving average over 1/20 of its steps, the raw values faint)
    and validation loss per epoch, one colour per run (`curves`: run -> seed -> its curves), each of its seeds
    drawn alike: the runs of a sweep, and the spread of each over its seeds, compared at a glance."""
    plt = pyplot()
    fig, (train_ax, val_ax) = plt.subplots(1, 2, figsize=(12, 4))
    for index, (run, by_seed) in enumerate(curves.items()):
        colour = f"C{index % 10}"
        label = run if len(by_seed) == 1 else f"{run} ({len(by_seed)} seeds)"
        for order, frame in enumerate(by_seed.values()):
            named = {"label": label} if order == 0 else {}
            steps = frame.dropna(subset=["loss"])
            window = max(1, len(steps) // 20)
            train_ax.plot(steps["step"], steps["loss"], color=colour, alpha=0.2, linewidth=0.8)
            train_ax.plot(steps["step"], steps["loss"].rolling(window, min_periods=1).mean(), color=colour, **named)
            if "val_loss" in frame:
                val = frame.dropna(subset=["val_loss"])
                val_ax.plot(val["step"], val["val_loss"], "o-", color=colour, markersize=3, **named)
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
