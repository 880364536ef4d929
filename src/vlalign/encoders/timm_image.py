"""Image towers from timm: ViTs pooled over their final-normed tokens, CNNs by their global pool."""

from __future__ import annotations

from pathlib import Path

import timm
import torch

from .base import TOKEN_POOLINGS, ImageEncoder, pool_tokens


def _input_side(model, data_config: dict) -> int:
    patch_embed = getattr(model, "patch_embed", None)
    fixed = getattr(patch_embed, "img_size", None)
    # An img_size=... override leaves the pretrained cfg's input size as it was, so the patch
    # embedding (whose position embeddings were built for it) is the truth for token models.
    if fixed is not None:
        return timm.layers.to_2tuple(fixed)[0]
    return data_config["input_size"][-1]


class TimmImageEncoder(ImageEncoder):
    def __init__(self, name: str, device: str, path, pooling: str | None, model_kwargs: dict, precision: str,
                 compile: bool, local: str | None = None):
        source, weights = name, path
        if local and Path(local).is_dir():  # an hf-hub: model's cached repository: its config and weights
            source = f"local-dir:{local}"
        elif local:  # the hub's weights file, cached
            weights = local
        model = timm.create_model(
            source,
            # Always pretrained: with path= the overlay makes timm load that file instead of the
            # hub (pretrained=False would silently ignore the file and keep random weights).
            pretrained=True,
            num_classes=0,
            pretrained_cfg_overlay=dict(file=str(weights)) if weights else None,
            **model_kwargs,
        )
        config = timm.data.resolve_data_config({}, model=model, use_test_size=True)
        self.is_token_model = hasattr(model, "num_prefix_tokens")
        pooling = pooling or ("cls" if self.is_token_model else "avg")
        accepted = TOKEN_POOLINGS if self.is_token_model else ("avg",)
        if pooling not in accepted:
            raise ValueError(f"timm:{name}: pooling {pooling!r} not in {accepted}")
        super().__init__(
            f"timm:{name}", _input_side(model, config),
            [m * 255 for m in config["mean"]], [s * 255 for s in config["std"]],
            pooling, device, path=path, crop_ratio=config.get("crop_pct", 1.0),
            channels_last=not self.is_token_model, precision=precision, compile=compile,
        )
        self.model = model
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
        self._prepare()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.model.forward_features(x)
        if self.is_token_model:
            return pool_tokens(tokens, self.pooling, self.num_prefix_tokens)
        # The model's own pre-logits head: global average pool plus any head norm (ConvNeXt).
        return self.model.forward_head(tokens, pre_logits=True)
