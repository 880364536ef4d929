"""SAIL-style alignment layers on frozen embeddings: heads, losses, optimiser, trainer, checkpoints."""

from vlalign.align.checkpoint import load_checkpoint, save_checkpoint
from vlalign.align.heads import MLP, AlignmentModel, AlignmentTower, StarMLP
from vlalign.align.losses import LOSSES, infonce_loss, siglip_loss
from vlalign.align.optim import Lion, cosine_schedule
from vlalign.align.trainer import DEFAULT_SETTINGS, TrainResult, train_alignment

__all__ = [
    "AlignmentModel", "AlignmentTower", "DEFAULT_SETTINGS", "LOSSES", "Lion", "MLP", "StarMLP",
    "TrainResult", "cosine_schedule", "infonce_loss", "load_checkpoint", "save_checkpoint",
    "siglip_loss", "train_alignment",
]
