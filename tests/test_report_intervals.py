"""The report over runs × seeds: each run's mean over its seeds with a bootstrap interval over its seed-averaged
item outcomes, the paired comparison with its baseline, the training curves of every seed; built from hand-made
metrics.json and per_sample.parquet files as `vlalign evaluate` writes them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vlalign.cli import main
from vlalign.evaluate.bootstrap import paired_difference, percentile_interval
from vlalign.report.report import headline_metrics, write_report
from vlalign.report.report_stage import settings as report_settings
from vlalign.report.report_stage import train_folders

I2T, T2I, WINO = ("eval_tuxpaint.image_to_text_recall_at_1", "eval_tuxpaint.text_to_image_recall_at_1",
                  "eval_shapes.winoground_group_score")  # fmt: skip
KEYS = [f"k{i:03d}" for i in range(165)]
PAIRS = [f"p{i}" for i in range(40)]
RESAMPLES = 500


def outcomes(run: str, seed: int) -> dict[str, np.ndarray]:
    """raw: Bernoulli(0.3) hits per seed; basic: raw's image→text misses turned hits 40 % of the time (a planted
    gain), the very same text→image and Winoground outcomes (no difference at all)."""
    rng = np.random.default_rng(seed)
    raw = {I2T: rng.random(len(KEYS)) < 0.3, T2I: rng.random(len(KEYS)) < 0.3, WINO: rng.random(len(PAIRS)) < 0.2}
    if run == "basic":
        raw[I2T] = raw[I2T] | (np.random.default_rng(100 + seed).random(len(KEYS)) < 0.4)
    return {metric: hits.astype(float) for metric, hits in raw.items()}


def write_evaluation(folder: Path, run: str, seed: int | None, found: dict[str, np.ndarray],
                     extra: dict | None = None) -> Path:  # fmt: skip
    folder.mkdir(parents=True)
    items = {I2T: KEYS, T2I: KEYS, WINO: PAIRS}
    pd.concat([pd.DataFrame({"metric": m, "item": items[m], "value": v}) for m, v in found.items()]).to_parquet(
        folder / "per_sample.parquet", index=False)
    metrics = {**{m: float(np.mean(v)) for m, v in found.items()}, **(extra or {})}
    intervals = {m: list(percentile_interval(v, RESAMPLES)) for m, v in found.items()}
    (folder / "metrics.json").write_text(json.dumps({"name": run, "seed": seed, "metrics": metrics,
                                                     "intervals": intervals}))  # fmt: skip
    return folder / "metrics.json"


@pytest.fixture
def sweep(tmp_path):
    """Two runs × two seeds evaluated and trained, and one probe (a metrics.json without item outcomes)."""
    files, train = [], []
    for run, pairs in (("raw", 200.0), ("basic", 150.0)):
        for seed in (0, 1):
            files.append(write_evaluation(tmp_path / "evaluate" / run / f"seed-{seed}", run, seed,
                                          outcomes(run, seed), {"train_pairs": pairs}))  # fmt: skip
            folder = tmp_path / "train" / run / f"seed-{seed}"
            folder.mkdir(parents=True)
            steps = np.arange(1, 21)
            pd.DataFrame({"step": steps, "loss": 2 / steps + 0.1 * seed,
                          "val_loss": np.where(steps % 10 == 0, 1 / steps, np.nan)}).to_csv(folder / "curves.csv")
            train.append(folder)
    probe = tmp_path / "probe" / "a__b" / "metrics.json"
    probe.parent.mkdir(parents=True)
    probe.write_text(json.dumps({"name": "probe:a__b", "metrics": {I2T: 0.5, "train_pairs": 90.0}}))
    return {"files": [*files, probe], "train": train, "root": tmp_path}


def seed_averaged(run: str, metric: str) -> np.ndarray:
    return (outcomes(run, 0)[metric] + outcomes(run, 1)[metric]) / 2


def report(sweep, **options) -> tuple[str, Path]:
    out = sweep["root"] / "report"
    table = write_report(sweep["files"], out, train_dirs=train_folders([str(p) for p in sweep["train"]]),
                         seeds={"raw": [0, 1], "basic": [0, 1]}, baselines={"raw": None, "basic": "raw"},
                         resamples=RESAMPLES, **options)  # fmt: skip
    return table, out


def test_summary_holds_each_runs_mean_over_seeds_its_interval_and_its_seeds_range(sweep):
    _, out = report(sweep)
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    assert summary["seeds"].to_dict() == {"basic": 2, "probe:a__b": 1, "raw": 2}
    for run in ("raw", "basic"):
        per_seed = [outcomes(run, seed)[I2T].mean() for seed in (0, 1)]
        row = summary.loc[run]
        assert row[I2T] == pytest.approx(np.mean(per_seed))
        assert (row[f"{I2T}_seed_min"], row[f"{I2T}_seed_max"]) == (min(per_seed), max(per_seed))
        # The interval is the bootstrap over items of the seed-averaged outcomes.
        assert (row[f"{I2T}_ci_low"], row[f"{I2T}_ci_high"]) == percentile_interval(seed_averaged(run, I2T), RESAMPLES)
        assert row[f"{I2T}_ci_low"] < row[I2T] < row[f"{I2T}_ci_high"]
        assert row["train_pairs"] in (200, 150) and "train_pairs_ci_low" not in summary.columns
    # The probe has no item outcomes: a mean, no interval.
    assert summary.loc["probe:a__b", I2T] == 0.5 and np.isnan(summary.loc["probe:a__b", f"{I2T}_ci_low"])


def test_each_run_is_compared_with_its_baseline_on_the_same_resampled_items(sweep):
    _, out = report(sweep)
    comparisons = pd.read_csv(out / "comparisons.csv").set_index(["run", "metric"])
    assert set(comparisons.index) == {("basic", I2T), ("basic", T2I), ("basic", WINO)}  # raw is the reference
    gain = comparisons.loc[("basic", I2T)]
    expected = paired_difference(seed_averaged("basic", I2T), seed_averaged("raw", I2T), RESAMPLES)
    assert (gain["difference"], gain["ci_low"], gain["ci_high"]) == pytest.approx(expected)
    assert gain["baseline"] == "raw" and gain["ci_low"] > 0 and gain["significant"]
    # Identical outcomes: a difference of exactly 0, with an interval of [0, 0], not significant.
    same = comparisons.loc[("basic", T2I)]
    assert (same["difference"], same["ci_low"], same["ci_high"], same["significant"]) == (0, 0, 0, False)


def test_the_markdown_and_html_show_intervals_marks_and_dashes(sweep):
    table, out = report(sweep)
    markdown = (out / "summary.md").read_text()
    assert "## Paired comparisons" in markdown and markdown.index("## Headline") < markdown.index("## Paired")
    summary = pd.read_csv(out / "summary.csv", index_col=0).loc["raw"]
    cell = (f"{summary[I2T]:.3f} [{summary[f'{I2T}_ci_low']:.3f}, {summary[f'{I2T}_ci_high']:.3f}] "
            f"({summary[f'{I2T}_seed_min']:.3f}–{summary[f'{I2T}_seed_max']:.3f})")  # fmt: skip
    assert cell in table and cell in markdown
    assert "0.500 —" in table  # the probe: no interval
    basic = next(line for line in markdown.splitlines() if line.startswith("| basic ") and " raw " in line)
    assert "| +0.000 [+0.000, +0.000] " in basic and " *" in basic  # t2i unchanged, i2t significantly better
    html = (out / "report.html").read_text()
    assert "Paired comparisons" in html and "0.500 —" in html
    for figure in ("comparison.png", "training_curves.png"):
        assert (out / figure).stat().st_size > 10_000


def test_one_seed_gives_the_interval_its_evaluation_wrote(tmp_path):
    path = write_evaluation(tmp_path / "evaluate" / "raw" / "seed-4", "raw", 4, outcomes("raw", 4))
    write_report([path], tmp_path / "report", seeds={"raw": [4]}, resamples=RESAMPLES)
    summary = pd.read_csv(tmp_path / "report" / "summary.csv", index_col=0).loc["raw"]
    written = json.loads(path.read_text())["intervals"]
    for metric in (I2T, T2I, WINO):
        assert [summary[f"{metric}_ci_low"], summary[f"{metric}_ci_high"]] == written[metric]
    assert "_seed_min" not in "".join(pd.read_csv(tmp_path / "report" / "summary.csv").columns)
    assert not (tmp_path / "report" / "comparisons.csv").read_text().strip().count("\n")  # a header, no rows


def test_a_missing_seed_or_items_that_differ_are_refused_naming_the_files(sweep):
    with pytest.raises(ValueError, match=r"run 'basic' is configured with seeds \[0, 1, 2\] but evaluated under "
                                         r"\[0, 1\].*evaluate/basic/seed-0/metrics.json"):  # fmt: skip
        write_report(sweep["files"], sweep["root"] / "report", seeds={"basic": [0, 1, 2]}, resamples=RESAMPLES)
    per_sample = sweep["root"] / "evaluate" / "raw" / "seed-1" / "per_sample.parquet"
    table = pd.read_parquet(per_sample)
    table.loc[table["item"] == "k000", "item"] = "other"
    table.to_parquet(per_sample, index=False)
    with pytest.raises(ValueError, match=f"{per_sample}: the items of {I2T} differ"):
        report(sweep)


def test_the_report_command_reads_seed_folders(sweep, tmp_path):
    out = tmp_path / "out"
    settings = {"experiment": "e", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "run_pools": {"raw": "raw", "basic": "basic"}, "seeds": {"raw": [0, 1], "basic": [0, 1]},
                "baselines": {"raw": None, "basic": "raw"}, "bootstrap_resamples": RESAMPLES}  # fmt: skip
    assert main(["report", "--settings", json.dumps(settings), "--metrics", *map(str, sweep["files"]),
                 "--runs", *map(str, sweep["train"]), "--out", str(out)]) == 0  # fmt: skip
    assert {"summary.md", "summary.csv", "comparisons.csv", "report.html", "comparison.png",
            "training_curves.png"} <= {p.name for p in out.iterdir()}  # fmt: skip
    with pytest.raises(ValueError, match="train/{run}/seed-{seed}"):
        train_folders([str(tmp_path / "train" / "raw")])


def test_the_report_settings_carry_every_runs_seeds_and_baseline():
    from vlalign.config import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "config" / "config.yaml")
    found = report_settings(config)
    runs = list(config["train"]["runs"])
    assert list(found["seeds"]) == list(found["baselines"]) == runs
    assert all(found["seeds"][run] for run in runs) and found["baselines"][runs[0]] is None
    assert found["bootstrap_resamples"] == config["evaluate"]["bootstrap_resamples"]


def test_the_headline_takes_each_evaluation_sets_headline_metrics():
    columns = ["train_pairs", "eval_coco.image_to_text_recall_at_1", "eval_coco.image_to_text_recall_at_5",
               "eval_coco.text_to_image_recall_at_1", "eval_coco.mean_recall_at_10",
               "eval_imagenet.zeroshot_top1_accuracy",
               "eval_imagenet.zeroshot_top5_accuracy", "eval_imagenet.zeroshot_chance"]  # fmt: skip
    assert headline_metrics(columns) == ["train_pairs", "eval_coco.image_to_text_recall_at_1",
                                         "eval_coco.text_to_image_recall_at_1", "eval_coco.mean_recall_at_10",
                                         "eval_imagenet.zeroshot_top1_accuracy"]  # fmt: skip
    assert headline_metrics(["eval_x.other", "train_pairs"]) == ["eval_x.other", "train_pairs"]


def test_the_pools_planted_truth_audits_are_a_section_with_their_figures(sweep):
    _, plain = report(sweep)
    images = (plain / "report.html").read_text().count("data:image/png;base64,")
    audits = []
    for pool, recall in (("raw", None), ("basic", 0.75)):
        folder = sweep["root"] / "curate" / "audit" / pool
        folder.mkdir(parents=True)
        entry = {"n": 40, "recall": recall, "interval": [0.6, 0.875] if recall is not None else None}
        (folder / "audit.json").write_text(json.dumps({
            "pool": pool, "recall": {"exact_copy": entry, "eval_copy": {**entry, "n": 8}},
            "alignment": {"auc": 0.851, "precision": None}}))  # fmt: skip
        (folder / "audit.png").write_bytes((plain / "comparison.png").read_bytes())
        audits.append(folder)
    table, out = report(sweep, audit_dirs=audits)
    markdown = (out / "summary.md").read_text()
    section = markdown.split("## Curation audit", 1)[1]
    assert "| recall exact_copy" in section and "0.75 [0.60, 0.88] (n=40)" in section and "| 0.851 " in section
    assert "![audit of raw](../curate/audit/raw/audit.png)" in section
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == images + 2
