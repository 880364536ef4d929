"""SAIL's probing matrix: how alignable each vision encoder is with each text encoder, and what predicts it.

Every cell is the linear alignment probe of one (vision, text) pair, scored by retrieval R@10 (mean of both
directions). Each vision encoder also has its k-NN and linear-probe accuracy on classification sets; SAIL
finds clustering quality (k-NN) predicts alignment better than linear separability. This module joins the
cells and the vision measures into one table, computes the correlations, and draws the heat map and scatter.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from vlalign.config import eval_dataset
from vlalign.figures import pyplot, save_figure
from vlalign.io import atomic_path, write_json

ALIGNMENT = "alignment_score"
# Vision measures of each classification set, as the vision_probe stage names them.
KNN = "knn_top1_k{k}"
LINEAR = "linear_probe_top1_accuracy"


def vision_measures(knn_ks: list[int]) -> list[str]:
    return [KNN.format(k=k) for k in knn_ks] + [LINEAR]


def matrix_table(cells: list[dict], vision: dict[str, dict], dataset: str, knn_ks: list[int]) -> pd.DataFrame:
    """One row per cell: the pair, its alignment score and R@10 per direction, and the vision encoder's
    measures, per classification set (`{set}.{measure}`) and averaged over the sets (`mean.{measure}`).

    `cells`: {"image_encoder", "text_encoder", "metrics"} from each probe; `vision`: vision encoder ->
    its vision_probe metrics.
    """
    rows = []
    for cell in cells:
        metrics = cell["metrics"]
        key = f"{dataset}.{ALIGNMENT}"
        if key not in metrics:
            raise ValueError(f"probe {cell['image_encoder']}__{cell['text_encoder']}: no {key!r} in its metrics")
        row = {"image_encoder": cell["image_encoder"], "text_encoder": cell["text_encoder"],
               ALIGNMENT: metrics[key],
               "image_to_text_recall_at_10": metrics.get(f"{dataset}.image_to_text_recall_at_10", math.nan),
               "text_to_image_recall_at_10": metrics.get(f"{dataset}.text_to_image_recall_at_10", math.nan)}
        if cell["image_encoder"] not in vision:
            raise ValueError(f"no vision probe for {cell['image_encoder']!r}")
        found = vision[cell["image_encoder"]]
        for measure in vision_measures(knn_ks):
            per_set = {name: value for name, value in found.items() if name.rsplit(".", 1)[-1] == measure}
            row.update(per_set)
            row[f"mean.{measure}"] = float(np.mean(list(per_set.values()))) if per_set else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    # Average ranks for ties, then Pearson on the ranks.
    return _pearson(pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy())


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return math.nan  # two points are always perfectly correlated: say nothing
    return float(np.corrcoef(x, y)[0, 1])


def correlations(table: pd.DataFrame, knn_ks: list[int]) -> pd.DataFrame:
    """Pearson r and Spearman rho between the alignment score and each vision measure (mean over the sets),
    over the vision encoders, for each text encoder and over all cells ("all"). NaN below 3 points."""
    rows = []
    groups = [(text, part) for text, part in table.groupby("text_encoder", sort=False)] + [("all", table)]
    for measure in vision_measures(knn_ks):
        column = f"mean.{measure}"
        for text, part in groups:
            x, y = part[column].to_numpy(float), part[ALIGNMENT].to_numpy(float)
            rows.append({"measure": measure, "text_encoder": text, "points": int(np.isfinite(x).sum()),
                         "pearson": _pearson(x, y), "spearman": _spearman(x, y)})  # fmt: skip
    return pd.DataFrame(rows)


def _label(measure: str) -> str:
    if measure == LINEAR:
        return "linear-probe top-1 accuracy"
    return f"k-NN top-1 accuracy (k={measure.rsplit('k', 1)[-1]})"


def plot_heatmap(table: pd.DataFrame, image_encoders: list[str], text_encoders: list[str], path: Path) -> Path:
    """Vision encoders × text encoders, each cell's alignment score written in it."""
    plt = pyplot()
    grid = table.pivot(index="image_encoder", columns="text_encoder", values=ALIGNMENT)
    grid = grid.reindex(index=image_encoders, columns=text_encoders)
    fig, ax = plt.subplots(figsize=(2.0 + 1.6 * len(text_encoders), 1.4 + 0.6 * len(image_encoders)))
    shown = ax.imshow(grid.to_numpy(float), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(text_encoders)), text_encoders, rotation=20, ha="right")
    ax.set_yticks(range(len(image_encoders)), image_encoders)
    ax.set_xlabel("text encoder")
    ax.set_ylabel("vision encoder")
    for (i, j), value in np.ndenumerate(grid.to_numpy(float)):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="white" if value < 0.6 else "black")
    fig.colorbar(shown, ax=ax, label="retrieval R@10 (mean of I→T, T→I)")
    ax.set_title("Alignment probe (linear layers)")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_scatter(table: pd.DataFrame, found: pd.DataFrame, knn_ks: list[int], path: Path) -> Path:
    """Alignment score against each vision measure: one panel per measure, one colour per text encoder,
    each point named by its vision encoder, Pearson r / Spearman rho per text encoder in the legend."""
    plt = pyplot()
    measures = vision_measures(knn_ks)
    columns = min(3, len(measures))
    rows = math.ceil(len(measures) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.9 * rows), squeeze=False)
    for ax in axes.flat[len(measures):]:
        ax.set_axis_off()
    for ax, measure in zip(axes.flat, measures):
        for text, part in table.groupby("text_encoder", sort=False):
            stats = found[(found["measure"] == measure) & (found["text_encoder"] == text)].iloc[0]
            ax.scatter(part[f"mean.{measure}"], part[ALIGNMENT], s=36,
                       label=f"{text}: r={stats['pearson']:.2f}, ρ={stats['spearman']:.2f}")  # fmt: skip
            # Alternately above and below: encoders of one family often sit side by side.
            for index, (_, row) in enumerate(part.sort_values(f"mean.{measure}").iterrows()):
                ax.annotate(row["image_encoder"], (row[f"mean.{measure}"], row[ALIGNMENT]), fontsize=7,
                            xytext=(3, 4 if index % 2 else -10), textcoords="offset points")  # fmt: skip
        overall = found[(found["measure"] == measure) & (found["text_encoder"] == "all")].iloc[0]
        ax.set_title(f"{_label(measure)}  (all: r={overall['pearson']:.2f}, ρ={overall['spearman']:.2f})", fontsize=9)
        ax.set_xlabel(f"{_label(measure)}, mean over the sets")
        ax.set_ylabel("alignment: retrieval R@10")
        ax.legend(fontsize=7, title="text encoder", title_fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("Does the vision encoder's feature quality predict alignment?")
    fig.tight_layout()
    return save_figure(fig, path)


def write_probing_matrix(cells: list[dict], vision: dict[str, dict], settings: dict, out_dir: Path) -> dict:
    """matrix.csv, correlations.csv, probing.md, alignment_heatmap.png, alignment_vs_vision.png and
    metrics.json (flat: `{image}__{text}.alignment_score` and `corr.{measure}.{text}.{pearson|spearman}`)
    into `out_dir`; returns the flat metrics."""
    knn_ks = settings["knn_ks"]
    evaluated = eval_dataset(settings["eval_source"])
    table = matrix_table(cells, vision, evaluated, knn_ks)
    found = correlations(table, knn_ks)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "matrix.csv") as part:
        table.to_csv(part, index=False)
    with atomic_path(out_dir / "correlations.csv") as part:
        found.to_csv(part, index=False)
    plot_heatmap(table, settings["image_encoders"], settings["text_encoders"], out_dir / "alignment_heatmap.png")
    plot_scatter(table, found, knn_ks, out_dir / "alignment_vs_vision.png")
    grid = table.pivot(index="image_encoder", columns="text_encoder", values=ALIGNMENT)
    grid = grid.reindex(index=settings["image_encoders"], columns=settings["text_encoders"])
    vision_columns = [f"mean.{m}" for m in vision_measures(knn_ks)]
    per_vision = table.drop_duplicates("image_encoder").set_index("image_encoder")[vision_columns]
    per_vision = per_vision.rename(columns=lambda c: _label(c.removeprefix("mean.")))
    text = (f"# Probing matrix\n\nAlignment score: retrieval R@10 (mean of image→text and text→image) of the "
            f"linear alignment probe on {evaluated}.\n\n{grid.to_markdown(floatfmt='.3f')}\n\n"
            f"![heat map](alignment_heatmap.png)\n\n## Vision encoders (accuracy, mean over the classification "
            f"sets)\n\n{per_vision.to_markdown(floatfmt='.3f')}\n\n## Correlation with alignment\n\n"
            f"{found.to_markdown(index=False, floatfmt='.3f')}\n\n![scatter](alignment_vs_vision.png)\n")  # fmt: skip
    with atomic_path(out_dir / "probing.md") as part:
        part.write_text(text)
    metrics = {f"{r.image_encoder}__{r.text_encoder}.{ALIGNMENT}": float(r.alignment_score)
               for r in table.itertuples()}  # fmt: skip
    for r in found.itertuples():
        for kind in ("pearson", "spearman"):
            metrics[f"corr.{r.measure}.{r.text_encoder}.{kind}"] = float(getattr(r, kind))
    write_json(out_dir / "metrics.json", {"name": "probing_matrix", "metrics": metrics})
    return metrics
