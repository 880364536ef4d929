"""The embed stage end to end on CPU with the packaged EfficientNet-Lite0 and MiniLM."""

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures_models import write_test_shards

from vlalign.embed import embed_images, embed_texts, resolve_device
from vlalign.encoders import create_encoder
from vlalign.store.beton import image_loader, write_beton
from vlalign.store.embeddings import EmbeddingWriter, open_embeddings

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
    return embed_images(*dataset, "efficientnet-lite0", {}, out, batch_size=4, num_workers=1, device="cpu",
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
    summary = embed_texts(dataset[1], "all-minilm-l6-v2", {}, tmp_path / "txt", batch_size=4, device="cpu",
                          progress=False, rows_per_part=3)
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


def test_table_and_beton_must_agree(dataset, tmp_path):
    pd.read_parquet(dataset[1]).iloc[:5].to_parquet(tmp_path / "short.parquet")
    with pytest.raises(ValueError, match="holds 10 images"):
        embed_images(dataset[0], tmp_path / "short.parquet", "efficientnet-lite0", {}, tmp_path / "img",
                     num_workers=1, device="cpu", progress=False)


def test_resolve_device():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")
