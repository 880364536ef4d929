"""Alignment checkpoints: model.safetensors (weights) + model.json (config and provenance).

Weights are read with safetensors only, never with pickle, so a checkpoint cannot run code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vlalign.align.heads import AlignmentModel
from vlalign.io import atomic_path, sha256_file, write_json

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "model.json"
FORMAT = "vlalign-alignment/1"
RESERVED_KEYS = ("format", "model", "weights_sha256")


def save_checkpoint(out_dir: str | os.PathLike, model: AlignmentModel, extra: dict | None = None) -> Path:
    """Write out_dir/model.safetensors, then out_dir/model.json; returns out_dir.

    The JSON is {"format", "model": model.settings, "weights_sha256", **extra}. It is written
    last, so a folder with a model.json always has the weights it describes.
    """
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(RESERVED_KEYS))
    if clash:
        raise ValueError(f"extra keys {clash} are reserved in {CONFIG_NAME}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS_NAME
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    info = {"format": FORMAT, "model": model.settings, "weights_sha256": sha256_file(weights), **extra}
    write_json(out_dir / CONFIG_NAME, info)
    return out_dir


def _checkpoint_dir(path: Path) -> Path:
    # Accept the folder or either of its two files.
    return path.parent if path.name in (WEIGHTS_NAME, CONFIG_NAME) else path


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[AlignmentModel, dict]:
    """Rebuild the model described by model.json and load model.safetensors into it (eval mode)."""
    folder = _checkpoint_dir(Path(path))
    config, weights = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for f in (config, weights):
        if not f.is_file():
            raise FileNotFoundError(f"alignment checkpoint file missing: {f}")
    try:
        info = json.loads(config.read_text())
    except ValueError as exc:  # cut short or not JSON
        raise ValueError(f"{config}: not a readable checkpoint config ({exc})") from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        found = info.get("format") if isinstance(info, dict) else type(info).__name__
        raise ValueError(f"{config}: not a {FORMAT} checkpoint config (format={found!r})")
    if info.get("weights_sha256") != sha256_file(weights):
        raise ValueError(f"{weights}: checksum differs from weights_sha256 in {config}; "
                         "the weights were replaced or damaged after saving")
    try:
        model = AlignmentModel(**info["model"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{config}: invalid model settings: {err}") from err
    state = load_file(str(weights), device=str(device))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))
        unexpected = sorted(set(found) - set(expected))
        shapes = sorted(f"{k}: {found[k]} vs config {expected[k]}"
                        for k in set(expected) & set(found) if expected[k] != found[k])
        raise ValueError(
            f"{weights}: weights do not match the model config in {config} "
            f"(missing {missing}, unexpected {unexpected}, shape mismatches {shapes})"
        )
    model.load_state_dict(state)
    return model.to(device).eval(), info
