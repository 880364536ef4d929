"""Corrupted inputs through the real commands: each gives one clear error naming the file (or, where skipping is
right, the sample is skipped and recorded), never only a traceback from inside a library."""

from __future__ import annotations

import json
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures_models import BROKEN, SAMPLES, write_test_shards
from source_config import source_config

from vlalign.align.checkpoint import load_checkpoint
from vlalign.align.trainer import train_alignment
from vlalign.cli import main
from vlalign.data.download import run_download
from vlalign.store.embeddings import EmbeddingWriter

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <finalize object:pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("corrupt")


def common(root: Path) -> dict:
    return {"experiment": "corrupt", "tracking_uri": f"sqlite:///{root / 'mlflow.db'}"}


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """The exit code and stderr of `vlalign ARGV`; stderr must be the one-line message, not a traceback."""
    code = main(list(argv))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"vlalign {argv[0]}:")]
    assert "Traceback" not in err and (code == 0 or len(lines) == 1), err
    return code, "\n".join(lines)


def convert(root: Path, capsys, folders: list[Path], name: str) -> tuple[int, str]:
    settings = {**common(root), "convert": {"max_resolution": 64, "jpeg_quality": 90, "num_workers": 1,
                                            "write_mode": "jpg"}}  # fmt: skip
    return run_cli(capsys, "convert", "--settings", json.dumps(settings), "--inputs", *map(str, folders),
                   "--beton", str(root / f"{name}.beton"), "--table", str(root / f"{name}.parquet"))  # fmt: skip


@pytest.fixture(scope="module")
def shards(root) -> list[Path]:
    return write_test_shards(root / "shards")


@pytest.fixture(scope="module")
def beton(root, shards):
    main(["convert", "--settings", json.dumps({**common(root), "convert": {
        "max_resolution": 64, "jpeg_quality": 90, "num_workers": 1, "write_mode": "jpg"}}),
        "--inputs", *map(str, shards), "--beton", str(root / "good.beton"), "--table", str(root / "good.parquet")])
    return root / "good.beton", root / "good.parquet"


def test_a_broken_image_in_a_shard_is_skipped_and_recorded(root, shards, capsys, tmp_path):
    # convert: the sample is left out of the .beton and reported by key with its reason
    settings = {**common(root), "convert": {"max_resolution": 64, "jpeg_quality": 90, "num_workers": 1,
                                            "write_mode": "jpg"}}  # fmt: skip
    code = main(["convert", "--settings", json.dumps(settings), "--inputs", *map(str, shards),
                 "--beton", str(tmp_path / "b.beton"), "--table", str(tmp_path / "b.parquet")])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "vlalign convert: skipped broken: UnidentifiedImageError" in out
    assert '"skipped": 1' in out and '"written": 10' in out
    assert set(pd.read_parquet(tmp_path / "b.parquet")["key"]) == {s[0] for s in SAMPLES} - BROKEN
    # as a webdataset source: a manifest row with its error class, the other samples written
    urls = [str(p) for folder in shards for p in sorted(folder.glob("*.tar"))]
    summary = run_download("wds", source_config("webdataset", urls=urls, min_side=1), tmp_path / "wds", None, 100)
    manifest = pd.read_parquet(tmp_path / "wds" / "manifest.parquet")
    broken = manifest[manifest["key"].str.endswith("_broken")]
    assert summary["items"] == len(SAMPLES) and summary["ok"] == len(SAMPLES) - 1
    assert broken["error"].tolist() == ["decode_error"]


def _cut_points(shard: Path) -> dict[str, int]:
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    return {"at a member boundary": members[3].offset, "inside a header": members[3].offset + 100,
            "inside a member's data": members[3].offset_data + 10}  # fmt: skip


@pytest.mark.parametrize("where", ["at a member boundary", "inside a header", "inside a member's data"])
def test_a_truncated_shard_names_the_file(root, shards, capsys, tmp_path, where):
    """tarfile reads a tar cut at a member boundary or inside a header as a shorter, complete one: the
    samples after the cut would be lost without a word."""
    folder = tmp_path / "cut"
    shutil.copytree(shards[1], folder)
    shard = folder / "shard-000000.tar"
    shard.write_bytes(shard.read_bytes()[: _cut_points(shard)[where]])
    code, message = convert(root, capsys, [shards[0], folder], "cut")
    assert code == 1 and f"{shard}: not a readable tar shard" in message
    assert not (root / "cut.beton").exists() and not (root / "cut.parquet").exists()
    # As a webdataset source the shard is accounted as one failed item, beside the samples read before the cut.
    run_download("wds", source_config("webdataset", urls=[str(shard)], min_side=1), tmp_path / "wds", None, 100)
    manifest = pd.read_parquet(tmp_path / "wds" / "manifest.parquet")
    assert manifest["error"].tolist()[-1] == "unreadable_shard" and manifest["origin"].tolist()[-1] == str(shard)
    assert manifest["status"].tolist()[:-1] == ["ok"] * (len(manifest) - 1)


@pytest.mark.parametrize("fraction", [0.2, 0.97])
def test_a_beton_cut_short_names_the_file(root, beton, capsys, tmp_path, fraction):
    cut = tmp_path / "cut.beton"
    data = beton[0].read_bytes()
    cut.write_bytes(data[: int(len(data) * fraction)])
    table = tmp_path / "cut.parquet"  # the good table, naming the cut file
    pd.read_parquet(beton[1]).assign(beton=cut.name).to_parquet(table)
    settings = {**common(root), "embed": {"num_workers": 1, "device": "cpu", "parts": 1},
                "encoder": {"spec": "efficientnet-lite0", "batch_size": 4, "path": None, "pooling": None,
                            "max_length": None, "prefix": "", "model_kwargs": {}, "precision": "auto",
                            "compile": False}}  # fmt: skip
    code, message = run_cli(capsys, "embed", "--settings", json.dumps(settings), "--encoder", "e", "--dataset", "d",
                            "--beton", str(cut), "--table", str(table), "--out", str(tmp_path / "emb"))
    assert code == 1 and f"{cut}: not a readable .beton" in message
    assert not (tmp_path / "emb").exists()


# --- embedding stores and training states, through `vlalign train` ---------------------------------------

TRAIN = {"head": "linear", "target_dim": 8, "batch_size": 16, "epochs": 2, "checkpoint_every": 2}


@pytest.fixture(scope="module")
def stores(root) -> Path:
    rng = np.random.default_rng(0)
    keys = [f"k{i}" for i in range(100)]
    arrays = {"img": rng.standard_normal((100, 12)), "txt": rng.standard_normal((100, 8))}
    for name, array in arrays.items():
        writer = EmbeddingWriter(root / name, array.shape[1], rows_per_part=40, meta={"spec": "t"})
        writer.append(array.astype(np.float32), keys)
        writer.close()
    pd.DataFrame({"key": keys, "kept": True}).to_parquet(root / "decisions.parquet")
    # A training state as a killed run leaves it (the loop saves one every 2 steps and the last at step 14).
    train_alignment(arrays["img"].astype(np.float32), arrays["txt"].astype(np.float32), TRAIN,
                    state_dir=root / "state")  # fmt: skip
    return root


def train(stores: Path, capsys, image: Path, out: Path, **overrides) -> tuple[int, str]:
    settings = {**common(stores), "device": "cpu", "convert": {"max_resolution": 64}, "train": {**TRAIN, **overrides},
                "encoders": {"image": {"alias": "i", "spec": "t"}, "text": {"alias": "t", "spec": "t"}}}  # fmt: skip
    return run_cli(capsys, "train", "--settings", json.dumps(settings), "--run-name", "r", "--image-embeddings",
                   str(image), "--text-embeddings", str(stores / "txt"), "--pool-decisions",
                   str(stores / "decisions.parquet"), "--out", str(out))  # fmt: skip


STORE_DAMAGE = {
    "part of the wrong shape": ("part-00001.npy", lambda p: np.save(p, np.zeros((40, 13), np.float16))),
    "part cut short": ("part-00001.npy", lambda p: p.write_bytes(p.read_bytes()[:500])),
    "part not an array": ("part-00001.npy", lambda p: p.write_bytes(pickle.dumps({"a": 1}))),
    "part missing": ("part-00002.npy", lambda p: p.unlink()),
    "meta.json cut short": ("meta.json", lambda p: p.write_text(p.read_text()[:40])),
    "meta.json without parts": ("meta.json", lambda p: p.write_text('{"dim": 12, "count": 100}')),
    "index.parquet not parquet": ("index.parquet", lambda p: p.write_bytes(b"garbage" * 10)),
}


@pytest.mark.parametrize("damage", STORE_DAMAGE)
def test_a_damaged_embedding_store_names_the_file(stores, capsys, tmp_path, damage):
    image = tmp_path / "img"
    shutil.copytree(stores / "img", image)
    name, spoil = STORE_DAMAGE[damage]
    spoil(image / name)
    code, message = train(stores, capsys, image, tmp_path / "out")
    assert code == 1 and f"{image / name}: " in message
    assert not (tmp_path / "out").exists()


def _evil_pickle(path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (Path.touch, (path.parent / "PWNED",))

    torch.save({"optimizer": Evil()}, path)


STATE_DAMAGE = {
    "tensors.pt cut short": ("tensors.pt", lambda p: p.write_bytes(p.read_bytes()[:300]), "not a readable"),
    "tensors.pt holding code": ("tensors.pt", _evil_pickle, "holds objects other than tensors"),
    "progress.json cut short": ("progress.json", lambda p: p.write_text("{"), "not a readable"),
    "weights cut short": ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:300]), "checksum differs"),
    "model.json not JSON": ("model.json", lambda p: p.write_text("{"), "not a readable checkpoint config"),
}


@pytest.mark.parametrize("damage", STATE_DAMAGE)
def test_a_damaged_training_state_names_the_file(stores, capsys, tmp_path, damage):
    """A training state is only ever renamed into place whole; one damaged afterwards is refused, not resumed."""
    out = tmp_path / "out"
    state = tmp_path / ".out.state"
    shutil.copytree(stores / "state", state)
    (folder,) = state.glob("step-*")
    name, spoil, expected = STATE_DAMAGE[damage]
    spoil(folder / name)
    code, message = train(stores, capsys, stores / "img", out)
    assert code == 1 and f"{folder / name}: {expected}" in message
    assert not out.exists() and not (folder / "PWNED").exists()


def test_a_state_from_a_different_config_is_refused(stores, capsys, tmp_path):
    shutil.copytree(stores / "state", tmp_path / ".out.state")
    code, message = train(stores, capsys, stores / "img", tmp_path / "out", lr=0.5, head="star")
    assert code == 1 and f"{tmp_path / '.out.state'}: its training state" in message
    assert "settings.lr: 1e-05 -> 0.5" in message and "settings.head: 'linear' -> 'star'" in message
    # The same state with the same settings is resumed and finishes.
    code, _ = train(stores, capsys, stores / "img", tmp_path / "out")
    assert code == 0 and load_checkpoint(tmp_path / "out")[0] is not None
