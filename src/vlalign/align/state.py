"""Training state for an exact resume: weights, optimiser, schedule, counters and the run's RNGs.

Each state is a folder `step-NNNNNNNNN/` inside the state folder, written whole in a temporary folder
beside it and renamed into place (vlalign.io.atomic_dir); older states are removed only after that.
A kill at any moment therefore leaves the previous complete state or the new one. Inside:
  - model.safetensors + model.json: the weights (vlalign.align.checkpoint, checksum verified on load);
  - tensors.pt: optimiser and scheduler state dicts, the torch RNG states and the history (its
    dicts keep their key order), plain tensors and containers only, read with
    torch.load(weights_only=True), so loading a state cannot run code;
  - progress.json: counters, the numpy Generator state (128-bit integers, which JSON keeps exactly)
    and whatever else the trainer needs to check and continue a run.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import torch

from vlalign.align.checkpoint import load_checkpoint, save_checkpoint
from vlalign.io import atomic_dir, write_json

PREFIX = "step-"
TENSORS = "tensors.pt"
PROGRESS = "progress.json"


def _is_state_entry(path: Path) -> bool:
    # Complete states, and the temporary folders of writes that a kill interrupted.
    return path.name.startswith(PREFIX) or (path.name.startswith("." + PREFIX) and path.name.endswith(".part"))


def write_state(state_dir: str | os.PathLike, model, optimizer, scheduler, device: torch.device,
                progress: dict, history: list[dict], best_weights: dict | None = None) -> Path:
    """Save a state named after progress["step"] and remove the older ones; returns its folder.

    `best_weights`: the state dict that model selection keeps so far (None when it keeps none)."""
    state_dir = Path(state_dir)
    folder = state_dir / f"{PREFIX}{progress['step']:09d}"
    tensors = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
               "torch_rng": torch.get_rng_state(), "history": history, "best_weights": best_weights}
    if device.type == "cuda":
        tensors["cuda_rng"] = torch.cuda.get_rng_state(device)
    with atomic_dir(folder) as tmp:
        save_checkpoint(tmp, model)
        torch.save(tensors, tmp / TENSORS)
        write_json(tmp / PROGRESS, progress)
    for old in state_dir.iterdir():
        if old != folder and _is_state_entry(old):
            shutil.rmtree(old, ignore_errors=True)
    return folder


def latest_state(state_dir: str | os.PathLike) -> Path | None:
    """The folder of the newest complete state, or None."""
    state_dir = Path(state_dir)
    if not state_dir.is_dir():
        return None
    # Zero-padded step numbers: the last name is the newest; dot-prefixed partial writes never match.
    states = sorted(p for p in state_dir.glob(PREFIX + "*") if p.is_dir())
    return states[-1] if states else None


def _damaged(path: Path, exc: Exception) -> ValueError:
    cause = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
    return ValueError(f"{path}: not a readable training state ({cause}); delete {path.parent.parent} to start over")


def read_progress(folder: str | os.PathLike) -> dict:
    path = Path(folder) / PROGRESS
    try:
        progress = json.loads(path.read_text())
        if not {"step", "fingerprint"} <= set(progress):
            raise KeyError("step and fingerprint")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _damaged(path, exc) from exc
    return progress


def restore_state(folder: str | os.PathLike, model, optimizer, scheduler, device: torch.device
                  ) -> tuple[list[dict], dict | None]:  # fmt: skip
    """Load weights, optimiser and scheduler state and the torch RNGs saved in `folder`; returns the history and
    the best weights saved with it (on the CPU; None when there were none)."""
    folder = Path(folder)
    saved, _ = load_checkpoint(folder, device)
    model.load_state_dict(saved.state_dict())
    # map_location cpu: the RNG states must be CPU tensors; the optimiser moves its state to its parameters.
    try:
        tensors = torch.load(folder / TENSORS, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # Not torch's message: it suggests weights_only=False, which would run whatever the file holds.
        raise ValueError(f"{folder / TENSORS}: holds objects other than tensors and containers, refused (loading "
                         f"it could run code); delete {folder.parent} to start over") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise _damaged(folder / TENSORS, exc) from exc
    optimizer.load_state_dict(tensors["optimizer"])
    scheduler.load_state_dict(tensors["scheduler"])
    # RNGs last: rebuilding the saved model above draws from the torch RNG.
    torch.set_rng_state(tensors["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in tensors:
        torch.cuda.set_rng_state(tensors["cuda_rng"], device)
    return tensors["history"], tensors["best_weights"]
