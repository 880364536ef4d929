"""Alignment layers trained on top of frozen encoder embeddings (SAIL: LayerNorm → head → L2)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vlalign.schema import defaults

HEADS = ("star", "mlp", "linear")
# The training settings that shape the model (and its checkpoint's `model` record).
MODEL_KEYS = ("head", "target_dim", "width_factor", "layer_norm", "text_only", "logit_scale_init", "logit_bias_init")
MAX_LOGIT_SCALE = math.log(100.0)


def _xavier(module: nn.Module) -> None:
    # SAIL initialises its GLU layers with Xavier-uniform and zero bias; the other heads get the
    # same so that head comparisons differ in architecture only.
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


class StarMLP(nn.Module):
    """Gated ("star") MLP: g(relu6(f1(x)) * f2(x)), hidden width = width_factor · d_in."""

    def __init__(self, d_in: int, d_out: int, width_factor: int = 8):
        super().__init__()
        hidden = width_factor * d_in
        self.f1 = nn.Linear(d_in, hidden)
        self.f2 = nn.Linear(d_in, hidden)
        self.g = nn.Linear(hidden, d_out)
        _xavier(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.g(F.relu6(self.f1(x)) * self.f2(x))


class MLP(nn.Module):
    """Linear-GELU-Linear with hidden width = width_factor · d_in."""

    def __init__(self, d_in: int, d_out: int, width_factor: int = 4):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, width_factor * d_in), nn.GELU(), nn.Linear(width_factor * d_in, d_out)
        )
        _xavier(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_head(head: str, d_in: int, d_out: int, width_factor: int) -> nn.Module:
    if head == "star":
        return StarMLP(d_in, d_out, width_factor)
    if head == "mlp":
        return MLP(d_in, d_out, width_factor)
    if head == "linear":
        layer = nn.Linear(d_in, d_out)
        _xavier(layer)
        return layer
    raise ValueError(f"unknown alignment head {head!r}; expected one of {HEADS}")


class AlignmentTower(nn.Module):
    """One side of the aligner: optional LayerNorm, a head (or none), then L2 normalisation.

    head=None keeps the input space (ShareLock-style frozen side), so it needs no target_dim.
    """

    def __init__(
        self,
        d_in: int,
        head: str | None = "star",
        target_dim: int = 1024,
        width_factor: int = 8,
        layer_norm: bool = True,
    ):
        super().__init__()
        self.norm = nn.LayerNorm(d_in) if layer_norm else nn.Identity()
        self.head = nn.Identity() if head is None else make_head(head, d_in, target_dim, width_factor)
        self.out_dim = d_in if head is None else target_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.norm(x)), dim=-1)


class AlignmentModel(nn.Module):
    """Image and text towers plus the learnable SigLIP temperature (log-space) and bias.

    text_only=True (ShareLock-style): the image side is only LayerNorm (if enabled) + L2, and the
    text tower maps into the image feature space, so the shared dimension is image_dim and
    target_dim is not used.
    """

    def __init__(self, image_dim: int, text_dim: int, **settings):
        """`settings`: the training settings of MODEL_KEYS (head, target_dim, width_factor, layer_norm, text_only,
        logit_scale_init, logit_bias_init), the others taking the schema's defaults."""
        super().__init__()
        unknown = sorted(set(settings) - set(MODEL_KEYS))
        if unknown:
            raise TypeError(f"AlignmentModel: unknown settings {unknown}; known: {list(MODEL_KEYS)}")
        s = {**{k: v for k, v in defaults("train.defaults").items() if k in MODEL_KEYS}, **settings}
        head, target_dim, width_factor, layer_norm, text_only = (s[k] for k in MODEL_KEYS[:5])
        # Everything needed to rebuild this model from a checkpoint's JSON.
        self.settings = dict(
            image_dim=int(image_dim),
            text_dim=int(text_dim),
            head=head,
            target_dim=int(target_dim),
            width_factor=int(width_factor),
            layer_norm=bool(layer_norm),
            logit_scale_init=float(s["logit_scale_init"]),
            logit_bias_init=float(s["logit_bias_init"]),
            text_only=bool(text_only),
        )
        if head not in HEADS:
            raise ValueError(f"unknown alignment head {head!r}; expected one of {HEADS}")
        if text_only:
            self.image_tower = AlignmentTower(image_dim, None, layer_norm=layer_norm)
            shared_dim = image_dim
        else:
            self.image_tower = AlignmentTower(image_dim, head, target_dim, width_factor, layer_norm)
            shared_dim = target_dim
        self.text_tower = AlignmentTower(text_dim, head, shared_dim, width_factor, layer_norm)
        self.embed_dim = shared_dim
        self.logit_scale = nn.Parameter(torch.tensor(self.settings["logit_scale_init"]))
        self.logit_bias = nn.Parameter(torch.tensor(self.settings["logit_bias_init"]))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.image_tower(x)

    def encode_text(self, x: torch.Tensor) -> torch.Tensor:
        return self.text_tower(x)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(image), self.encode_text(text)

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """Keep the temperature in [1, 100] (log-space [0, ln 100]) as SAIL does after each step."""
        self.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)
