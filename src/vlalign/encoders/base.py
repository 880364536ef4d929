"""The encoder contract: what every frozen image or text tower is and offers. Implementations subclass
`ImageEncoder` or `TextEncoder`; `vlalign.encoders.registry` builds them from a spec."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vlalign.devices import autocast, resolve_precision

TOKEN_POOLINGS = ("cls", "patch", "concat")
TEXT_POOLINGS = ("cls", "mean", "last")


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

    def __init__(self, spec: str, image_size: int, mean, std, pooling: str, device: str, path, precision: str,
                 compile: bool, crop_ratio: float = 1.0, channels_last: bool = False):
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
