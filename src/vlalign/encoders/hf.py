"""Towers from transformers: ViT-family image models (`hf:`) and text models (`hf-text:`)."""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

from vlalign.devices import resolve_precision

from .base import TEXT_POOLINGS, TOKEN_POOLINGS, ImageEncoder, TextEncoder, pool_tokens


def _processor_geometry(processor) -> tuple[int, float, list[float], list[float]]:
    """Input side, centre-crop ratio and mean/std in 0..255 units, as the processor prepares images."""
    size = processor.size
    resized = size.get("height") or size.get("shortest_edge")
    side, crop_ratio = resized, 1.0
    if getattr(processor, "do_center_crop", False) and getattr(processor, "crop_size", None):
        # Resize the short side to `resized`, then crop `side`: a centre crop of side/resized.
        side = processor.crop_size["height"]
        crop_ratio = min(1.0, side / resized)
    # The processor rescales first, so its mean/std are in rescaled units.
    scale = processor.rescale_factor if getattr(processor, "do_rescale", True) else 1.0
    mean = [m / scale for m in processor.image_mean]
    std = [s / scale for s in processor.image_std]
    return int(side), crop_ratio, mean, std


def _source(name: str, path, local: str | None) -> tuple[str, dict]:
    """What from_pretrained loads (the configured path, the hub's cached copy, or the hub id) and, for the cached
    copy, the option that keeps transformers off the network (remote code it names included)."""
    if local:
        return local, {"local_files_only": True}
    return str(path or name), {}


class HfImageEncoder(ImageEncoder):
    """Pools `last_hidden_state`, which ViT and DINOv2 already pass through their final norm.

    transformers picks PyTorch's fused SDPA attention by itself where the architecture has it;
    `model_kwargs={"attn_implementation": ...}` overrides it.
    """

    def __init__(self, name: str, device: str, path, pooling: str | None, model_kwargs: dict, precision: str,
                 compile: bool, local: str | None = None):
        pooling = pooling or "cls"
        if pooling not in TOKEN_POOLINGS:
            raise ValueError(f"hf:{name}: pooling {pooling!r} not in {TOKEN_POOLINGS}")
        source, offline = _source(name, path, local)
        side, crop_ratio, mean, std = _processor_geometry(AutoImageProcessor.from_pretrained(source, **offline))
        super().__init__(f"hf:{name}", side, mean, std, pooling, device, path=path, crop_ratio=crop_ratio,
                         precision=precision, compile=compile)
        self.model = AutoModel.from_pretrained(source, **offline, **model_kwargs)
        # CLS plus DINOv2's register tokens precede the patch tokens.
        self.num_prefix_tokens = 1 + int(getattr(self.model.config, "num_register_tokens", 0) or 0)
        self._prepare()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.model(pixel_values=x).last_hidden_state
        if tokens.ndim != 3:
            raise ValueError(f"{self.spec}: last_hidden_state is not a token sequence; use timm: for CNNs")
        return pool_tokens(tokens, self.pooling, self.num_prefix_tokens)


def _pool_text(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
    # last: the last attended position, whichever side the tokenizer pads on.
    last = mask.shape[1] - 1 - mask.flip(dims=[1]).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def _default_max_length(tokenizer, config) -> int | None:
    # Tokenizers without a limit report a huge sentinel; fall back to the position table.
    if tokenizer.model_max_length < 1_000_000:
        return int(tokenizer.model_max_length)
    return getattr(config, "max_position_embeddings", None)


class HfTextEncoder(TextEncoder):
    def __init__(self, name: str, device: str, path, pooling: str | None, max_length: int | None, prefix: str,
                 model_kwargs: dict, precision: str, local: str | None = None):
        if pooling not in TEXT_POOLINGS:
            raise ValueError(
                f"hf-text:{name}: pooling must be one of {TEXT_POOLINGS}, the model's own "
                f"(CLS for GTE, last token for decoder embedders, mean for MiniLM/mpnet); got {pooling!r}"
            )
        source, offline = _source(name, path, local)
        self.spec = f"hf-text:{name}"
        self.pooling = pooling
        self.prefix = prefix
        self.path = None if path is None else str(path)
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(source, **offline)
        self.model = AutoModel.from_pretrained(source, **offline, **model_kwargs)
        self.model.eval().requires_grad_(False).to(self.device)
        self.max_length = max_length or _default_max_length(self.tokenizer, self.model.config)
        self.dim = int(self.encode(["dimension probe"], batch_size=1).shape[1])

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        # Longest first, so similar lengths share a batch (little padding) and an out-of-memory
        # batch size shows at once rather than at the end.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        batches = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                [texts[i] for i in order[start:start + batch_size]],
                padding=True, truncation=self.max_length is not None, max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state
            batches.append(_pool_text(hidden, batch["attention_mask"], self.pooling).float().cpu().numpy())
        features = np.empty((len(texts), batches[0].shape[1]), dtype=np.float32)
        features[order] = np.concatenate(batches)
        return features
