"""A trained aligner applied to frozen-encoder features: the shared space that scoring and evaluation read."""

from __future__ import annotations

import numpy as np
import torch


def project(model, image_emb: np.ndarray | None, text_emb: np.ndarray | None,
            name: str = "the aligner") -> tuple[np.ndarray | None, ...]:  # fmt: skip
    """The aligner's towers on frozen features: L2-normalised shared-space embeddings (None stays None).
    Features of another width than the aligner was trained on (other encoders) are refused, naming `name`."""
    device = next(model.parameters()).device

    def run(tower, features):
        if features is None:
            return None
        side = "image" if tower == model.encode_image else "text"
        expected = model.settings[f"{side}_dim"]
        if features.ndim != 2 or features.shape[1] != expected:
            raise ValueError(f"{name} was trained on {expected}-d {side} features, but these {side} embeddings are "
                             f"{tuple(features.shape)}: they come from another {side} encoder")
        with torch.inference_mode():
            return tower(torch.as_tensor(features, dtype=torch.float32, device=device)).float().cpu().numpy()

    return run(model.encode_image, image_emb), run(model.encode_text, text_emb)
