"""`vlalign plan`: FLOPs counted on real architectures match hand formulas, items are counted from the sources,
the training step's memory is tracked, SAIL's recipe projects to SAIL's reported A100 time, and the plan is
printed and logged to MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from mlflow import MlflowClient
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import MemTracker

from test_own_configs import write_stand_ins
from vlalign.cli import main
from vlalign.config import validate_config
from vlalign.plan.architectures import build_architecture
from vlalign.plan.assumptions import Assumptions
from vlalign.plan.flops import encoder_flops, training_flops
from vlalign.plan.gpus import find_gpu
from vlalign.data.url_table import UrlTable
from vlalign.plan.items import count_source
from vlalign.plan.memory import LiveTensors, training_step_memory
from vlalign.plan.step import TrainingStep
from vlalign.schema import complete

REPO = Path(__file__).resolve().parents[1]
SAIL_A100_HOURS = 5.0  # "SAIL training only requires a single A100 GPU, 5 hours of training" (arXiv 2412.04616)


def settings(**overrides) -> dict:
    return complete("train.defaults", overrides)


def test_linear_head_flops_match_the_hand_formula():
    batch, image_dim, text_dim, k = 64, 48, 32, 16
    step = training_flops(settings(head="linear", target_dim=k, batch_size=batch), image_dim, text_dim)
    # Per pair and tower: forward 2·d·k, weight gradient 2·d·k, input gradient 2·d·k (LayerNorm below it learns).
    assert step.heads == {"bf16": 6 * image_dim * k + 6 * text_dim * k}
    # The B×B logits, float32 outside autocast (TF32 on CUDA under mixed precision): forward 2·B·k, the gradients
    # of both sides 4·B·k, per pair.
    assert step.loss == {"tf32": 6 * batch * k}
    assert step.forward == {"bf16": 2 * image_dim * k + 2 * text_dim * k, "tf32": 2 * batch * k}
    exact = training_flops(settings(head="linear", target_dim=k, batch_size=batch, precision="fp32"), image_dim,
                           text_dim)  # fmt: skip
    assert exact.loss == {"fp32": 6 * batch * k} and exact.heads == {"fp32": 6 * image_dim * k + 6 * text_dim * k}


def test_star_head_flops_match_the_hand_formula_with_an_extra_caption_set_and_a_chunked_loss():
    batch, image_dim, text_dim, k, width = 64, 48, 32, 16, 2

    def star(d: int) -> int:  # f1, f2: d -> w·d; g: w·d -> k; forward and both gradients
        hidden = width * d
        return 6 * (2 * d * hidden + hidden * k)

    run = settings(head="star", width_factor=width, target_dim=k, batch_size=batch, multi_positive=True,
                   loss_chunk_size=16)  # fmt: skip
    step = training_flops(run, image_dim, text_dim, extra_sets=1)
    assert step.heads == {"bf16": star(image_dim) + 2 * star(text_dim)}  # the text tower runs once per caption set
    # Two B×B blocks; the chunked loss recomputes the logits in its backward: 2 + 2 + 2 + 2 B·k per pair.
    assert step.loss == {"tf32": 2 * 8 * batch * k}


def test_timm_vit_flops_match_the_hand_formula():
    entry = complete("encoders.*", {"spec": "timm:vit_base_patch16_224", "pooling": "cls"})
    architecture = build_architecture("vit_b", entry, Assumptions())
    flops = encoder_flops(architecture)
    layers, d, tokens, patches = 12, 768, 197, 196
    per_layer = 2 * tokens * (4 * d * d + 2 * d * 4 * d) + 2 * 2 * tokens * tokens * d  # qkv+proj, MLP; QK^T and AV
    hand = layers * per_layer + 2 * patches * (3 * 16 * 16) * d  # and the patch embedding
    assert architecture.dim == 768 and architecture.image_size == 224
    assert flops == pytest.approx(hand, rel=0.03)


def test_url_list_rows_are_counted_without_loading_the_table(tmp_path):
    urls = [f"http://127.0.0.1:9/{i}.jpg" for i in range(1234)]
    pd.DataFrame({"url": urls, "caption": ["a dog on a beach"] * 1234}).to_parquet(tmp_path / "urls.parquet")
    # A quoted caption spanning lines is one row, as the download reads it.
    captions = ["two\nlines"] + ["one line"] * 6
    pd.DataFrame({"url": urls[:7], "caption": captions}).to_csv(tmp_path / "urls.csv", index=False)
    assert UrlTable(str(tmp_path / "urls.parquet"), "url", "caption").count_rows() == 1234
    assert UrlTable(str(tmp_path / "urls.csv"), "url", "caption").count_rows() == 7
    config = validate_config({
        "results_dir": str(tmp_path / "results"),
        "sources": {"web": {"type": "url_list", "path": str(tmp_path / "urls.parquet"), "eval_fraction": 0.25,
                            "max_items": 1000}},
        "encoders": {"lite0": {"spec": "efficientnet-lite0"}, "minilm": {"spec": "all-minilm-l6-v2"}},
        "evaluate": {"retrieval": ["web"]},
    }, name="mine")  # fmt: skip
    assumptions = Assumptions()
    count = count_source("web", config["sources"]["web"], config, assumptions)
    rate = assumptions.value("download.success_rate.url_list")
    assert count.items == 1000  # max_items applied
    assert (count.train, count.eval) == pytest.approx((1000 * rate * 0.75, 1000 * rate * 0.25))
    assert count.captions["caption"][:2] == ["a dog on a beach"] * 2
    assert any(line.startswith("download.success_rate.url_list = 0.8:") for line in assumptions.lines())


def test_tracked_peak_memory_equals_torchs_memtracker_and_counts_the_optimiser_state():
    step_settings = settings(batch_size=512, target_dim=64, width_factor=2)
    with FakeTensorMode():
        tracked = LiveTensors()
        with tracked:
            step = TrainingStep(step_settings, 96, 48, 512)
            step.update(step.forward())
        other = TrainingStep(step_settings, 96, 48, 512)
        reference = MemTracker()
        reference.track_external(other.model, other.optimizer, other.image, other.text)
        with reference:
            other.update(other.forward())
    assert tracked.peak == reference.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    # Two steps: the second also holds Lion's momentum (one copy of the weights).
    memory = training_step_memory(step_settings, 96, 48)
    assert memory.peak_bytes >= tracked.peak + memory.weights_bytes


def test_an_unknown_gpu_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown GPU 'B300'; known: A100-80GB, .*H100-SXM"):
        find_gpu("B300")
    assert find_gpu("a100_80gb").name == "A100-80GB"


@pytest.fixture(scope="module")
def sail_plan(tmp_path_factory):
    """config/sail_23m.yaml with GTE-large as the text tower, planned for 23M pairs on an A100."""
    root = tmp_path_factory.mktemp("sail")
    config = yaml.safe_load((REPO / "config" / "sail_23m.yaml").read_text())
    write_stand_ins(config, root)
    for source in config["sources"].values():
        for key in ("path", "classnames"):
            if source.get(key):
                source[key] = str(root / source[key])
        source["urls"] = [str(root / url) for url in source.get("urls", [])]
    # GTE-large: 5 A100-hours fit its FLOPs; NV-Embed-2's 4096-d input makes the text head 12× larger, which
    # needs 9.5 h at 100 % of the A100's bf16 peak for 100 epochs of 23M pairs with one extra caption set.
    assert config["text_encoder"] == "gte_l"
    config["tracking_uri"] = f"sqlite:///{root / 'mlflow.db'}"
    config["results_dir"] = str(root / "results")
    path = root / "sail_23m.yaml"
    path.write_text(yaml.safe_dump(config))
    code = main(["plan", "--config", str(path), "--samples", "23000000", "--gpu", "A100-80GB", "--out",
                 str(root / "plan")])  # fmt: skip
    assert code == 0
    return root


def test_sail_recipe_projects_within_twice_sails_a100_hours(sail_plan):
    plan = json.loads((sail_plan / "plan" / "plan.json").read_text())
    train = next(row for row in plan["rows"] if row["stage"] == "train")
    hours = train["seconds"]["A100-80GB"] / 3600
    assert SAIL_A100_HOURS / 2 <= hours <= SAIL_A100_HOURS * 2, hours
    assert train["items"] == pytest.approx(23_000_000 * 100)
    assert train["peak_memory_bytes"] < find_gpu("A100-80GB").memory_bytes
    assumptions = "\n".join(plan["assumptions"])
    for stated in ("utilisation.train = 0.5", "gpu.fp32_matmuls = TF32 under mixed precision", "samples = 23,000,000",
                   "architecture.gte_l = GteConfig"):  # fmt: skip
        assert stated in assumptions
    table = (sail_plan / "plan" / "plan.md").read_text()
    assert "| train sail" in table and "utilisation.train = 0.5" in table


def test_the_plan_is_an_mlflow_run_with_its_files(sail_plan):
    client = MlflowClient(tracking_uri=f"sqlite:///{sail_plan / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sail_23m")
    (run,) = client.search_runs([experiment.experiment_id], "tags.rule = 'plan'")
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert 2.5 <= metrics["train.sail.gpu_hours"] <= 10
    assert metrics["A100-80GB.train.sail.gpu_hours"] == metrics["train.sail.gpu_hours"]
    towers = metrics["embed.pool.dinov2_l.gpu_hours"] + metrics["embed.pool.gte_l.gpu_hours"]
    assert metrics["total.gpu_hours"] > metrics["train.sail.gpu_hours"] + towers  # and the long captions
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"plan.md", "plan.csv", "plan.json"}


def test_vlalign_plan_prints_the_demos_table(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # results/ and its MLflow store go here
    assert main(["plan", "--config", str(REPO / "config" / "config.yaml"), "--gpu", "A100-80GB", "H100-SXM"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("stage"))
    assert "time on A100-80GB" in header and "time on H100-SXM" in header
    for row in ("embed pool x efficientnet_lite0", "train basic", "probe efficientnet_lite1__random_minilm",
                "evaluate balanced", "total"):  # fmt: skip
        assert any(line.startswith(row) for line in out.splitlines()), row
    assert "Assumptions:" in out and "utilisation.embed = 0.4" in out


def test_a_compute_budget_plans_equal_steps_for_every_pool_under_each_seed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["train"]["defaults"]["samples_seen"] = 51_200
    config["train"]["seeds"] = [0, 1, 2]
    path = tmp_path / "budget.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["plan", "--config", str(path), "--samples", "100000", "--gpu", "A100-80GB", "--out", "plan"]) == 0
    rows = {row["what"]: row for row in json.loads((tmp_path / "plan" / "plan.json").read_text())["rows"]
            if row["stage"] == "train"}  # fmt: skip
    assert set(rows) == set(config["train"]["runs"])
    # Pools of different sizes, the same 100 steps of 512 under each of three seeds.
    assert {row["items"] for row in rows.values()} == {51_200 * 3}
    assert len({round(row["seconds"]["A100-80GB"], 9) for row in rows.values()}) == 1
    assert all(row["note"].startswith("100 steps of 512") and "× 3 seeds" in row["note"] for row in rows.values())
