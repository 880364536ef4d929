"""The comparison report over every run of the workflow, as markdown and as one self-contained HTML page.

Sections: the headline table and bars, every model × every metric, the training curves of all runs, the
curation effect (when the runs trained on different curated pools), and the probing matrix. summary.csv
holds every metric of every model for other tools.
"""

from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from vlalign.figures import pyplot, save_figure
from vlalign.report.plots import metric_label, plot_curation_effect, plot_runs_training_curves
from vlalign.io import atomic_path

# Columns shown in the headline table, in this order, when present.
HEADLINE = [
    "train_pairs",
    "eval_tuxpaint.image_to_text_recall_at_1",
    "eval_tuxpaint.text_to_image_recall_at_1",
    "eval_tuxpaint.mean_recall_at_10",
    "eval_tuxpaint.zeroshot_top1_accuracy",
    "eval_fashion_mnist.zeroshot_top1_accuracy",
    "eval_shapes.caption_selection_accuracy",
    "eval_shapes.winoground_group_score",
]


@dataclass
class Section:
    title: str
    text: str = ""  # markdown; image links in it name files of `figures`
    table: pd.DataFrame | None = None
    figure: Path | None = None
    figures: dict[str, Path] = field(default_factory=dict)


def collect(metrics_files: list[Path]) -> pd.DataFrame:
    rows = []
    for path in metrics_files:
        data = json.loads(Path(path).read_text())
        rows.append({"model": data["name"], **data["metrics"]})
    return pd.DataFrame(rows).set_index("model").sort_index(axis=1)


def write_report(metrics_files: list[Path], out_dir: Path, train_dirs: dict[str, Path] | None = None,
                 run_pools: dict[str, str] | None = None, pool_dirs: dict[str, Path] | None = None,
                 probing_dir: Path | None = None) -> str:  # fmt: skip
    """Write summary.csv, summary.md, report.html and the figures into `out_dir`; return the headline table.

    `train_dirs`: run -> its training folder (curves.csv); `run_pools`: run -> the curated pool it trained on;
    `pool_dirs`: pool -> its folder (decisions.parquet); `probing_dir`: the probe_matrix output.
    """
    table = collect(metrics_files)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "summary.csv") as part:
        table.to_csv(part)
    headline = [c for c in HEADLINE if c in table.columns] or list(table.columns)
    short = table[headline].rename(columns=metric_label)
    # The probe cells have their own figures (probing matrix): the bars compare the trained runs.
    runs = table.loc[[m for m in table.index if not str(m).startswith("probe:")]]
    sections = [Section("Headline", table=short, figure=plot_comparison(runs, out_dir / "comparison.png"))]
    sections.append(Section("Every model × every metric", table=table.T))
    if train_dirs:
        curves = {run: pd.read_csv(Path(folder) / "curves.csv") for run, folder in train_dirs.items()}
        sections.append(Section("Training curves", "Loss of every training run; the curves of each run, with "
                                "its logit scale, bias and learning rate, are in results/train/{run}/curves.png.",
                                figure=plot_runs_training_curves(curves, out_dir / "training_curves.png")))
    if run_pools and pool_dirs and set(run_pools.values()) & set(pool_dirs):
        sections.append(_curation_section(table, headline, run_pools, pool_dirs, out_dir))
    if probing_dir is not None:
        sections.append(_probing_section(Path(probing_dir)))
    title = "vlalign results"
    with atomic_path(out_dir / "summary.md") as part:
        part.write_text(_markdown(title, sections, out_dir))
    with atomic_path(out_dir / "report.html") as part:
        part.write_text(_html(title, sections))
    return short.to_markdown(floatfmt=".3f")


def _curation_section(table: pd.DataFrame, headline: list[str], run_pools: dict[str, str],
                      pool_dirs: dict[str, Path], out_dir: Path) -> Section:  # fmt: skip
    """Each pool's fate counts next to the scores of the run trained on it."""
    fates = {}
    for pool, folder in pool_dirs.items():
        decisions = pd.read_parquet(Path(folder) / "decisions.parquet", columns=["kept", "reason"])
        dropped = decisions.loc[~decisions["kept"], "reason"].value_counts()
        fates[pool] = {"kept": int(decisions["kept"].sum()), **{str(k): int(v) for k, v in dropped.items()}}
    # In the configured pool order (run_pools arrives sorted by run name).
    runs_of = {pool: run for run, pool in run_pools.items() if run in table.index}
    by_pool = {pool: runs_of[pool] for pool in fates if pool in runs_of}
    scores = table.loc[list(by_pool.values()), [c for c in headline if c in table.columns]]
    scores.index = list(by_pool)
    fates = {pool: fates[pool] for pool in by_pool}
    figure = plot_curation_effect(fates, scores, out_dir / "curation_effect.png")
    counts = pd.DataFrame(fates).T.fillna(0).astype(int)
    counts.index.name = "pool"
    joined = counts.join(scores.drop(columns="train_pairs", errors="ignore").rename(columns=metric_label))
    return Section("Curation effect", "Samples each curated pool keeps and drops (by the first filter that failed), "
                   "and the scores of the run trained on it.", table=joined, figure=figure)  # fmt: skip


def _probing_section(folder: Path) -> Section:
    """The probing matrix's own markdown (tables and image links), under the report's heading."""
    text = (folder / "probing.md").read_text().split("\n", 2)[-1]  # drop its title
    figures = {name: folder / name for name in ("alignment_heatmap.png", "alignment_vs_vision.png")}
    return Section("Probing matrix", text=text, figures=figures)


def _markdown(title: str, sections: list[Section], out_dir: Path) -> str:
    parts = [f"# {title}"]
    for section in sections:
        parts.append(f"## {section.title}")
        text = section.text
        for name, path in section.figures.items():
            text = text.replace(f"({name})", f"({_relative(path, out_dir)})")
        if text:
            parts.append(text.strip())
        if section.table is not None:
            parts.append(section.table.to_markdown(floatfmt=".3f"))
        if section.figure is not None:
            parts.append(f"![{section.title}]({_relative(section.figure, out_dir)})")
    return "\n\n".join(parts) + "\n"


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(Path(path).resolve(), Path(start).resolve())


def _image_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _markdown_to_html(text: str, figures: dict[str, Path]) -> str:
    """The small markdown subset the probing section writes: headings, pipe tables, image lines, paragraphs."""
    out = []
    for block in text.strip().split("\n\n"):
        lines = block.strip().splitlines()
        if not lines:
            continue
        if lines[0].startswith("#"):
            level = min(len(lines[0]) - len(lines[0].lstrip("#")) + 1, 4)
            out.append(f"<h{level}>{html.escape(lines[0].lstrip('#').strip())}</h{level}>")
        elif lines[0].startswith("!["):
            name = lines[0].split("(", 1)[1].rstrip(")")
            out.append(_image_tag(figures[name], name) if name in figures else "")
        elif lines[0].startswith("|"):
            rows = [[cell.strip() for cell in line.strip("|").split("|")]
                    for line in lines if not set(line) <= set("|:- ")]  # the |---| rule is no row
            head, body = rows[0], rows[1:]
            out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
                       + "</table>")  # fmt: skip
        else:
            out.append(f"<p>{html.escape(' '.join(lines))}</p>")
    return "\n".join(out)


STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:1em 0}
section{overflow-x:auto}"""


def _html(title: str, sections: list[Section]) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]  # fmt: skip
    for section in sections:
        parts.append(f"<section><h2>{html.escape(section.title)}</h2>")
        if section.text:
            parts.append(_markdown_to_html(section.text, section.figures))
        if section.table is not None:
            parts.append(section.table.to_html(float_format=lambda v: f"{v:.3f}", na_rep="–", border=0))
        if section.figure is not None:
            parts.append(_image_tag(section.figure, section.title))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def plot_comparison(table: pd.DataFrame, path: Path) -> Path | None:
    """Grouped bars of the headline metrics per model, pool sizes in the legend."""
    metrics = [c for c in HEADLINE if c in table.columns and c != "train_pairs"]
    if not metrics or table.empty:
        return None
    import numpy as np

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(2.2 * len(metrics) + 3, 4.2))
    width = 0.8 / len(table)
    for i, (model, row) in enumerate(table.iterrows()):
        pairs = row.get("train_pairs")
        label = f"{model} ({int(pairs):,} pairs)" if pd.notna(pairs) else model
        ax.bar(np.arange(len(metrics)) + i * width, row[metrics].fillna(0).to_numpy(float), width, label=label)
    ax.set_xticks(np.arange(len(metrics)) + width * (len(table) - 1) / 2)
    ax.set_xticklabels([metric_label(m, "\n") for m in metrics], fontsize=8)
    ax.set_ylabel("score (fraction)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, title="model (training pool)")
    ax.set_title("Evaluation of every trained run")
    fig.tight_layout()
    return save_figure(fig, path)
