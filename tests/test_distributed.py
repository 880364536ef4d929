"""Data-parallel training on the CPU: 2 processes on the gloo backend, started as torchrun starts them,
reach the weights one process reaches with the same global batch."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from vlalign.align.trainer import train_alignment

SETTINGS = dict(head="star", target_dim=16, width_factor=2, batch_size=64, epochs=2, lr=1e-3, optimizer="adamw",
                val_fraction=0.1, loss_chunk_size=16, precision="fp32")  # fmt: skip


def _pairs(n: int = 300):
    rng = np.random.default_rng(0)
    image = rng.standard_normal((n, 24)).astype(np.float16)
    text = (image.astype(np.float32) @ rng.standard_normal((24, 12)).astype(np.float32)).astype(np.float16)
    negatives = (text.astype(np.float32) + rng.standard_normal(text.shape).astype(np.float32)).astype(np.float16)
    negatives[::4] = np.nan
    return image, text, negatives


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, settings: dict, out: str) -> None:
    # The environment torchrun gives each process.
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    image, text, negatives = _pairs()
    logged = []
    result = train_alignment(image, text, settings, device="cpu", log_fn=lambda step, m: logged.append(step),
                             negative_text_emb=negatives if settings.get("hard_negatives") else None)  # fmt: skip
    torch.save({"state": result.model.state_dict(), "logged": len(logged),
                "losses": [h["loss"] for h in result.history if "loss" in h]}, f"{out}.{rank}")
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("loss, hard_negatives", [("siglip", False), ("infonce", True), ("siglip", True)])
def test_two_gloo_ranks_equal_one_process(tmp_path, loss, hard_negatives):
    settings = {**SETTINGS, "loss": loss, "hard_negatives": hard_negatives}
    image, text, negatives = _pairs()
    torch.set_num_threads(1)
    alone = train_alignment(image, text, settings, negative_text_emb=negatives if hard_negatives else None)
    mp.spawn(_rank, args=(2, _free_port(), settings, str(tmp_path / "out")), nprocs=2, join=True)
    ranks = [torch.load(f"{tmp_path / 'out'}.{r}", weights_only=True) for r in range(2)]
    expected = alone.model.state_dict()
    for r in ranks:
        assert all(torch.allclose(r["state"][k], expected[k], rtol=1e-4, atol=1e-5) for k in expected)
        np.testing.assert_allclose(r["losses"], [h["loss"] for h in alone.history if "loss" in h], rtol=1e-4)
    # Only rank 0 logs; both ranks hold the same model.
    assert ranks[0]["logged"] > 0 and ranks[1]["logged"] == 0
    assert all(torch.equal(ranks[0]["state"][k], ranks[1]["state"][k]) for k in expected)


def test_vlalign_train_through_torchrun_writes_once_and_matches_one_process(tmp_path):
    """The workflow's multi-GPU launch, on the CPU: `torchrun --nproc_per_node 2 -m vlalign.cli train`."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    import mlflow
    import pandas as pd

    from vlalign.align.checkpoint import load_checkpoint
    from vlalign.store.embeddings import EmbeddingWriter

    image, text, _ = _pairs()
    keys = [f"k{i:03d}" for i in range(len(image))]
    for name, array in (("img", image), ("txt", text)):
        writer = EmbeddingWriter(tmp_path / name, array.shape[1], meta={"spec": "test"})
        writer.append(array, keys)
        writer.close()
    pd.DataFrame({"key": keys, "kept": True}).to_parquet(tmp_path / "decisions.parquet")
    settings = {"experiment": "ddp", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "device": "cpu",
                "encoders": {"image": {"alias": "img", "spec": "test"}, "text": {"alias": "txt", "spec": "test"}},
                "train": SETTINGS}  # fmt: skip
    bin_dir = Path(sys.executable).parent

    def train(launcher: list[str], out: str) -> None:
        result = subprocess.run(
            [*launcher, "train", "--settings", json.dumps(settings), "--run-name", "basic", "--image-embeddings",
             str(tmp_path / "img"), "--text-embeddings", str(tmp_path / "txt"), "--pool-decisions",
             str(tmp_path / "decisions.parquet"), "--out", str(tmp_path / out)],
            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]

    train([str(bin_dir / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "vlalign.cli"], "ddp")
    train([str(bin_dir / "vlalign")], "alone")
    ddp, _ = load_checkpoint(tmp_path / "ddp")
    alone, _ = load_checkpoint(tmp_path / "alone")
    assert all(torch.allclose(ddp.state_dict()[k], v, rtol=1e-4, atol=1e-5) for k, v in alone.state_dict().items())
    client = mlflow.MlflowClient(settings["tracking_uri"])
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id], "tags.rule = 'train'")
    assert len(runs) == 2  # one per launch: the second rank opened none
    assert not (tmp_path / ".ddp.state").exists()
