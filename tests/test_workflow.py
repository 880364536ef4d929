"""The Snakemake workflow: lint, the demo DAG, refusal of a bad config, and a tiny end-to-end run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from vlalign.store.embeddings import open_embeddings

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def snakemake(*args: str, cwd: Path = REPO, timeout: int = 1500) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_lint_is_clean():
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_demo_dag_dry_run(tmp_path):
    write_config(tmp_path, demo_config())
    result = snakemake("-n", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (tmp_path / "results").exists()  # a dry run writes nothing, MLflow's store included
    # The probing matrix (3 vision x 2 text encoders) adds embeddings of the pool, the retrieval split and, for
    # the vision encoders, the zero-shot sets; each store is embedded once for every cell and run.
    # Two planted sources derive from two downloads; every pool is audited; four runs under three seeds.
    assert job_counts(result.stdout) == {"download": 6, "measure_samples": 2, "measure": 1, "select": 4,
                                         "curated_shards": 8, "score_alignment": 1, "convert": 3,
                                         "convert_partition": 2, "gather_pool_table": 1, "semdedup": 1, "embed": 16,
                                         "train": 12, "probe": 6, "vision_probe": 3, "probe_matrix": 1,
                                         "evaluate": 12, "audit": 4, "report": 1, "all": 1, "total": 85}  # fmt: skip


def job_counts(dry_run_output: str) -> dict[str, int]:
    """The job-stats table of a dry run: rule name -> number of jobs."""
    jobs = {}
    for line in dry_run_output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and not parts[0].endswith(":"):
            jobs[parts[0]] = int(parts[1])
    return jobs


def test_embed_scatters_into_parts_and_gathers(tmp_path):
    config = demo_config()
    config["embed"]["parts"] = 3
    write_config(tmp_path, config)
    result = snakemake("-n", "--quiet", "rules", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    counts = job_counts(result.stdout)
    # Sixteen stores (see the dry run above), each in three parts, then one gather per store.
    assert (counts["embed_part"], counts["gather_embeddings"]) == (48, 16) and "embed" not in counts


def test_multi_gpu_training_runs_through_torchrun(tmp_path):
    config = demo_config()
    config["train"]["gpus"] = 4
    write_config(tmp_path, config)
    result = snakemake("-n", "-p", "--resources", "gpu=4", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    commands = [line for line in result.stdout.splitlines() if " train --settings" in line]
    assert len(commands) == 12  # four runs under three seeds
    assert all("torchrun --standalone --nproc_per_node 4 -m vlalign.cli train" in c for c in commands)


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))


def demo_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_bad_config_is_refused_before_any_job(tmp_path):
    config = demo_config()
    config["train"]["defaults"]["epochs"] = "many"
    write_config(tmp_path, config)
    result = snakemake("--cores", "1", cwd=tmp_path)
    assert result.returncode != 0
    assert "train.defaults.epochs" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def tiny_config(deb_cache: Path) -> dict:
    config = demo_config()
    config["experiment"] = "vlalign-test"
    config["deb_cache"] = str(deb_cache)
    config["samples_per_shard"] = 16
    config["sources"]["fashion_mnist"]["per_class"] = 3
    config["sources"]["shapes"]["scenes"] = 24
    config["encoders"]["efficientnet_lite0"]["batch_size"] = 16
    # A 2 x 2 probing matrix with the random-weight controls (the demo's EfficientNet-Lite1 costs time here).
    config["encoders"]["random_lite0"]["batch_size"] = 16
    config["probe"]["image_encoders"] = ["efficientnet_lite0", "random_lite0"]
    config["embed"]["num_workers"] = 1
    config["convert"]["num_workers"] = 1
    # The fixture's shapes differ only in colour, which pHash ignores: compare bytes only.
    config["curate"]["filters"]["dedup"]["near"] = False
    config["curate"]["filters"]["decontaminate"]["near"] = False
    config["curate"]["filters"]["balance"]["cap"] = 5
    config["train"]["defaults"].update(width_factor=1, target_dim=32, batch_size=16, samples_seen=128, lr=1e-3,
                                       val_fraction=0.25)  # fmt: skip
    config["train"]["runs"]["negatives"] = {"pool": "basic", "hard_negatives": True}
    # Tux Paint samples carry their category in their metadata: a second caption set to train on.
    config["captions"] = {"extra": ["category"]}
    config["train"]["runs"]["multi"] = {"pool": "basic", "multi_positive": True}
    # Every run under two seeds: the report's means and intervals over seeds, MLflow's group runs.
    config["train"]["seeds"] = [0, 1]
    return config


@pytest.mark.workflow
def test_end_to_end_on_tiny_fixture(deb_cache, tmp_path):
    write_config(tmp_path, tiny_config(deb_cache))
    result = snakemake("--cores", "2", "--resources", "gpu=1", cwd=tmp_path)
    results = tmp_path / "results" / "vlalign-test"  # {results_dir}/{experiment}
    logs = "\n".join(f"== {p}\n{p.read_text()[-3000:]}" for p in sorted((results / "logs").rglob("*.log")))
    assert result.returncode == 0, result.stderr[-5000:] + logs

    summary = (results / "report" / "summary.md").read_text()
    assert "probe:efficientnet_lite0__minilm_l6" in summary
    table = pd.read_csv(results / "report" / "summary.csv", index_col=0)
    runs = {"raw", "basic", "aligned", "balanced", "negatives", "multi"}
    cells = {f"probe:{i}__{t}" for i in ("efficientnet_lite0", "random_lite0") for t in ("minilm_l6", "random_minilm")}
    assert set(table.index) == runs | cells
    assert table["eval_tuxpaint.image_to_text_recall_at_1"].between(0, 1).all()
    assert "eval_fashion_mnist.zeroshot_top1_accuracy" in table.columns
    assert table.loc[sorted(runs), "eval_shapes.caption_selection_accuracy"].between(0, 1).all()
    assert table.loc[sorted(runs), "eval_shapes.winoground_group_score"].between(0, 1).all()
    for path in ("train/basic/seed-0/model.safetensors", "train/basic/seed-1/model.json", "train/basic/seed-0/curves.png",
                 "curate/measurements.parquet", "curate/pools/aligned/decisions.parquet",
                 "curate/alignment/basic.parquet", "beton/pool/planted_tuxpaint/part-0000.beton", "beton/pool.parquet",
                 "download/tuxpaint/part-0000/manifest.parquet", "download/planted_tuxpaint/part-0000/planted.parquet",
                 "curate/measured/planted_tuxpaint/part-0000.parquet", "curate/audit/balanced/audit.png",
                 "curate/shards/basic/planted_tuxpaint/part-0000/shard-000000.tar", "report/comparisons.csv"):  # fmt: skip
        assert (results / path).stat().st_size > 0, path
    # The bootstrap: the `basic` run's aligner scored the pool, and `aligned` dropped its worst pairs.
    basic = pd.read_parquet(results / "curate/pools/basic/decisions.parquet")
    aligned = pd.read_parquet(results / "curate/pools/aligned/decisions.parquet")
    assert set(aligned.loc[aligned.kept, "key"]) < set(basic.loc[basic.kept, "key"])
    assert (aligned.reason == "alignment").sum() > 0
    scores = pd.read_parquet(results / "curate/alignment/basic.parquet")
    assert set(scores.key) >= set(basic.key) - set(basic.loc[~basic.pass_image, "key"])
    vision = json.loads((results / "probe" / "vision" / "efficientnet_lite0.json").read_text())["metrics"]
    assert 0 <= vision["eval_fashion_mnist.knn_top1_k10"] <= 1
    assert 0 <= vision["eval_fashion_mnist.linear_probe_top1_accuracy"] <= 1
    matrix = pd.read_csv(results / "probe" / "matrix" / "matrix.csv")
    assert len(matrix) == 4 and matrix["alignment_score"].between(0, 1).all()
    assert matrix["mean.knn_top1_k10"].between(0, 1).all()
    # The controls' embeddings really differ from the trained encoders' (same architecture, re-drawn weights).
    trained = open_embeddings(results / "embeddings" / "pool" / "efficientnet_lite0").to_numpy()
    control = open_embeddings(results / "embeddings" / "pool" / "random_lite0").to_numpy()
    assert trained.shape == control.shape and not np.allclose(trained, control)
    report_html = (results / "report" / "report.html").read_text()
    for section in ("Training curves", "Curation effect", "Probing matrix"):
        assert f"<h2>{section}</h2>" in report_html
    # Comparison, curves, curation, an audit per pool, heat map, scatter.
    assert report_html.count("data:image/png;base64,") == 9
    # The sweep's pools differ one from the next, and the planted noise is found: every exact copy is caught.
    kept = [set(pd.read_parquet(results / f"curate/pools/{pool}/decisions.parquet").query("kept").key)
            for pool in ("raw", "basic", "aligned", "balanced")]  # fmt: skip
    assert all(a != b for a, b in zip(kept, kept[1:]))
    audit = json.loads((results / "curate/audit/basic/audit.json").read_text())
    assert audit["samples"]["exact_copy"] > 0 and audit["recall"]["exact_copy"]["recall"] == 1.0
    assert 0 <= audit["alignment"]["auc"] <= 1
    for bench in ("download/tuxpaint.part-0000.tsv", "embed/pool/efficientnet_lite0.tsv", "train/basic/seed-1.tsv"):
        assert (results / "benchmarks" / bench).exists()

    client = mlflow.MlflowClient(f"sqlite:///{results.parent / 'mlflow.db'}")  # one store for every experiment
    runs = client.search_runs([client.get_experiment_by_name("vlalign-test").experiment_id], max_results=1000)
    by_rule = pd.Series([r.data.tags["rule"] for r in runs]).value_counts().to_dict()
    assert by_rule == {"download": 6, "audit": 4, "measure_samples": 2, "measure": 1, "select": 4, "curated_shards": 8, "score": 1,
                       "semdedup": 1, "convert": 5, "embed": 15,
                       "negatives": 1, "train": 12, "group": 6, "probe": 4, "vision_probe": 2, "probe_matrix": 1,
                       "evaluate": 12, "report": 1, "snakemake": 1}  # fmt: skip
    # The invocation's run groups every rule run of it; a run's trainings under its seeds are grouped under one
    # run of the configuration, itself under the invocation's.
    (parent,) = [r for r in runs if r.data.tags["rule"] == "snakemake"]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["rule_runs"] == parent.data.metrics["rule_runs_finished"] == len(runs) - 1 - 6
    groups = {r.info.run_id: r for r in runs if r.data.tags["rule"] == "group"}
    assert all(r.data.tags["workflow_run"] == parent.info.run_name for r in runs if r is not parent)
    for r in runs:
        if r.data.tags["rule"] == "train":
            group = groups[r.data.tags["mlflow.parentRunId"]]
            assert group.info.run_name == f"train {r.data.tags['wildcard.run']}"
            assert group.data.tags["mlflow.parentRunId"] == parent.info.run_id
        elif r is not parent and r.info.run_id not in groups:
            assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
    categories = open_embeddings(results / "embeddings" / "pool_captions" / "category" / "minilm_l6")
    assert categories.meta["source"].endswith("#category")
    pool_keys = set(open_embeddings(results / "embeddings" / "pool" / "minilm_l6").keys)
    assert 0 < len(categories) and set(categories.keys) <= pool_keys
    # The hard-negative run read the rule-made captions' embeddings.
    negatives = pd.read_parquet(results / "negatives" / "pool.parquet")
    assert len(negatives) > 0 and set(negatives["rule"]) <= {"swap_attributes", "swap_colour", "change_count",
                                                             "flip_relation"}  # fmt: skip
    assert json.loads((results / "train" / "negatives" / "seed-0" / "model.json").read_text())["train"]["hard_negatives"]
    seeds = [json.loads((results / "train" / "basic" / f"seed-{s}" / "model.json").read_text())["train"]["seed"]
             for s in (0, 1)]  # fmt: skip
    assert seeds == [0, 1]
    assert all(r.info.status == "FINISHED" for r in runs)
    train_run = next(r for r in runs if r.data.tags["rule"] == "train" and r.data.tags["wildcard.run"] == "basic"
                     and r.data.tags["wildcard.seed"] == "1")  # fmt: skip
    assert "eval_tuxpaint.mean_recall_at_10" in train_run.data.metrics  # evaluation logged onto its model's run
    assert client.get_metric_history(train_run.info.run_id, "loss")
    # What a model was trained on, as MLflow datasets; the model itself, and the evaluation that read it.
    basic = client.get_run(train_run.info.run_id)
    assert [i.dataset.name for i in basic.inputs.dataset_inputs] == [
        "curate/pools/basic/decisions.parquet", "embeddings/pool/efficientnet_lite0", "embeddings/pool/minilm_l6"]
    assert {t.value for i in basic.inputs.dataset_inputs for t in i.tags} == {"training"}
    (model,) = basic.outputs.model_outputs
    evaluation = next(r for r in runs if r.data.tags["rule"] == "evaluate" and r.data.tags["wildcard.run"] == "basic"
                      and r.data.tags["wildcard.seed"] == "1")  # fmt: skip
    assert [m.model_id for m in client.get_run(evaluation.info.run_id).inputs.model_inputs] == [model.model_id]
    embed = next(r for r in runs if r.info.run_name == "embed-pool-efficientnet_lite0")
    # The pool is converted per download partition (one each here); embed read each partition's .beton.
    convert = next(r for r in runs if r.info.run_name == "convert-pool-planted_tuxpaint-0000")
    beton = next(i.dataset for i in client.get_run(embed.info.run_id).inputs.dataset_inputs
                 if i.dataset.name == "beton/pool/planted_tuxpaint/part-0000.beton")  # fmt: skip
    assert beton.digest == convert.data.tags["output.beton.fingerprint"]

    # Snakemake's HTML report registers the figures and the results table.
    report = snakemake("--report", "report.html", cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    html = (tmp_path / "report.html").read_text()
    assert all(name in html for name in ("curves.png", "summary.md", "alignment_heatmap.png", "alignment_vs_vision.png",
                                         "training_curves.png", "curation_effect.png"))  # fmt: skip

    # Nothing to do on a second invocation: outputs are complete and up to date.
    again = snakemake("--cores", "2", "--resources", "gpu=1", "-n", cwd=tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr
    # A dry run opens no invocation run.
    assert len(client.search_runs([parent.info.experiment_id], "tags.rule = 'snakemake'")) == 1
