"""Lion, the schedule, the trainer on synthetic pairs, and checkpoints."""

import json
import math

import numpy as np
import pytest
import torch

from vlalign.align.checkpoint import load_checkpoint, save_checkpoint
from vlalign.align.heads import AlignmentModel
from vlalign.align.optim import Lion, cosine_schedule
from vlalign.align.trainer import batches, train_alignment
from vlalign.schema import default
from vlalign.evaluate.metrics import retrieval_recall

N_PAIRS = 512
# Small towers and a large learning rate so that training takes about a second on a CPU.
# fp32 and no validation split, where the SAIL defaults have bf16 and 5 %: exact comparisons, every pair trained on.
FAST = dict(head="star", target_dim=32, width_factor=2, batch_size=128, epochs=15, lr=1e-2, precision="fp32",
            val_fraction=0.0)


@pytest.fixture(scope="module")
def pairs():
    """Text embedding = a fixed random linear map of the image embedding + noise, stored as fp16."""
    rng = np.random.default_rng(0)
    image = rng.standard_normal((N_PAIRS, 32)).astype(np.float32)
    mapping = rng.standard_normal((32, 24)).astype(np.float32)
    text = image @ mapping + 0.5 * rng.standard_normal((N_PAIRS, 24)).astype(np.float32)
    return image.astype(np.float16), text.astype(np.float16)


def recall_at_1(model, image, text):
    with torch.no_grad():
        img = model.encode_image(torch.from_numpy(image.astype(np.float32))).numpy()
        txt = model.encode_text(torch.from_numpy(text.astype(np.float32))).numpy()
    return retrieval_recall(img, txt, np.arange(len(img)), ks=(1,))["mean_recall_at_1"]


def test_lion_matches_hand_computed_steps():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = Lion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    p.grad = torch.tensor([0.5, -0.1, 0.0])
    opt.step()
    # c = 0.1·g (m starts at 0) → sign [1, −1, 0]; p −= 0.1·(sign + 0.5·p)
    assert torch.allclose(p, torch.tensor([0.85, -1.8, 0.475]))
    # m = 0.01·g = [0.005, −0.001, 0]. A small opposite gradient loses to the momentum:
    # c[0] = 0.9·0.005 + 0.1·(−0.04) = 0.0005 > 0 → the step still goes down.
    p.grad = torch.tensor([-0.04, 0.0, 0.0])
    opt.step()
    expected0 = 0.85 - 0.1 * (1 + 0.5 * 0.85)
    expected1 = -1.8 - 0.1 * (-1 + 0.5 * -1.8)
    assert torch.allclose(p, torch.tensor([expected0, expected1, 0.475 * (1 - 0.05)]))


def test_cosine_schedule_warms_up_then_decays_to_zero():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = cosine_schedule(opt, total_steps=10, warmup_fraction=0.2)
    lrs = []
    for _ in range(11):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([1.0, 2.0, 2.0])  # warm-up over 2 steps, then the peak
    assert lrs[6] == pytest.approx(1.0)  # half-way through the cosine
    assert lrs[10] == pytest.approx(0.0, abs=1e-12)


def test_batches_keep_a_last_partial_batch_only_with_two_pairs():
    assert [len(b) for b in batches(np.arange(257), 128)] == [128, 128]
    assert [len(b) for b in batches(np.arange(258), 128)] == [128, 128, 2]
    assert all(np.all(np.diff(b) > 0) for b in batches(np.random.permutation(300), 128))


def test_siglip_lion_training_learns_the_pairing(pairs):
    image, text = pairs
    torch.manual_seed(0)  # the trainer's initialisation under its default seed
    before = AlignmentModel(image.shape[1], text.shape[1], head="star", target_dim=32, width_factor=2).eval()
    result = train_alignment(image, text, FAST)
    assert recall_at_1(before, image, text) < 0.05
    assert recall_at_1(result.model, image, text) > 0.8


def test_infonce_adamw_training_learns_the_pairing(pairs):
    image, text = pairs
    result = train_alignment(image, text, {**FAST, "loss": "infonce", "optimizer": "adamw",
                                           "lr": 3e-3})
    assert recall_at_1(result.model, image, text) > 0.4
    # InfoNCE never uses the bias, so it is not optimised (nor decayed).
    assert result.model.logit_bias.item() == default("train.defaults.logit_bias_init")


def test_same_seed_gives_identical_weights(pairs):
    image, text = pairs
    settings = {**FAST, "epochs": 2, "val_fraction": 0.1}
    a = train_alignment(image, text, settings).model.state_dict()
    b = train_alignment(image, text, settings).model.state_dict()
    c = train_alignment(image, text, {**settings, "seed": 1}).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_history_log_fn_and_validation(pairs, capsys):
    image, text = pairs
    logged = []
    result = train_alignment(image, text, {**FAST, "epochs": 3, "val_fraction": 0.1},
                             log_fn=lambda step, metrics: logged.append((step, metrics)))
    # 461 training pairs → 3 batches of 128 + one of 77, per epoch.
    steps = [h for h in result.history if "loss" in h]
    epochs = [h for h in result.history if "epoch" in h]
    assert [h["step"] for h in steps] == list(range(1, 13))
    assert [(h["epoch"], h["step"]) for h in epochs] == [(1, 4), (2, 8), (3, 12)]
    assert set(steps[0]) == {"step", "loss", "logit_scale", "logit_bias", "lr", "pairs_per_s"}
    assert all(math.isfinite(h["val_loss"]) for h in epochs)
    assert [(s, {"step": s, **m}) for s, m in logged] == [(h["step"], h) for h in result.history]
    assert "step 12/12" in capsys.readouterr().out


def test_logit_scale_is_clamped_after_each_step(pairs):
    image, text = pairs
    result = train_alignment(image, text, {**FAST, "epochs": 1, "logit_scale_init": 6.0})
    assert all(h["logit_scale"] <= 100.0 + 1e-4 for h in result.history if "loss" in h)


def test_memmap_bf16_extra_captions_and_grad_clip(pairs, tmp_path):
    image, text = pairs
    mm = np.memmap(tmp_path / "image.f16", dtype=np.float16, mode="w+", shape=image.shape)
    mm[:] = image
    mm.flush()
    noisy = (text + np.random.default_rng(1).standard_normal(text.shape)).astype(np.float16)
    result = train_alignment(np.memmap(tmp_path / "image.f16", dtype=np.float16, mode="r",
                                       shape=image.shape), text,
                             {**FAST, "epochs": 2, "precision": "bf16", "grad_clip": 1.0},
                             extra_text_emb=[noisy])
    assert all(math.isfinite(h.get("loss", 0.0)) for h in result.history)


def test_unknown_setting_is_an_error(pairs):
    with pytest.raises(ValueError, match="unknown training settings"):
        train_alignment(*pairs, {"learning_rate": 1.0})


def test_checkpoint_roundtrip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = AlignmentModel(12, 9, head="star", target_dim=6, width_factor=2)
    with torch.no_grad():
        model.logit_scale.fill_(3.3)
        model.logit_bias.fill_(-7.5)
    save_checkpoint(tmp_path / "ckpt", model, {"image_encoder": "lite0", "image_dim": 12})
    loaded, info = load_checkpoint(tmp_path / "ckpt" / "model.safetensors")
    assert info["image_encoder"] == "lite0" and info["model"] == model.settings
    x, y = torch.randn(5, 12), torch.randn(5, 9)
    for out_a, out_b in zip(model.eval()(x, y), loaded(x, y)):
        assert torch.equal(out_a, out_b)
    assert loaded.logit_scale.item() == pytest.approx(3.3)
    assert loaded.logit_bias.item() == pytest.approx(-7.5)


def test_checkpoint_from_another_config_names_the_file(tmp_path):
    save_checkpoint(tmp_path, AlignmentModel(12, 9, head="star", target_dim=6, width_factor=2), {})
    config = tmp_path / "model.json"
    info = json.loads(config.read_text())
    info["model"]["head"] = "linear"
    config.write_text(json.dumps(info))
    with pytest.raises(ValueError, match="model.safetensors: weights do not match"):
        load_checkpoint(tmp_path)


def test_replaced_weights_are_detected(tmp_path):
    save_checkpoint(tmp_path / "a", AlignmentModel(4, 4, head="linear", target_dim=4), {})
    save_checkpoint(tmp_path / "b", AlignmentModel(4, 4, head="linear", target_dim=4), {})
    (tmp_path / "b" / "model.safetensors").replace(tmp_path / "a" / "model.safetensors")
    with pytest.raises(ValueError, match="checksum"):
        load_checkpoint(tmp_path / "a")


@pytest.mark.parametrize("loss", ["siglip", "infonce"])
def test_chunked_loss_trains_like_the_plain_loss(pairs, loss):
    """Same seed, chunks of 32 in batches of 128: the same run up to float summation order."""
    image, text = pairs
    settings = {**FAST, "epochs": 2, "loss": loss, "optimizer": "adamw"}
    plain = train_alignment(image, text, settings)
    chunked = train_alignment(image, text, {**settings, "loss_chunk_size": 32})
    np.testing.assert_allclose([h["loss"] for h in chunked.history if "loss" in h],
                               [h["loss"] for h in plain.history if "loss" in h], rtol=1e-4)  # fmt: skip
    a, b = plain.model.state_dict(), chunked.model.state_dict()
    assert all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-4) for k in a)


class Killed(Exception):
    pass


def _killer(at_step):
    """A log_fn that raises when `at_step` is logged (as a kill there would) and records what it saw."""
    seen = []

    def log_fn(step, metrics):
        if step == at_step:
            raise Killed(step)
        seen.append(step)

    return log_fn, seen


def _without_timing(history):
    return [{k: v for k, v in h.items() if k != "pairs_per_s"} for h in history]


def _assert_same_run(a, b):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert _without_timing(a.history) == _without_timing(b.history)


# 461 training pairs → 4 steps per epoch, 12 steps. Every 3 steps: states at 3, 6, 9, 12, all but 12
# mid-epoch; a kill at 5 resumes from 3 (epoch 1, batch 3 of 4), one at 7 right after the state at 6.
# At epoch ends only (None): a kill at 6 resumes from 4, one at 9 from 8.
@pytest.mark.parametrize("optimizer", ["lion", "adamw"])
@pytest.mark.parametrize(("every", "kills", "resumes"), [(3, [5, 7], [3, 6]), (None, [6, 9], [4, 8])])
def test_killed_and_resumed_run_reaches_the_same_weights(pairs, tmp_path, capsys, optimizer, every, kills,
                                                         resumes):
    image, text = pairs
    settings = {**FAST, "epochs": 3, "val_fraction": 0.1, "optimizer": optimizer, "checkpoint_every": every}
    uninterrupted = train_alignment(image, text, settings)
    assert uninterrupted.resumed_from_step is None
    state = tmp_path / "state"
    for kill in kills:
        log_fn, _ = _killer(kill)
        with pytest.raises(Killed):
            train_alignment(image, text, settings, log_fn=log_fn, state_dir=state)
    log_fn, seen = _killer(None)
    resumed = train_alignment(image, text, settings, log_fn=log_fn, state_dir=state)
    assert resumed.resumed_from_step == resumes[-1]
    assert f"resuming from step {resumes[0]}/12" in capsys.readouterr().out
    _assert_same_run(resumed, uninterrupted)
    # log_fn sees the steps after the state once each: the per-step logs, then the epoch ends.
    assert seen == [h["step"] for h in uninterrupted.history if h["step"] > resumes[-1]]
    assert [h["step"] for h in resumed.history if "epoch" in h] == [4, 8, 12]


def test_resume_from_the_final_state_returns_the_trained_model(pairs, tmp_path):
    image, text = pairs
    settings = {**FAST, "epochs": 2}
    first = train_alignment(image, text, settings, state_dir=tmp_path)
    again = train_alignment(image, text, settings, state_dir=tmp_path, log_fn=_killer(1)[0])
    assert again.resumed_from_step == 8
    _assert_same_run(again, first)
    assert [p.name for p in tmp_path.iterdir()] == ["step-000000008"]  # older states are removed


def test_a_kill_while_a_state_is_written_keeps_the_previous_one(pairs, tmp_path, monkeypatch):
    image, text = pairs
    settings = {**FAST, "epochs": 2, "checkpoint_every": 2}
    uninterrupted = train_alignment(image, text, settings)
    real_save, calls = torch.save, []

    def failing_save(obj, path):
        calls.append(path)
        if len(calls) == 2:  # the state at step 4, after its weights are written
            raise Killed(path)
        real_save(obj, path)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(Killed):
        train_alignment(image, text, settings, state_dir=tmp_path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000002"]
    resumed = train_alignment(image, text, settings, state_dir=tmp_path)
    assert resumed.resumed_from_step == 2
    _assert_same_run(resumed, uninterrupted)


def test_state_from_other_settings_or_data_is_refused(pairs, tmp_path):
    image, text = pairs
    settings = {**FAST, "epochs": 2}
    with pytest.raises(Killed):
        train_alignment(image, text, settings, log_fn=_killer(6)[0], state_dir=tmp_path / "state")
    with pytest.raises(ValueError, match=r"state: its training state \(step-000000004\).*settings.lr: 0.01 -> 0.02"):
        train_alignment(image, text, {**settings, "lr": 2e-2}, state_dir=tmp_path / "state")
    with pytest.raises(ValueError, match=r"state: .*data.shapes"):
        train_alignment(image[:500], text[:500], settings, state_dir=tmp_path / "state")
    # How often states are written does not change the result, so it may change on resume.
    resumed = train_alignment(image, text, {**settings, "checkpoint_every": 1}, state_dir=tmp_path / "state")
    assert resumed.resumed_from_step == 4


def test_hard_negatives_join_the_loss_and_nan_rows_are_skipped(pairs):
    image, text = pairs
    rng = np.random.default_rng(5)
    negatives = (text.astype(np.float32) + rng.standard_normal(text.shape).astype(np.float32)).astype(np.float16)
    negatives[::3] = np.nan  # pairs whose caption no rule could turn into a negative
    settings = {**FAST, "optimizer": "adamw"}
    with_negatives = train_alignment(image, text, {**settings, "hard_negatives": True}, negative_text_emb=negatives)
    without = train_alignment(image, text, settings)
    assert all(np.isfinite(h["loss"]) for h in with_negatives.history if "loss" in h)
    first = [h["loss"] for h in with_negatives.history if "loss" in h][0]
    assert first != [h["loss"] for h in without.history if "loss" in h][0]  # the negatives block counts
    assert recall_at_1(with_negatives.model, image, text) > 0.8 * recall_at_1(without.model, image, text) > 0.4
    with pytest.raises(ValueError, match="hard_negatives needs"):
        train_alignment(image, text, settings, negative_text_emb=negatives)
    with pytest.raises(ValueError, match="hard_negatives needs"):
        train_alignment(image, text, {**settings, "hard_negatives": True})


def test_resident_batches_and_lazy_store_rows_train_identically(pairs, tmp_path):
    """Arrays uploaded once (as on a GPU they fit) or read lazily from a store give the same run."""
    from vlalign.store.embeddings import EmbeddingWriter, open_embeddings

    image, text = pairs
    stores = []
    for name, array in (("image", image), ("text", text)):
        writer = EmbeddingWriter(tmp_path / name, array.shape[1], rows_per_part=100)
        writer.append(array, [str(i) for i in range(len(array))])
        writer.close()
        stores.append(open_embeddings(tmp_path / name))
    rows = np.arange(0, N_PAIRS, 2)
    lazy_image, lazy_text = (s.rows(rows) for s in stores)
    settings = {**FAST, "epochs": 2}
    streamed = train_alignment(image[rows], text[rows], settings, resident=False).model.state_dict()
    resident = train_alignment(image[rows], text[rows], settings, resident=True).model.state_dict()
    lazy = train_alignment(lazy_image, lazy_text, settings).model.state_dict()
    assert all(torch.equal(streamed[k], resident[k]) and torch.equal(streamed[k], lazy[k]) for k in streamed)
    missing = stores[1].rows([0, -1, 2])[np.arange(3)]
    assert np.isnan(missing[1]).all() and not np.isnan(missing[[0, 2]]).any()


def test_multi_positive_pairs_without_an_extra_caption_use_their_main_one(pairs):
    image, text = pairs
    rng = np.random.default_rng(7)
    extra = (text.astype(np.float32) + 0.3 * rng.standard_normal(text.shape).astype(np.float32)).astype(np.float16)
    missing = extra.copy()
    missing[::2] = np.nan
    filled = np.where(np.isnan(missing), text, missing)
    settings = {**FAST, "epochs": 2, "multi_positive": True}
    a = train_alignment(image, text, settings, extra_text_emb=[missing]).model.state_dict()
    b = train_alignment(image, text, settings, extra_text_emb=[filled]).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="multi_positive needs"):
        train_alignment(image, text, settings)


def test_loss_matmuls_use_tf32_only_under_mixed_precision_on_cuda():
    """The B×B logits stay float32; on CUDA under bf16 their matmuls may take TF32 tensor cores, and the setting
    is the process's again afterwards."""
    from vlalign.devices import loss_matmuls

    before = torch.backends.cuda.matmul.allow_tf32
    with loss_matmuls(torch.device("cuda"), "bf16"):
        assert torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cuda.matmul.allow_tf32 == before
    for device, precision in (("cuda", "fp32"), ("cpu", "bf16")):
        with loss_matmuls(torch.device(device), precision):
            assert torch.backends.cuda.matmul.allow_tf32 == before
