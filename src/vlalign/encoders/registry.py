"""Encoder kinds and `create_encoder`, the one way the rest of vlalign gets an encoder.

A kind is data: its modality, how its specs are written and where its implementation lives. The
implementation module is imported only when an encoder of that kind is built, so checking a config does
not pay for timm, transformers or sentence-transformers. Implementations import
the contract (`vlalign.encoders.base`), never this module.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from vlalign.encoders import hub
from vlalign.encoders.base import TEXT_POOLINGS, TOKEN_POOLINGS, reinitialise
from vlalign.schema import complete, locate


@dataclass(frozen=True)
class EncoderKind:
    modality: str  # "image" or "text"
    form: str  # how a spec of this kind is written
    # "module:callable" called as (model name, device=..., **options); options are the entry's keys that apply
    # to the modality (IMAGE_OPTIONS or TEXT_OPTIONS), every one given, and for a hub kind `local`: the
    # cached copy to load instead of the hub (None: none is cached, the library downloads).
    implementation: str
    builtins: tuple[str, ...] = ()  # specs written without a prefix (weights that ship in a package)
    hub: str | None = None  # whose hub and cache the weights come from (vlalign.encoders.hub); None: packaged


KINDS: dict[str, EncoderKind] = {
    "efficientnet-lite": EncoderKind("image", "efficientnet-lite0|1|2",
                                     "vlalign.encoders.efficientnet_lite:EfficientNetLiteEncoder",
                                     ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")),
    "all-minilm": EncoderKind("text", "all-minilm-l6-v2", "vlalign.encoders.sentence:packaged_minilm",
                              ("all-minilm-l6-v2",)),
    "timm": EncoderKind("image", "timm:<model name>", "vlalign.encoders.timm_image:TimmImageEncoder", hub="timm"),
    "hf": EncoderKind("image", "hf:<image model id or path>", "vlalign.encoders.hf:HfImageEncoder",
                      hub="transformers"),
    "hf-text": EncoderKind("text", "hf-text:<text model id or path>", "vlalign.encoders.hf:HfTextEncoder",
                           hub="transformers"),
    "st": EncoderKind("text", "st:<sentence-transformers id or path>", "vlalign.encoders.sentence:sentence_transformer",
                      hub="sentence-transformers"),
}  # fmt: skip
SPEC_FORMS = tuple(kind.form for kind in KINDS.values())
IMAGE_OPTIONS = ("path", "pooling", "model_kwargs", "precision", "compile")
TEXT_OPTIONS = ("path", "pooling", "max_length", "prefix", "model_kwargs", "precision")
IMAGE_POOLINGS = (*TOKEN_POOLINGS, "avg")  # tokens (ViTs) or a global average (CNNs)


def parse_spec(spec: str) -> tuple[EncoderKind, str]:
    """The kind of `spec` and the model name it gives; unknown forms raise naming the accepted ones."""
    for kind in KINDS.values():
        if spec in kind.builtins:
            return kind, spec
    prefix, sep, name = spec.partition(":")
    kind = KINDS.get(prefix)
    if not sep or kind is None or kind.builtins:
        raise ValueError(f"unknown encoder spec {spec!r}; accepted forms: {', '.join(SPEC_FORMS)}")
    if not name:
        raise ValueError(f"encoder spec {spec!r} names no model after {prefix!r}")
    return kind, name


def is_text_spec(spec: str) -> bool:
    """Whether `spec` names a text encoder, known from the spec alone (nothing is loaded)."""
    return parse_spec(spec)[0].modality == "text"


def encoder_options(entry: dict) -> dict:
    """`create_encoder` keyword arguments from a config entry of `encoders` (spec and batch size aside; other
    keys a record may carry, such as a tower's `alias`, are not the encoder's)."""
    keys = set(locate("encoders.*")["properties"]) - {"spec", "batch_size"}
    return {key: value for key, value in entry.items() if key in keys}


def check_encoder_entry(entry: dict) -> list[str]:
    """What is wrong with a config entry of `encoders`, known without loading anything."""
    try:
        text = is_text_spec(entry["spec"])
    except ValueError as exc:
        return [str(exc)]
    problems = []
    pooling = entry.get("pooling")
    accepted = TEXT_POOLINGS if text else IMAGE_POOLINGS
    if pooling is not None and pooling not in accepted:
        problems.append(f"pooling {pooling!r} is for the other modality; accepted: {accepted}")
    if not text and (entry.get("max_length") is not None or entry.get("prefix")):
        problems.append("max_length and prefix apply to text encoders only")
    if text and entry.get("compile"):
        problems.append("compile applies to image encoders only")
    return problems


def uses_hub(entry: dict) -> bool:
    """Whether a config entry's weights may come from a hub (a hub kind, no local `path`), known from the spec
    alone: the encoders the fetch-encoder stage is for."""
    return parse_spec(entry["spec"])[0].hub is not None and not entry.get("path")


def hub_location(entry: dict) -> hub.HubLocation | None:
    """Where the weights of a config entry of `encoders` come from on a hub, loading nothing; None for weights
    that ship in a package or a local `path`. Raises ValueError for a model its library does not know (timm is
    imported for a timm spec)."""
    if not uses_hub(entry):
        return None
    kind, name = parse_spec(entry["spec"])
    return hub.locate(kind.hub, name, entry.get("model_kwargs") or {})


def hub_problems(alias: str, entry: dict) -> list[str]:
    """What keeps a config entry's weights from loading, known without the network: a model its library does
    not know, or, with the hub in offline mode, one that is not in the local cache."""
    try:
        location = hub_location(entry)
    except ValueError as exc:
        return [f"{entry['spec']}: {exc}"]
    return hub.offline_problems(alias, entry["spec"], location) if location else []


def create_encoder(spec: str, device: str = "cpu", alias: str | None = None, **options):
    """Build the encoder named by `spec` (see SPEC_FORMS) on `device`. `options` are the keys of a config entry
    of `encoders` (`path`, `pooling`, `precision`, `model_kwargs`, `random_init`, ...; see the schema), the
    others taking the schema's defaults. `path` loads local weights instead of a hub; `random_init` (a seed)
    re-draws every weight: the same architecture untrained, the control of a probing matrix. A hub model loads
    from the local cache when it is there; when it is not and the hub cannot serve it, EncoderUnavailable says
    so within seconds, naming `alias` (the config's name for the encoder) and how to use a local copy.
    """
    if options.get("path") is not None:
        options["path"] = os.fspath(options["path"])  # a Path is as good as the config's string
    entry = complete("encoders.*", {"spec": spec, **options}, what=f"encoder {spec}")
    problems = check_encoder_entry(entry)
    if problems:
        raise ValueError(f"{spec}: {'; '.join(problems)}")
    kind, name = parse_spec(spec)
    keys = TEXT_OPTIONS if kind.modality == "text" else IMAGE_OPTIONS
    options = {key: entry[key] for key in keys}
    if kind.hub is not None:  # before the library is imported: a model that cannot be had fails in seconds
        location = hub_location(entry)
        options["local"] = hub.local_weights(alias, spec, location) if location else None
    module, _, attribute = kind.implementation.partition(":")
    build = getattr(importlib.import_module(module), attribute)
    encoder = build(name, device=device, **options)
    if entry["random_init"] is not None:
        reinitialise(encoder.model, entry["random_init"])
        encoder.random_init = int(entry["random_init"])
    return encoder
