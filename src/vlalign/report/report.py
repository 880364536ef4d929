"""The comparison report over every run of the workflow, as markdown and as one self-contained HTML page.

Sections: the headline table and bars (each run's mean over its seeds with a 95 % interval), the paired
comparison of each run with its baseline, every model × every metric, the training curves of all runs, the
curation effect (when the runs trained on different curated pools), and the probing matrix. summary.csv holds
every metric of every model with its interval and its seeds' range, comparisons.csv every paired comparison.

Intervals come from the outcome of every evaluation item (per_sample.parquet beside each metrics.json). A run's
interval is the percentile bootstrap over items of its seed-averaged item outcomes: the items are the same for
every seed, so averaging them first and resampling items gives the uncertainty of the evaluation set's draw
for these trained models; the training's own variation is the seeds' range, shown beside it. A comparison
resamples the same items for the run and its baseline (the paired bootstrap of the per-item differences of the
seed-averaged outcomes). Models without item outcomes (the probes) have no interval: "—".
"""

from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from vlalign.evaluate.bootstrap import excludes_zero, paired_difference, percentile_interval
from vlalign.evaluate.evaluation import PER_SAMPLE_NAME
from vlalign.io import atomic_path
from vlalign.report.plots import metric_label, plot_comparison, plot_curation_effect, plot_runs_training_curves
from vlalign.schema import default

# The headline metrics of each evaluation set, in this order, where the set has them.
HEADLINE = (
    "image_to_text_recall_at_1",
    "text_to_image_recall_at_1",
    "mean_recall_at_10",
    "zeroshot_top1_accuracy",
    "caption_selection_accuracy",
    "winoground_group_score",
)
NO_INTERVAL = "—"


@dataclass
class Section:
    title: str
    text: str = ""  # markdown; image links in it name files of `figures`
    table: pd.DataFrame | None = None
    figure: Path | None = None
    figures: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    """One metrics.json: a model's metrics under one seed (None for a probe), and its item outcomes' file
    (None when there is none beside it)."""

    path: Path
    name: str
    seed: int | None
    metrics: dict[str, float]
    per_sample: Path | None


@dataclass(frozen=True)
class Summary:
    """Every model's metrics over its seeds, as model × metric tables: the mean over seeds, the 95 % interval
    over items of the seed-averaged outcomes (NaN without item outcomes) and the seeds' lowest and highest."""

    mean: pd.DataFrame
    low: pd.DataFrame
    high: pd.DataFrame
    seed_min: pd.DataFrame
    seed_max: pd.DataFrame
    seeds: pd.Series  # model -> number of seeds


def read_evaluations(metrics_files: list[Path]) -> list[Evaluation]:
    evaluations = []
    for path in map(Path, metrics_files):
        data = json.loads(path.read_text())
        per_sample = path.with_name(PER_SAMPLE_NAME)
        evaluations.append(Evaluation(path, data["name"], data.get("seed"), data["metrics"],
                                      per_sample if per_sample.exists() else None))  # fmt: skip
    return evaluations


def check_seeds(evaluations: list[Evaluation], seeds: dict[str, list[int]]) -> None:
    """Refuse a report whose evaluations are not exactly each run's configured seeds: a mean over some of them
    would pass for the mean over all."""
    for run, wanted in seeds.items():
        found = sorted(e.seed for e in evaluations if e.name == run and e.seed is not None)
        if found != sorted(wanted):
            files = [str(e.path) for e in evaluations if e.name == run]
            raise ValueError(f"run {run!r} is configured with seeds {sorted(wanted)} but evaluated under {found} "
                             f"({', '.join(files) or 'no metrics.json'}); a metrics.json without a seed is from "
                             "before seeds: re-run its evaluation")  # fmt: skip


def seed_averaged_outcomes(evaluations: list[Evaluation]) -> dict[str, dict[str, pd.Series]]:
    """model -> metric -> its item outcomes averaged over the model's seeds (indexed by item, in the first seed's
    order), for every metric that all of the model's seeds have outcomes of; no entry for a model with a seed
    without per_sample.parquet."""
    by_model: dict[str, list[Evaluation]] = {}
    for evaluation in evaluations:
        by_model.setdefault(evaluation.name, []).append(evaluation)
    averaged = {}
    for model, runs in by_model.items():
        if any(e.per_sample is None for e in runs):
            continue
        per_seed = [_outcomes_by_metric(e.per_sample) for e in runs]
        shared = [m for m in per_seed[0] if all(m in outcomes for outcomes in per_seed)]
        averaged[model] = {}
        for metric in shared:
            first = per_seed[0][metric]
            for evaluation, outcomes in zip(runs[1:], per_seed[1:]):
                if not first.index.sort_values().equals(outcomes[metric].index.sort_values()):
                    raise ValueError(f"{evaluation.per_sample}: the items of {metric} differ from those of "
                                     f"{runs[0].per_sample}; the seeds of {model!r} were not evaluated "
                                     "alike")  # fmt: skip
            averaged[model][metric] = sum((o[metric].reindex(first.index) for o in per_seed[1:]), first) / len(runs)
    return averaged


def _outcomes_by_metric(path: Path) -> dict[str, pd.Series]:
    table = pd.read_parquet(path, columns=["metric", "item", "value"])
    if table.duplicated(["metric", "item"]).any():
        raise ValueError(f"{path}: an item appears twice under one metric")
    return {str(metric): rows.set_index("item")["value"] for metric, rows in table.groupby("metric", sort=False)}


def summarise(evaluations: list[Evaluation], outcomes: dict[str, dict[str, pd.Series]], resamples: int) -> Summary:
    per_seed = pd.DataFrame([{"model": e.name, **e.metrics} for e in evaluations]).set_index("model")
    grouped = per_seed.groupby(level="model", sort=False)  # models in the order given: the config's
    mean = grouped.mean().sort_index(axis=1)
    low, high = (pd.DataFrame(np.nan, index=mean.index, columns=mean.columns) for _ in range(2))
    for model, by_metric in outcomes.items():
        for metric, values in by_metric.items():
            if len(values):
                low.loc[model, metric], high.loc[model, metric] = percentile_interval(values.to_numpy(), resamples)
    return Summary(mean, low, high, grouped.min().reindex_like(mean), grouped.max().reindex_like(mean),
                   grouped.size())  # fmt: skip


def compare(outcomes: dict[str, dict[str, pd.Series]], baselines: dict[str, str | None],
            resamples: int) -> pd.DataFrame:  # fmt: skip
    """Every run against its baseline on every metric both have item outcomes of: the difference (run −
    baseline) of their seed-averaged outcomes, its paired bootstrap interval and whether that excludes 0."""
    rows = []
    for run, by_metric in outcomes.items():
        baseline = baselines.get(run)
        if baseline is None or baseline not in outcomes:
            continue
        for metric, values in by_metric.items():
            if metric not in outcomes[baseline] or not len(values):
                continue
            reference = outcomes[baseline][metric]
            if not values.index.sort_values().equals(reference.index.sort_values()):
                raise ValueError(f"{metric}: runs {run!r} and {baseline!r} were not evaluated on the same items")
            difference, low, high = paired_difference(values.to_numpy(), reference.reindex(values.index).to_numpy(),
                                                      resamples)  # fmt: skip
            rows.append({"run": run, "baseline": baseline, "metric": metric, "difference": difference,
                         "ci_low": low, "ci_high": high, "significant": excludes_zero(low, high)})  # fmt: skip
    columns = ["run", "baseline", "metric", "difference", "ci_low", "ci_high", "significant"]
    return pd.DataFrame(rows, columns=columns)


def summary_table(summary: Summary) -> pd.DataFrame:
    """summary.csv: per model its number of seeds, and per metric the mean over seeds, `_ci_low`/`_ci_high`
    (where some model has item outcomes of it) and `_seed_min`/`_seed_max` (where some model has several seeds)."""
    several = bool((summary.seeds > 1).any())
    columns = {"seeds": summary.seeds}
    for metric in summary.mean.columns:
        columns[metric] = summary.mean[metric]
        if summary.low[metric].notna().any():
            columns[f"{metric}_ci_low"], columns[f"{metric}_ci_high"] = summary.low[metric], summary.high[metric]
        if several:
            columns[f"{metric}_seed_min"], columns[f"{metric}_seed_max"] = (summary.seed_min[metric],
                                                                            summary.seed_max[metric])  # fmt: skip
    return pd.DataFrame(columns)


def headline_metrics(columns: list[str]) -> list[str]:
    """train_pairs, then each evaluation set's (`{dataset}.{metric}`) HEADLINE metrics, the sets in name order; every
    column when none is there."""
    datasets = dict.fromkeys(column.split(".", 1)[0] for column in columns if "." in column)
    chosen = [name for dataset in datasets for metric in HEADLINE if (name := f"{dataset}.{metric}") in columns]
    return (["train_pairs"] if "train_pairs" in columns else []) + chosen if chosen else list(columns)


def _headline_cell(summary: Summary, model: str, metric: str) -> str:
    """`mean [low, high] (lowest–highest seed)`; counts as integers."""
    mean = summary.mean.loc[model, metric]
    if pd.isna(mean):
        return ""
    if metric == "train_pairs":
        return f"{mean:,.0f}"
    low, high = summary.low.loc[model, metric], summary.high.loc[model, metric]
    cell = f"{mean:.3f} " + (f"[{low:.3f}, {high:.3f}]" if pd.notna(low) else NO_INTERVAL)
    if summary.seeds[model] > 1:
        cell += f" ({summary.seed_min.loc[model, metric]:.3f}–{summary.seed_max.loc[model, metric]:.3f})"
    return cell


def headline_table(summary: Summary, headline: list[str]) -> pd.DataFrame:
    table = pd.DataFrame({metric_label(m): [_headline_cell(summary, model, m) for model in summary.mean.index]
                          for m in headline}, index=summary.mean.index)  # fmt: skip
    table.insert(0, "seeds", summary.seeds)
    return table


def comparisons_table(comparisons: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """One row per run: its baseline and, per metric, `difference [low, high]`, `*` where the interval excludes 0."""
    shown = comparisons[comparisons["metric"].isin(metrics)]
    cells = {}
    for row in shown.itertuples():
        mark = " *" if row.significant else ""
        cells.setdefault(row.run, {"baseline": row.baseline})[metric_label(row.metric)] = (
            f"{row.difference:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]{mark}")  # fmt: skip
    table = pd.DataFrame.from_dict(cells, orient="index")
    table.index.name = "run"
    return table.reindex(columns=["baseline", *(metric_label(m) for m in metrics)]).fillna("")


def write_report(metrics_files: list[Path], out_dir: Path, train_dirs: dict[str, dict[int, Path]] | None = None,
                 run_pools: dict[str, str] | None = None, pool_dirs: dict[str, Path] | None = None,
                 probing_dir: Path | None = None, seeds: dict[str, list[int]] | None = None,
                 baselines: dict[str, str | None] | None = None, resamples: int | None = None,
                 audit_dirs: list[Path] | None = None) -> str:  # fmt: skip
    """Write summary.csv, comparisons.csv, summary.md, report.html and the figures into `out_dir`; return the
    headline table.

    `metrics_files`: the metrics.json of every (run, seed) evaluation (per_sample.parquet beside each) and of
    every probe; `train_dirs`: run -> seed -> its training folder (curves.csv); `run_pools`: run -> the curated
    pool it trained on; `pool_dirs`: pool -> its folder (decisions.parquet); `probing_dir`: the probe_matrix
    output; `seeds`: run -> the seeds it must have been evaluated under; `baselines`: run -> the run it is compared
    with (None: none); `resamples`: of every bootstrap (default: the schema's `evaluate.bootstrap_resamples`);
    `audit_dirs`: the pools' planted-truth audits (curate/audit/{pool}).
    """
    resamples = default("evaluate.bootstrap_resamples") if resamples is None else resamples
    evaluations = read_evaluations(metrics_files)
    if seeds:
        check_seeds(evaluations, seeds)
    outcomes = seed_averaged_outcomes(evaluations)
    summary = summarise(evaluations, outcomes, resamples)
    comparisons = compare(outcomes, baselines or {}, resamples)
    table = summary.mean
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "summary.csv") as part:
        summary_table(summary).to_csv(part)
    with atomic_path(out_dir / "comparisons.csv") as part:
        comparisons.to_csv(part, index=False)
    headline = headline_metrics(list(table.columns))
    short = headline_table(summary, headline)
    # The probe cells have their own figures (probing matrix): the bars compare the trained runs.
    runs = [m for m in table.index if not str(m).startswith("probe:")]
    bars = [m for m in headline if m != "train_pairs"]
    figure = plot_comparison(table.loc[runs, bars], summary.low.loc[runs, bars], summary.high.loc[runs, bars],
                             table.loc[runs].get("train_pairs"), out_dir / "comparison.png")  # fmt: skip
    sections = [Section("Headline", HEADLINE_TEXT.format(resamples=resamples), table=short, figure=figure)]
    if not comparisons.empty:
        sections.append(Section("Paired comparisons", COMPARISONS_TEXT.format(resamples=resamples),
                                table=comparisons_table(comparisons, bars)))  # fmt: skip
    sections.append(Section("Every model × every metric", "Means over each model's seeds.", table=table.T))
    if train_dirs:
        curves = {run: {seed: pd.read_csv(Path(folder) / "curves.csv") for seed, folder in sorted(folders.items())}
                  for run, folders in train_dirs.items()}  # fmt: skip
        sections.append(Section("Training curves", "Loss of every training run, each seed of a run in its colour; "
                                "the curves of each, with its logit scale, bias and learning rate, are in "
                                "results/train/{run}/seed-{seed}/curves.png.",
                                figure=plot_runs_training_curves(curves, out_dir / "training_curves.png")))  # fmt: skip
    if run_pools and pool_dirs and set(run_pools.values()) & set(pool_dirs):
        sections.append(_curation_section(table, headline, run_pools, pool_dirs, out_dir))
    if audit_dirs:
        sections.append(_audit_section([Path(folder) for folder in audit_dirs]))
    if probing_dir is not None:
        sections.append(_probing_section(Path(probing_dir)))
    title = "vlalign results"
    with atomic_path(out_dir / "summary.md") as part:
        part.write_text(_markdown(title, sections, out_dir))
    with atomic_path(out_dir / "report.html") as part:
        part.write_text(_html(title, sections))
    return short.to_markdown()


HEADLINE_TEXT = (
    "Each cell: the mean over the run's seeds; in brackets its 95 % interval, the percentile bootstrap "
    "({resamples} resamples) over the evaluation items of the item outcomes averaged over the seeds (the "
    "uncertainty of the evaluation set's draw); in parentheses, with several seeds, the lowest and highest of "
    "the seeds' own values (the training's variation). " + NO_INTERVAL + ": no item outcomes (probes)."
)
COMPARISONS_TEXT = (
    "Each run against its baseline: the difference run − baseline of the seed-averaged item outcomes, and in "
    "brackets its 95 % paired bootstrap interval ({resamples} resamples of the same items for both runs); "
    "* where the interval excludes 0. Of many comparisons where nothing differs, about 1 in 20 is marked by "
    "chance. Every metric's comparison is in comparisons.csv."
)


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


AUDIT_TEXT = (
    "Planted truth (sources of type `planted`): the share of each kind of planted noise that each pool's "
    "filters remove, with 95 % bootstrap intervals over the planted samples; the alignment filter's ROC AUC "
    "separates shuffled captions from clean ones by its run's score. Each pool's own tables (what every filter "
    "removed of each kind, and of the clean samples) are in `curate/audit/{pool}/audit.md`."
)


def _rate(entry: dict | None) -> str:
    """`rate [low, high] (n)`, or why there is none."""
    if not entry or entry.get("recall") is None:
        return "—"
    low, high = entry.get("interval") or (None, None)
    interval = f" [{low:.2f}, {high:.2f}]" if low is not None else ""
    return f"{entry['recall']:.2f}{interval} (n={entry['n']})"


def _audit_section(folders: list[Path]) -> Section:
    """Every pool's planted-truth audit (curate/audit/{pool}/audit.json) in one table, and its figure."""
    rows, figures = {}, {}
    for folder in folders:
        audit = json.loads((folder / "audit.json").read_text())
        row = {f"recall {kind}": _rate(entry) for kind, entry in audit["recall"].items()}
        alignment = audit["alignment"]
        row["alignment AUC"] = f"{alignment['auc']:.3f}" if alignment.get("auc") is not None else "—"
        row["alignment precision"] = (f"{alignment['precision']:.2f}" if alignment.get("precision") is not None
                                      else "—")  # fmt: skip
        rows[audit["pool"]] = row
        figures[f"audit_{audit['pool']}.png"] = folder / "audit.png"
    # The table, then each pool's figure: one markdown text, which the HTML renders alike.
    table = pd.DataFrame.from_dict(rows, orient="index").T.to_markdown()
    links = "\n\n".join(f"![audit of {name[6:-4]}]({name})" for name in figures)
    return Section("Curation audit", text=f"{AUDIT_TEXT}\n\n{table}\n\n{links}", figures=figures)


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
