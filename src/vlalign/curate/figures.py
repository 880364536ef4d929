"""Curation report figures: measured values with thresholds, concept balance, kept and dropped examples."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from vlalign.curate.decide import resolve_filter
from vlalign.curate.filters import FILTERS
from vlalign.data.images import decode_rgb
from vlalign.data.shards import folder_shards, iter_samples
from vlalign.figures import pyplot, save_figure

FLAGS = [
    ("boilerplate", lambda d: d["boilerplate"].notna()),
    ("URL-like", lambda d: d["url_like"].astype(bool)),
    ("not UTF-8", lambda d: d["non_utf8"].astype(bool)),
    ("undecodable", lambda d: ~d["decode_ok"].astype(bool)),
    ("exact duplicate", lambda d: d["duplicate_of"].notna()),
    ("near duplicate", lambda d: d["near_duplicate_of"].notna()),
    ("matches eval image", lambda d: d["contaminates"].notna()),
]


def _plain_log_axis(axis, decades: float) -> None:
    """Log-scale ticks written as plain numbers (20, not 2x10^1): at 1, 2, 5, 10, ... over
    a narrow range, at powers of ten over a wide one, where more labels would overlap."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _decades(values) -> float:
    positive = np.asarray(values, dtype=float)
    positive = positive[positive > 0]
    return float(np.log10(positive.max() / positive.min())) if len(positive) else 0.0


def _bins(values: pd.Series, scale: str) -> np.ndarray:
    if scale == "int":
        return np.arange(values.min() - 0.5, values.max() + 1.5)
    if scale == "unit":
        return np.linspace(0, 1, 21)
    if scale == "log":
        low = max(values[values > 0].min() if (values > 0).any() else 1e-3, 1e-3)
        return np.geomspace(low, max(values.max(), low * 1.01), 40)
    return np.linspace(values.min(), max(values.max(), values.min() + 1e-6), 40)


def _thresholds(filters: list[dict]) -> dict[tuple[str, str], float]:
    found = {}
    for spec in map(resolve_filter, filters):
        if spec["enabled"]:
            found.update({(spec["name"], k): v for k, v in spec.items() if isinstance(v, (int, float))
                          and not isinstance(v, bool) and v is not None})  # fmt: skip
    return found


def _alignment_cut(decisions: pd.DataFrame, filters: list[dict]) -> float | None:
    """The lowest score a top_fraction alignment filter kept: its threshold in effect."""
    if "pass_alignment" not in decisions or not any(f["name"] == "alignment" for f in filters):
        return None
    passed = decisions.loc[decisions["pass_alignment"].fillna(False).astype(bool), "alignment_score"]
    return float(passed.min()) if len(passed) else None


def plot_measurements(decisions: pd.DataFrame, filters: list[dict], path: Path) -> None:
    """One histogram per measured number, stacked by source, kept samples outlined; thresholds dashed."""
    plt = pyplot()
    thresholds = _thresholds(filters)
    if (cut := _alignment_cut(decisions, filters)) is not None:
        thresholds[("alignment", "min_score")] = cut
    panels = [(f.name, p) for f in FILTERS.values() for p in f.panels
              if p.column in decisions and decisions[p.column].notna().any()]
    n = len(panels) + 2
    cols = 4
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.5 * rows))
    axes = axes.ravel()
    sources = sorted(decisions["source"].dropna().unique())
    for ax, (filter_name, panel) in zip(axes, panels):
        column, scale = panel.column, panel.scale
        values = decisions[column].astype(float)
        present = values.dropna()
        bins = _bins(present, scale)
        if scale == "log":
            ax.set_xscale("log")
            _plain_log_axis(ax.xaxis, _decades(bins))
        stacks = [values[decisions["source"] == s].dropna() for s in sources]
        ax.hist(stacks, bins=bins, stacked=True, label=sources, alpha=0.75)
        ax.hist(values[decisions["kept"]].dropna(), bins=bins, histtype="step", color="black", linewidth=1.2,
                label="kept")  # fmt: skip
        # Thresholds beyond the data (max_words = 77 over captions of 1 to 10 words) are
        # named in the title rather than stretching the axis until the data is unreadable.
        beyond = []
        for key in panel.thresholds:
            if (filter_name, key) in thresholds:
                setting = thresholds[(filter_name, key)]
                value = panel.at(setting) if panel.at else setting
                if bins[0] <= value <= bins[-1]:
                    # On integers the line goes between the last failing and first passing value.
                    shift = (0.5 if key.startswith("max") else -0.5) if scale == "int" else 0.0
                    ax.axvline(value + shift, color="red", linestyle="--", linewidth=1.2)
                else:
                    beyond.append(f"{key} = {setting:g}")
        ax.set_xlabel(panel.label)
        ax.set_ylabel("samples")
        ax.set_title(f"{column} ({len(present)} measured)" + (f"; off the axis: {', '.join(beyond)}" if beyond else ""),
                     fontsize=9)  # fmt: skip
    _plot_languages(axes[len(panels)], decisions)
    _plot_flags(axes[len(panels) + 1], decisions)
    for ax in axes[n:]:
        ax.axis("off")
    handles, labels = axes[0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], color="red", linestyle="--"))
    labels.append("threshold of an enabled filter")
    fig.legend(handles, labels, loc="upper right", ncol=len(labels), title="source / kept")
    kept = int(decisions["kept"].sum())
    fig.suptitle(f"Curation measurements: {kept} of {len(decisions)} samples kept", x=0.01, ha="left", fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    save_figure(fig, path, dpi=100)


def _plot_languages(ax, decisions: pd.DataFrame) -> None:
    counts = decisions["language"].fillna("none").value_counts().head(12)
    kept = decisions.loc[decisions["kept"], "language"].fillna("none").value_counts().reindex(counts.index).fillna(0)
    y = np.arange(len(counts))
    ax.barh(y, counts.to_numpy(), color="lightgray", label="all")
    ax.barh(y, kept.to_numpy(), color="black", height=0.4, label="kept")
    ax.set_yticks(y, counts.index)
    ax.invert_yaxis()
    ax.set_xlabel("samples")
    ax.set_title("caption language (top 12)", fontsize=9)
    ax.legend(fontsize=8)


def _plot_flags(ax, decisions: pd.DataFrame) -> None:
    names = [name for name, _ in FLAGS]
    counts = [int(flag(decisions).sum()) for _, flag in FLAGS]
    kept = [int((flag(decisions) & decisions["kept"]).sum()) for _, flag in FLAGS]
    y = np.arange(len(names))
    ax.barh(y, counts, color="lightgray", label="all")
    ax.barh(y, kept, color="black", height=0.4, label="kept")
    for yi, c in zip(y, counts):
        ax.text(c, yi, f" {c}", va="center", fontsize=8)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("samples")
    ax.set_title("flags measured per sample", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")


def _entry_counts(concepts: pd.Series) -> pd.Series:
    return pd.Series([e for entries in concepts for e in entries], dtype=object).value_counts()


def plot_concepts(decisions: pd.DataFrame, filters: list[dict], path: Path, top: int = 40) -> None:
    """Samples per concept entry: all, reaching the balance filter, and kept; the cap as a line."""
    plt = pyplot()
    balance = next((resolve_filter(f) for f in filters if f["name"] == "balance"), None)
    balanced = balance is not None and balance["enabled"] and "pass_balance" in decisions
    groups = {"pool": decisions["concepts"]}
    if balanced:
        groups["before balancing"] = decisions.loc[decisions["pass_balance"].notna(), "concepts"]
    groups["kept" + (" (after balancing)" if balanced else "")] = decisions.loc[decisions["kept"], "concepts"]
    counts = {name: _entry_counts(c) for name, c in groups.items()}
    order = counts[list(counts)[1 if balanced else 0]].index[:top]
    fig, (bars, tail) = plt.subplots(1, 2, figsize=(17, 5.5), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / len(counts)
    x = np.arange(len(order))
    for i, (name, c) in enumerate(counts.items()):
        bars.bar(x + (i - (len(counts) - 1) / 2) * width, c.reindex(order).fillna(0).to_numpy(), width, label=name)
        # Drawn wider first, so that a later line lying on an earlier one leaves it visible.
        tail.plot(np.arange(1, len(c) + 1), c.to_numpy(), drawstyle="steps-post", label=name,
                  linewidth=4 - 1.2 * i, alpha=0.85)  # fmt: skip
    if balanced:
        for ax in (bars, tail):
            ax.axhline(balance["cap"], color="red", linestyle="--", linewidth=1.2, label=f"cap t = {balance['cap']}")
    bars.set_xticks(x, order, rotation=70, ha="right", fontsize=8)
    bars.set_yscale("log")
    bars.set_ylim(bottom=0.7)  # bars of one sample stay visible on the log axis
    bars.set_ylabel("samples matching the entry")
    bars.set_title(f"the {len(order)} most frequent concept entries", fontsize=10)
    bars.legend(fontsize=8)
    tail.set_xscale("log")
    tail.set_yscale("log")
    for axis, extent in ((bars.yaxis, bars.get_ylim()), (tail.xaxis, tail.get_xlim()), (tail.yaxis, tail.get_ylim())):
        _plain_log_axis(axis, _decades(extent))
    tail.set_xlabel("entry rank")
    tail.set_ylabel("samples matching the entry")
    tail.set_title("all entries, by rank", fontsize=10)
    tail.legend(fontsize=8)
    unmatched = int((decisions["concepts"].map(len) == 0).sum())
    title = "Concept balancing (MetaCLIP)" if balanced else "Concept entries (balancing not applied)"
    fig.suptitle(f"{title}: {unmatched} of {len(decisions)} captions match no entry", x=0.01, ha="left")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def _example_keys(decisions: pd.DataFrame, kept: int, dropped: int) -> list[str]:
    """Evenly spread kept samples, then dropped ones taking each reason in turn."""
    keys = list(decisions.loc[decisions["kept"], "key"])
    chosen = [keys[i] for i in np.linspace(0, len(keys) - 1, min(kept, len(keys))).astype(int)] if keys else []
    by_reason = [list(g["key"]) for _, g in decisions[~decisions["kept"]].groupby("reason", sort=True)]
    taken = 0
    while taken < dropped and any(by_reason):
        for group in by_reason:
            if group and taken < dropped:
                chosen.append(group.pop(len(group) // 2))
                taken += 1
    return chosen


def _repeated(row: pd.Series, captions: pd.Series) -> str:
    """For a sample a de-duplication filter dropped, a line naming the kept one it repeats, so the example shows
    what the filter took for a copy."""
    found = FILTERS.get(row["reason"])
    column = found.repeats if found else None
    if not column or pd.isna(row.get(column)):
        return ""
    return f"\nrepeats: {textwrap.shorten(str(captions.get(row[column], row[column])), 34, placeholder='...')}"


def plot_examples(decisions: pd.DataFrame, shard_folders: list[Path], path: Path, kept: int = 8,
                  dropped: int = 16) -> None:  # fmt: skip
    """A grid of kept and dropped images with their captions and drop reasons."""
    plt = pyplot()
    keys = _example_keys(decisions, kept, dropped)
    rows = decisions.set_index("key").loc[keys]
    captions = decisions.set_index("key")["caption"]
    wanted = set(keys)
    images = {}
    for sample in iter_samples(folder_shards(shard_folders)):
        if sample.key in wanted:
            images[sample.key] = sample.image
    cols = 6
    n_rows = max(1, -(-len(keys) // cols))
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.1 * cols, 3.5 * n_rows))
    for ax in np.ravel(axes)[len(keys):]:
        ax.axis("off")
    for ax, key in zip(np.ravel(axes), keys):
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():  # a frame, so that a blank image still shows its cell
            spine.set_color("lightgray")
        row = rows.loc[key]
        try:
            ax.imshow(decode_rgb(images[key]))
        except Exception:  # an undecodable image is one of the examples worth showing
            ax.text(0.5, 0.5, "image does not decode" if key in images else "image not in the shards",
                    ha="center", va="center", color="red", transform=ax.transAxes)  # fmt: skip
        caption = textwrap.shorten(str(row["caption"]), 70, placeholder="...")
        verdict = "kept" if row["kept"] else f"dropped: {row['reason']}" + (
            f" ({row['reason_detail']})" if row["reason_detail"] else "")  # fmt: skip
        if pd.notna(row["width"]):  # small images are shown enlarged: say how small
            verdict += f" [{row['width']:.0f}x{row['height']:.0f} px]"
        verdict += _repeated(row, captions)
        ax.set_title("\n".join(textwrap.wrap(caption, 34)[:2]) + f"\n{verdict}", fontsize=8,
                     color="darkgreen" if row["kept"] else "darkred")  # fmt: skip
    fig.suptitle(f"Examples: {min(kept, int(decisions['kept'].sum()))} kept (green), dropped ones by reason (red)",
                 x=0.01, ha="left")  # fmt: skip
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
