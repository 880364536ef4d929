"""The exported model: `vlalign train` writes a self-contained run folder, `vlalign.load_model` reruns
the whole chain (image preparation, frozen encoders, alignment towers) on raw images and texts."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import COLOURS, SHAPES, shape_image
from PIL import Image

import vlalign
from vlalign.cli import main
from vlalign.data.shards import Sample, ShardWriter
from vlalign.embed.features import embed_images, embed_texts
from vlalign.align.projection import project
from vlalign.model import prepare_image
from vlalign.store.beton import image_loader, write_beton
from vlalign.store.embeddings import open_embeddings

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <finalize object:pytest.PytestUnraisableExceptionWarning"
)
MAX_RESOLUTION = 80
ENCODERS = {
    "image": {"alias": "lite0", "spec": "efficientnet-lite0", "batch_size": 4, "precision": "fp32"},
    "text": {"alias": "minilm", "spec": "all-minilm-l6-v2", "batch_size": 4, "precision": "fp32"},
}
# Sizes below and above MAX_RESOLUTION, wide and tall, so the shrink, the padding and the crop all act.
SIZES = [(96, 96), (120, 40), (30, 70), (64, 64), (200, 150), (50, 90), (81, 81), (40, 40)]


def _images() -> list[tuple[str, Image.Image, str]]:
    items = []
    kinds = zip(SIZES, [*SHAPES.items()] * 2, [*COLOURS.items()] * 2)
    for i, (size, (category, shape), (colour, rgb)) in enumerate(kinds):
        # Every other image keeps its alpha channel: it must come out on white, as in the workflow.
        image = shape_image(shape, rgb, size=size, alpha=i % 2 == 0)
        items.append((f"k{i}", image, f"a {colour} {shape} among the {category}"))
    return items


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Convert, embed and train as the workflow does (the real train command), on eight drawn images."""
    root = tmp_path_factory.mktemp("model")
    items = _images()
    with ShardWriter(root / "shards", samples_per_shard=8) as writer:
        for key, image, caption in items:
            writer.write(Sample(key=key, image=_png(image), image_ext="png", caption=caption, meta={}))
    beton, table = root / "pool.beton", root / "pool.parquet"
    # Raw pixels, so the stored images are exactly what convert produced (no JPEG rounding).
    write_beton([root / "shards"], beton, table, max_resolution=MAX_RESOLUTION, num_workers=1, write_mode="raw")
    options = {"precision": "fp32"}
    cpu = {"num_workers": 1, "device": "cpu"}
    embed_images(beton, table, {"spec": "efficientnet-lite0", "batch_size": 4, **options}, root / "img", cpu,
                 progress=False)  # fmt: skip
    embed_texts(table, {"spec": "all-minilm-l6-v2", "batch_size": 4, **options}, root / "txt", cpu, progress=False)
    (root / "pool").mkdir()
    pd.DataFrame({"key": [k for k, _, _ in items], "kept": True}).to_parquet(root / "pool" / "decisions.parquet")
    settings = {
        "experiment": "model-test", "tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "device": "cpu",
        "train": {"head": "star", "width_factor": 2, "target_dim": 16, "batch_size": 4, "epochs": 2, "lr": 1e-3,
                  "val_fraction": 0.0, "precision": "fp32"},
        "encoders": ENCODERS, "convert": {"max_resolution": MAX_RESOLUTION},
    }  # fmt: skip
    out = root / "train" / "tiny"
    code = main(["train", "--settings", json.dumps(settings), "--run", "tiny", "--image-embeddings", str(root / "img"),
                 "--text-embeddings", str(root / "txt"), "--pool-decisions", str(root / "pool" / "decisions.parquet"),
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    return {"root": root, "out": out, "items": items, "beton": beton}


@pytest.fixture(scope="module")
def model(trained):
    return vlalign.load_model(trained["out"], device="cpu")


def test_run_folder_records_the_towers_and_has_a_model_card(trained):
    info = json.loads((trained["out"] / "model.json").read_text())
    image_meta = open_embeddings(trained["root"] / "img").meta
    image = info["towers"]["image"]
    assert {k: image[k] for k in ("spec", "image_size", "crop_ratio", "mean", "std", "pooling", "precision")} == {
        k: image_meta[k] for k in ("spec", "image_size", "crop_ratio", "mean", "std", "pooling", "precision")}
    assert (image["max_resolution"], image["padding"], image["dim"]) == (MAX_RESOLUTION, "square_on_white", 1280)
    text = info["towers"]["text"]
    assert (text["spec"], text["pooling"], text["max_length"], text["prefix"]) == ("all-minilm-l6-v2", "mean", 256, "")
    assert info["train"]["epochs"] == 2 and info["encoders"] == ENCODERS
    card = (trained["out"] / "README.md").read_text()
    final = json.loads((trained["out"] / "train_summary.json").read_text())
    for expected in ("efficientnet-lite0", "all-minilm-l6-v2", "8 image-caption pairs", "`pool`",
                     "vlalign.load_model", f"train_loss {final['train_loss']:.4f}"):  # fmt: skip
        assert expected in card


def test_prepared_images_equal_what_the_embed_stage_read(trained, model):
    encoder = model.encoder("image")
    loaded = torch.cat([im.clone() for im, _ in image_loader(trained["beton"], encoder.image_size, 8, 1,
                                                             crop_ratio=encoder.crop_ratio)])  # fmt: skip
    ours = [prepare_image(image, encoder.image_size, encoder.crop_ratio, MAX_RESOLUTION)
            for _, image, _ in trained["items"]]  # fmt: skip
    assert torch.equal(torch.from_numpy(np.stack(ours)), loaded)


def test_encode_image_equals_the_towers_on_the_embed_stage_features(trained, model, tmp_path):
    stored = open_embeddings(trained["root"] / "img").to_numpy()
    expected, _ = project(model.aligner, stored, None)
    images = [image for _, image, _ in trained["items"]]
    got = model.encode_image(images, batch_size=3)
    assert got.dtype == torch.float32 and got.shape == (8, 16)
    # The stage stored float16 features; ours are float32, so they agree to float16 rounding.
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-3)
    np.testing.assert_allclose(got.norm(dim=1).numpy(), 1.0, atol=1e-5)
    paths = []
    for i, image in enumerate(images[:2]):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    torch.testing.assert_close(model.encode_image(paths), got[:2])
    rgb = images[1].convert("RGB")  # no alpha: a tensor carries plain RGB
    tensor = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None]
    torch.testing.assert_close(model.encode_image(tensor), got[1:2])


def test_encode_text_equals_the_tower_on_the_embed_stage_features(trained, model):
    stored = open_embeddings(trained["root"] / "txt").to_numpy()
    _, expected = project(model.aligner, None, stored)
    got = model.encode_text([caption for _, _, caption in trained["items"]])
    assert got.dtype == torch.float32 and got.shape == (8, 16)
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-3)


def test_similarity_is_cosine_or_siglip_probability(model):
    rng = torch.Generator().manual_seed(0)
    image, text = torch.randn(3, 16, generator=rng), torch.randn(5, 16, generator=rng)
    cosine = model.similarity(image, text)
    assert cosine.shape == (3, 5) and cosine.abs().max() <= 1.0 + 1e-6
    expected = torch.nn.functional.normalize(image, dim=1) @ torch.nn.functional.normalize(text, dim=1).T
    torch.testing.assert_close(cosine, expected)
    prob = model.similarity(image, text, probabilities=True)
    scale, bias = model.aligner.logit_scale.exp().item(), model.aligner.logit_bias.item()
    torch.testing.assert_close(prob, torch.sigmoid(scale * expected + bias))
    assert ((prob > 0) & (prob < 1)).all()


def _copy(trained, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(trained["out"], folder)
    return folder


def _edit_json(folder, change) -> None:
    info = json.loads((folder / "model.json").read_text())
    change(info)
    (folder / "model.json").write_text(json.dumps(info))


def test_damaged_weights_are_refused_naming_the_file(trained, tmp_path):
    folder = _copy(trained, tmp_path)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8:] = b"\x00" * 8
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"copy/model\.safetensors.*damaged"):
        vlalign.load_model(folder, device="cpu")


def test_weights_that_do_not_fit_the_config_are_refused(trained, tmp_path):
    folder = _copy(trained, tmp_path)
    _edit_json(folder, lambda info: info["model"].update(target_dim=32))
    with pytest.raises(ValueError, match=r"copy/model\.safetensors: weights do not match"):
        vlalign.load_model(folder / "model.json", device="cpu")


def test_a_checkpoint_without_tower_records_is_refused(trained, tmp_path):
    folder = _copy(trained, tmp_path)
    _edit_json(folder, lambda info: info.pop("towers"))
    with pytest.raises(ValueError, match=r"copy/model\.json: no frozen-encoder records"):
        vlalign.load_model(folder, device="cpu")


def test_an_encoder_that_resolves_differently_is_refused(trained, tmp_path):
    folder = _copy(trained, tmp_path)
    _edit_json(folder, lambda info: info["towers"]["text"].update(max_length=64))
    model = vlalign.load_model(folder, device="cpu")
    with pytest.raises(ValueError, match=r"copy/model\.json: the text encoder now resolves differently.*max_length"):
        model.encode_text(["a cat"])
