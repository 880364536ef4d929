"""The embed stage end to end on CPU with the packaged EfficientNet-Lite0 and MiniLM."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from fixtures_models import write_test_shards

from vlalign.cli import main
from vlalign.devices import resolve_device
from vlalign.embed.features import embed_images, embed_texts, part_rows
from vlalign.encoders import create_encoder
from vlalign.store.beton import image_loader, write_beton
from vlalign.store.embeddings import EmbeddingWriter, open_embeddings

CPU_ONE_WORKER = {"num_workers": 1, "device": "cpu"}
MINILM = {"spec": "all-minilm-l6-v2", "batch_size": 4}

# numba (0.68) raises KeyError in the finalizer of ffcv's per-Loader compiled functions when
# they are garbage collected mid-run; harmless, and silent outside pytest.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <finalize object:pytest.PytestUnraisableExceptionWarning"
)
FLOAT16 = dict(rtol=1e-3, atol=1e-3)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    folders = write_test_shards(root)
    write_beton(folders, root / "data.beton", root / "data.parquet", max_resolution=64, num_workers=1)
    return root / "data.beton", root / "data.parquet"


@pytest.fixture(scope="module")
def direct_image_features(dataset):
    """EfficientNet-Lite0 on the loader's batches, without the stage in between."""
    encoder = create_encoder("efficientnet-lite0")
    batches = [encoder(images) for images, _ in image_loader(dataset[0], 224, batch_size=4, num_workers=1)]
    return torch.cat(batches).numpy()


def _embed_lite0(dataset, out, **kwargs):
    return embed_images(*dataset, {"spec": "efficientnet-lite0", "batch_size": 4}, out, CPU_ONE_WORKER,
                        progress=False, **kwargs)


def test_embed_images_matches_encoder(dataset, direct_image_features, tmp_path):
    summary = _embed_lite0(dataset, tmp_path / "img")
    assert (summary["count"], summary["dim"], summary["resumed_from"]) == (10, 1280, 0)
    assert summary["items_per_s"] > 0
    store = open_embeddings(tmp_path / "img")
    assert store.keys == pd.read_parquet(dataset[1])["key"].tolist()
    assert store.meta["spec"] == "efficientnet-lite0" and store.meta["image_size"] == 224
    np.testing.assert_allclose(store.to_numpy(), direct_image_features, **FLOAT16)


def test_embed_texts_matches_encoder(dataset, tmp_path):
    summary = embed_texts(dataset[1], MINILM, tmp_path / "txt", CPU_ONE_WORKER, progress=False, rows_per_part=3)
    assert (summary["count"], summary["dim"]) == (10, 384)
    table = pd.read_parquet(dataset[1])
    store = open_embeddings(tmp_path / "txt")
    assert store.keys == table["key"].tolist()
    expected = create_encoder("all-minilm-l6-v2").encode(table["caption"].tolist())
    np.testing.assert_allclose(store.to_numpy(), expected, **FLOAT16)


def test_resume_after_kill_continues_from_finished_parts(dataset, direct_image_features, tmp_path, monkeypatch):
    append = EmbeddingWriter.append
    calls = []

    def killed_after_two_batches(self, features, keys):
        if len(calls) == 2:
            raise RuntimeError("killed")
        calls.append(len(keys))
        append(self, features, keys)

    monkeypatch.setattr(EmbeddingWriter, "append", killed_after_two_batches)
    with pytest.raises(RuntimeError, match="killed"):
        _embed_lite0(dataset, tmp_path / "img", rows_per_part=4)
    assert not (tmp_path / "img" / "meta.json").exists()
    with pytest.raises(FileNotFoundError):
        open_embeddings(tmp_path / "img")

    monkeypatch.setattr(EmbeddingWriter, "append", append)
    summary = _embed_lite0(dataset, tmp_path / "img", rows_per_part=4)
    assert (summary["resumed_from"], summary["count"]) == (8, 10)
    store = open_embeddings(tmp_path / "img")
    assert store.keys == pd.read_parquet(dataset[1])["key"].tolist()
    np.testing.assert_allclose(store.to_numpy(), direct_image_features, **FLOAT16)
    # Identical, not merely close, to a run that was never interrupted.
    _embed_lite0(dataset, tmp_path / "uninterrupted", rows_per_part=4)
    np.testing.assert_array_equal(store.to_numpy(), open_embeddings(tmp_path / "uninterrupted").to_numpy())


def test_table_and_beton_must_agree(dataset, tmp_path):
    beton, table = dataset
    # A table beside the .beton whose rows are one off the records: caught before anything is embedded.
    shifted = pd.read_parquet(table).iloc[1:].assign(row=range(9), beton_row=range(9))
    shifted.to_parquet(beton.parent / "shifted.parquet")
    message = r"data.beton: records \[0, 8\] hold keys \['wide', 'flat'\].* says \['alpha', 'late'\]"
    with pytest.raises(ValueError, match=message):
        embed_images(beton, beton.parent / "shifted.parquet", {"spec": "efficientnet-lite0"}, tmp_path / "img",
                     CPU_ONE_WORKER, progress=False)
    # A table naming another .beton than the one given.
    with pytest.raises(ValueError, match=r"names .*data.beton for rows 0..9, not one of the .betons given"):
        embed_images(tmp_path / "other.beton", table, {"spec": "efficientnet-lite0"}, tmp_path / "img",
                     CPU_ONE_WORKER, progress=False)


def test_resolve_device():
    assert resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")


def _cli_settings(tmp_path, spec: str, batch_size: int) -> str:
    return json.dumps({
        "experiment": "embed-test", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "encoder": {"spec": spec, "batch_size": batch_size, "path": None, "pooling": None, "max_length": None,
                    "prefix": "", "model_kwargs": {}, "precision": "auto", "compile": False},
        "embed": {"num_workers": 1, "device": "cpu", "parts": 3},
    })  # fmt: skip


@pytest.mark.parametrize("spec", ["efficientnet-lite0", "all-minilm-l6-v2"])
def test_scatter_into_three_parts_then_gather_equals_one_pass(dataset, spec, tmp_path):
    """Through the real command line, as the workflow's embed_part and gather_embeddings rules run it."""
    beton, table = dataset
    # Batches of one: every item then goes through the same kernels in both runs, so equal means equal.
    settings = _cli_settings(tmp_path, spec, batch_size=1)
    common = ["--settings", settings, "--encoder", "enc", "--dataset", "data", "--beton", str(beton),
              "--table", str(table)]  # fmt: skip
    assert main(["embed", *common, "--out", str(tmp_path / "one")]) == 0
    parts = [str(tmp_path / "parts" / str(i)) for i in range(3)]
    for i, out in enumerate(parts):
        assert main(["embed", *common, "--part", str(i), "--parts", "3", "--out", out]) == 0
        assert open_embeddings(out).meta["rows"] == [10 * i // 3, 10 * (i + 1) // 3]
    assert main(["gather-embeddings", "--parts", *parts, "--out", str(tmp_path / "gathered")]) == 0

    one, gathered = open_embeddings(tmp_path / "one"), open_embeddings(tmp_path / "gathered")
    assert gathered.keys == one.keys == pd.read_parquet(table)["key"].tolist()
    np.testing.assert_array_equal(gathered.to_numpy(), one.to_numpy())
    ignored = ("parts", "rows_per_part", "gathered_from")
    assert {k: v for k, v in gathered.meta.items() if k not in ignored} == {
        k: v for k, v in one.meta.items() if k not in ignored}

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("embed-test").experiment_id])
    assert sorted(r.data.tags.get("wildcard.part", "-") for r in runs) == ["-", "0-of-3", "1-of-3", "2-of-3"]
    assert all(r.data.params["resolved.precision"] in ("fp32", "bf16") and r.data.metrics["items_per_s"] > 0
               for r in runs)  # fmt: skip


def test_a_part_resumes_only_with_its_own_rows(dataset, tmp_path, monkeypatch):
    append = EmbeddingWriter.append

    def killed_after_one_batch(self, features, keys):
        append(self, features, keys)
        raise RuntimeError("killed")

    monkeypatch.setattr(EmbeddingWriter, "append", killed_after_one_batch)
    with pytest.raises(RuntimeError):
        _embed_lite0(dataset, tmp_path / "part", rows_per_part=1, part=1, parts=3)
    monkeypatch.setattr(EmbeddingWriter, "append", append)
    with pytest.raises(ValueError, match=r"other settings.*rows \[3, 6\]"):
        _embed_lite0(dataset, tmp_path / "part", rows_per_part=1, part=1, parts=2)


def test_part_rows_cover_every_row_once():
    for count in (0, 1, 10, 11):
        for parts in (1, 2, 3, 7):
            ranges = [part_rows(count, i, parts) for i in range(parts)]
            assert ranges[0][0] == 0 and ranges[-1][1] == count
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    with pytest.raises(ValueError, match="part 3 of 3"):
        part_rows(10, 3, 3)


def test_extra_caption_set_embeds_the_samples_that_have_it(dataset, tmp_path):
    summary = embed_texts(dataset[1], MINILM, tmp_path / "category", CPU_ONE_WORKER, caption_field="category",
                          progress=False)  # fmt: skip
    store = open_embeddings(tmp_path / "category")
    assert summary["count"] == 3 and store.keys == ["wide", "alpha", "tall"]  # "big" has category None
    expected = create_encoder("all-minilm-l6-v2").encode(["shapes", "shapes", "objects"])
    np.testing.assert_allclose(store.to_numpy(), expected, **FLOAT16)
    assert store.meta["source"].endswith("#category")
