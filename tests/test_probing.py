"""The probing matrix: table, correlations against hand computations, figures, and the stage command."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vlalign.probe.matrix import correlations, matrix_table, write_probing_matrix

KS = [10, 20]
IMAGES = ["good", "fair", "random"]
TEXTS = ["minilm", "random_text"]
# Vision measures per encoder and classification set: k-NN at each k and linear probe.
VISION = {
    "good": {"eval_a.knn_top1_k10": 0.9, "eval_a.knn_top1_k20": 0.8, "eval_a.linear_probe_top1_accuracy": 0.7,
             "eval_b.knn_top1_k10": 0.7, "eval_b.knn_top1_k20": 0.6, "eval_b.linear_probe_top1_accuracy": 0.5},
    "fair": {"eval_a.knn_top1_k10": 0.6, "eval_a.knn_top1_k20": 0.6, "eval_a.linear_probe_top1_accuracy": 0.8,
             "eval_b.knn_top1_k10": 0.4, "eval_b.knn_top1_k20": 0.4, "eval_b.linear_probe_top1_accuracy": 0.6},
    "random": {"eval_a.knn_top1_k10": 0.2, "eval_a.knn_top1_k20": 0.2, "eval_a.linear_probe_top1_accuracy": 0.3,
               "eval_b.knn_top1_k10": 0.2, "eval_b.knn_top1_k20": 0.2, "eval_b.linear_probe_top1_accuracy": 0.3},
}  # fmt: skip
ALIGNMENT = {("good", "minilm"): 0.6, ("fair", "minilm"): 0.5, ("random", "minilm"): 0.1,
             ("good", "random_text"): 0.2, ("fair", "random_text"): 0.25, ("random", "random_text"): 0.05}  # fmt: skip


def _cells() -> list[dict]:
    return [{"image_encoder": i, "text_encoder": t,
             "metrics": {"eval_tux.alignment_score": ALIGNMENT[i, t], "eval_tux.image_to_text_recall_at_10": 0.5,
                         "eval_tux.text_to_image_recall_at_10": 0.4}}
            for i in IMAGES for t in TEXTS]  # fmt: skip


def test_matrix_table_joins_cells_and_vision_measures():
    table = matrix_table(_cells(), VISION, "eval_tux", KS)
    assert len(table) == 6
    good = table[(table.image_encoder == "good") & (table.text_encoder == "minilm")].iloc[0]
    assert good["alignment_score"] == 0.6
    assert good["eval_a.knn_top1_k10"] == 0.9
    assert good["mean.knn_top1_k10"] == pytest.approx(0.8)
    assert good["mean.linear_probe_top1_accuracy"] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="no vision probe for 'good'"):
        matrix_table(_cells(), {k: v for k, v in VISION.items() if k != "good"}, "eval_tux", KS)
    with pytest.raises(ValueError, match="eval_other.alignment_score"):
        matrix_table(_cells(), VISION, "eval_other", KS)


def _hand_pearson(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    dx, dy = x - x.mean(), y - y.mean()
    return float((dx * dy).sum() / math.sqrt((dx**2).sum() * (dy**2).sum()))


def test_correlations_match_hand_computation_with_ties():
    table = matrix_table(_cells(), VISION, "eval_tux", KS)
    found = correlations(table, KS).set_index(["measure", "text_encoder"])
    # k-NN k=10 means: good 0.8, fair 0.5, random 0.2; alignment with minilm 0.6, 0.5, 0.1.
    row = found.loc[("knn_top1_k10", "minilm")]
    assert row["points"] == 3
    assert row["pearson"] == pytest.approx(_hand_pearson([0.8, 0.5, 0.2], [0.6, 0.5, 0.1]))
    assert row["spearman"] == pytest.approx(1.0)
    # Linear probe means: good 0.6, fair 0.7, random 0.3: rank order differs from alignment's.
    row = found.loc[("linear_probe_top1_accuracy", "minilm")]
    assert row["spearman"] == pytest.approx(_hand_pearson([2, 3, 1], [3, 2, 1]))  # = 0.5
    # k-NN k=20 means: good 0.7, fair 0.5, random 0.2, over all six cells; alignment ties broken by nothing.
    row = found.loc[("knn_top1_k20", "all")]
    x = [0.7, 0.7, 0.5, 0.5, 0.2, 0.2]
    y = [0.6, 0.2, 0.5, 0.25, 0.1, 0.05]
    assert row["points"] == 6
    assert row["pearson"] == pytest.approx(_hand_pearson(x, y))
    # Tied x values get their average rank (1.5, 3.5, 5.5 from the bottom).
    assert row["spearman"] == pytest.approx(_hand_pearson([5.5, 5.5, 3.5, 3.5, 1.5, 1.5], [6, 3, 5, 4, 2, 1]))


def test_correlations_need_three_points():
    table = matrix_table([c for c in _cells() if c["image_encoder"] != "random"], VISION, "eval_tux", KS)
    found = correlations(table, KS)
    assert found[found.text_encoder != "all"]["pearson"].isna().all()
    assert found[found.text_encoder == "all"]["points"].eq(4).all()


def test_write_probing_matrix_outputs(tmp_path):
    settings = {"knn_ks": KS, "eval_source": "tux", "image_encoders": IMAGES, "text_encoders": TEXTS}
    metrics = write_probing_matrix(_cells(), VISION, settings, tmp_path)
    assert metrics["good__minilm.alignment_score"] == 0.6
    assert metrics["corr.knn_top1_k10.minilm.spearman"] == pytest.approx(1.0)
    assert not any("@" in name for name in metrics)  # MLflow metric names
    assert len(pd.read_csv(tmp_path / "matrix.csv")) == 6
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["name"] == "probing_matrix" and saved["metrics"].keys() == metrics.keys()
    for name in ("alignment_heatmap.png", "alignment_vs_vision.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size[0] > 300 and image.size[1] > 200
    text = (tmp_path / "probing.md").read_text()
    assert "![heat map](alignment_heatmap.png)" in text and "| good " in text
