"""Train the alignment layers on precomputed, paired image and text embeddings (SAIL recipe)."""

from __future__ import annotations

import functools
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from vlalign import devices
from vlalign.align.distributed import (
    average_gradients,
    broadcast_parameters,
    gather_rows,
    join_process_group,
    rank_and_size,
    shard,
)
from vlalign.align.heads import MODEL_KEYS, AlignmentModel
from vlalign.align.losses import LOSSES, USES_BIAS
from vlalign.align.optim import cosine_schedule, make_optimizer
from vlalign.align.state import latest_state, read_progress, restore_state, write_state
from vlalign.progress import format_duration
from vlalign.schema import complete

PROGRESS_LINES = 10

LogFn = Callable[[int, dict], None]


@dataclass
class TrainResult:
    model: AlignmentModel
    history: list[dict] = field(default_factory=list)
    resumed_from_step: int | None = None  # the step of the state the run continued from, if any


def resolve_settings(settings: dict | None) -> dict:
    """`settings` completed with the schema's defaults (`train_settings`: SAIL's recipe); an unknown key or a
    value out of range is an error naming it (a typo must not be ignored)."""
    return complete("train.defaults", settings, what="training settings")


def batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Consecutive slices of `order`; a last partial batch is kept only if it has >= 2 pairs."""
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    # Indices sorted inside a batch: reads from a memmap become sequential, and both losses are
    # unchanged by reordering a batch's pairs together.
    return [np.sort(c) for c in chunks if len(c) >= 2]


def _to_device(array, idx: np.ndarray, device: torch.device) -> torch.Tensor:
    # One fancy-indexing read per batch (np.memmap or a lazy StoreRows), converted to float32 on the host.
    return torch.from_numpy(np.asarray(array[idx], dtype=np.float32)).to(device)


def _fits_on_device(arrays: list, device: torch.device) -> bool:
    """Whether every array, as float16, takes under half of the GPU's free memory."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return sum(2 * a.shape[0] * a.shape[1] for a in arrays) < free / 2


def _upload(array, device: torch.device, rows_per_read: int = 65536) -> torch.Tensor:
    """The whole array as a float16 tensor on the device, read a slice at a time (the stores are float16)."""
    out = torch.empty(tuple(array.shape), dtype=torch.float16, device=device)
    for start in range(0, len(array), rows_per_read):
        rows = np.arange(start, min(start + rows_per_read, len(array)))
        out[rows[0]:rows[-1] + 1] = torch.from_numpy(np.asarray(array[rows], dtype=np.float16)).to(device)
    return out


def _param_groups(model: AlignmentModel, weight_decay: float, loss: str) -> list[dict]:
    # Weight decay on weight matrices only; biases, LayerNorm gains and the logit scale/bias are
    # not decayed (common CLIP practice). The bias is not optimised for a loss that ignores it, so
    # it is not decayed away either.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if name == "logit_bias" and loss not in USES_BIAS:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _split(n: int, val_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if val_fraction == 0:
        return np.arange(n), np.arange(0)
    perm = rng.permutation(n)
    n_val = int(round(n * val_fraction))
    if n_val < 2 or n - n_val < 2:
        raise ValueError(f"val_fraction={val_fraction} of {n} pairs leaves < 2 pairs on one side")
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class _Batches:
    """The image, text, extra-caption and hard-negative rows of one batch, on the device.

    `resident`: the arrays are uploaded to the device once and batches are gathered there, so no
    step waits on host reads (chosen when they fit, see `_fits_on_device`); otherwise each batch
    is read from the (memory-mapped) arrays and streamed.
    """

    def __init__(self, arrays: list, has_negatives: bool, device, resident: bool):
        """`arrays`: image, text, the extra caption sets, then the hard negatives when `has_negatives`."""
        self.resident = resident
        self.arrays = [_upload(a, device) for a in arrays] if resident else arrays
        self.has_negatives = has_negatives
        self.device = device

    def _rows(self, array, idx: np.ndarray) -> torch.Tensor:
        if self.resident:
            return array[torch.from_numpy(idx).to(self.device)].float()
        return _to_device(array, idx, self.device)

    def __call__(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
        img, txt, *extra = (self._rows(a, idx) for a in self.arrays)
        negatives = None
        if self.has_negatives:
            negatives = extra.pop()
            negatives = negatives[~torch.isnan(negatives[:, 0])]  # NaN rows: no rule applied to that caption
        # A pair without a caption in an extra set (a NaN row) takes its main caption there.
        extra = [torch.where(torch.isnan(e[:, :1]), txt, e) for e in extra]
        return img, txt, extra, negatives


def _loss(model, loss_fn, img, txt, extra, negatives, autocast, gather=None):
    """The loss of a batch; `gather` (data-parallel) joins every rank's features into the global batch."""
    with autocast():
        z_img, z_txt = model(img, txt)
        z_extra = [model.encode_text(t) for t in extra]
        # Encoded even when empty: with ranks, every one must take part in the gather below.
        z_negatives = model.encode_text(negatives) if negatives is not None else None
    # The loss runs in fp32 outside autocast: exp(scale)·cosine and logsigmoid need the precision.
    z_img, z_txt, *z_extra = (z.float() for z in (z_img, z_txt, *z_extra))
    z_negatives = None if z_negatives is None else z_negatives.float()
    if gather is not None:
        z_img, z_txt, *z_extra = (gather(z) for z in (z_img, z_txt, *z_extra))
        z_negatives = None if z_negatives is None else gather(z_negatives)
    if z_negatives is not None and len(z_negatives) == 0:
        z_negatives = None
    return loss_fn(z_img, z_txt, model.logit_scale, model.logit_bias, extra_txt=z_extra, negatives=z_negatives)


@torch.no_grad()
def _validation_loss(model, loss_fn, fetch, val_idx, batch_size, autocast) -> float:
    # Batches of (nearly) equal size; note a contrastive loss depends on the batch size, so it is
    # comparable across epochs of one run, not with the training loss of another batch size.
    model.eval()
    n_chunks = math.ceil(len(val_idx) / batch_size)
    total = 0.0
    for idx in np.array_split(val_idx, n_chunks):
        total += _loss(model, loss_fn, *fetch(idx), autocast).item() * len(idx)
    model.train()
    return total / len(val_idx)


def _fingerprint(cfg: dict, arrays: list) -> dict:
    """What a saved state must share with this run to continue it: every setting and the data's shapes."""
    # How often states are written does not change the result, so a resumed run may change it.
    settings = {k: v for k, v in cfg.items() if k != "checkpoint_every"}
    data = {"shapes": [list(a.shape) for a in arrays]}
    return json.loads(json.dumps({"settings": settings, "data": data}, default=str))  # as it reads back


def _differences(saved: dict, current: dict) -> list[str]:
    return sorted(f"{section}.{k}: {saved[section].get(k)!r} -> {current[section].get(k)!r}"
                  for section in current for k in set(saved[section]) | set(current[section])
                  if saved[section].get(k) != current[section].get(k))


def train_alignment(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    settings: dict | None = None,
    log_fn: LogFn | None = None,
    device: str | torch.device = "cpu",
    extra_text_emb: list[np.ndarray] | None = None,
    state_dir: str | os.PathLike | None = None,
    negative_text_emb: np.ndarray | None = None,
    resident: bool | None = None,
) -> TrainResult:
    """Train an AlignmentModel so that image_emb[i] and text_emb[i] (and extra_text_emb[k][i]) align.

    Each extra caption set adds its own B×B block to the loss (SAIL's multi-positive); a NaN row in
    one means the pair has no caption in that set and its main caption stands in.

    With `hard_negatives` set, negative_text_emb[i] is a hard-negative caption of pair i (a NaN row
    where it has none); each batch's negatives join the loss (see `vlalign.align.losses`).
    The arrays may be np.memmap or lazy `StoreRows`: only batches are read. `resident` (default:
    when they fit in half the free GPU memory) uploads them to the device once as float16.

    Per optimiser step, log_fn(step, {"loss", "logit_scale" (exp'd), "logit_bias", "lr",
    "pairs_per_s"}); per epoch, log_fn(step, {"epoch", "train_loss"[, "val_loss"]}). `step`
    counts finished optimiser steps from 1; history holds the same dicts with "step" added.

    With `state_dir`, the training state is saved there every `checkpoint_every` steps (None: at
    the end of each epoch), and a run continues from the newest state found there, reaching the
    same weights as an uninterrupted run; log_fn then sees only the steps after that state, while
    history holds them all. A state saved with other settings or data shapes is an error.
    """
    cfg = resolve_settings(settings)
    extra_text_emb = list(extra_text_emb or [])
    n = len(image_emb)
    if len(text_emb) != n or any(len(e) != n for e in extra_text_emb):
        raise ValueError("image, text and extra text embeddings must have one row per pair")
    if cfg["multi_positive"] and not extra_text_emb:
        raise ValueError("multi_positive needs extra caption embeddings (captions.extra)")
    if cfg["hard_negatives"] != (negative_text_emb is not None):
        raise ValueError("hard_negatives needs negative caption embeddings, and they are only used with it")
    if negative_text_emb is not None and negative_text_emb.shape != text_emb.shape:
        raise ValueError(f"negative caption embeddings {negative_text_emb.shape} must match the captions' "
                         f"{text_emb.shape}")
    device = join_process_group(torch.device(device))
    rank, world = rank_and_size()
    leader = rank == 0  # logs, prints and writes the training state

    torch.manual_seed(cfg["seed"])
    rng = np.random.default_rng(cfg["seed"])
    train_idx, val_idx = _split(n, cfg["val_fraction"], rng)
    if len(train_idx) < 2:
        raise ValueError(f"need at least 2 training pairs, got {len(train_idx)}")

    model = AlignmentModel(image_emb.shape[1], text_emb.shape[1],
                           **{k: cfg[k] for k in MODEL_KEYS}).to(device)
    if world > 1:
        broadcast_parameters(model)
    model.train()
    loss_fn = functools.partial(LOSSES[cfg["loss"]], chunk_size=cfg["loss_chunk_size"])
    optimizer = make_optimizer(cfg["optimizer"], _param_groups(model, cfg["weight_decay"], cfg["loss"]),
                               cfg["lr"], cfg["betas"], cfg["weight_decay"])
    steps_per_epoch = len(batches(train_idx, cfg["batch_size"]))
    total_steps = steps_per_epoch * cfg["epochs"]
    scheduler = cosine_schedule(optimizer, total_steps, cfg["warmup_fraction"])
    data = [image_emb, text_emb, *extra_text_emb, *([] if negative_text_emb is None else [negative_text_emb])]
    fetch = _Batches(data, negative_text_emb is not None, device,
                     resident=_fits_on_device(data, device) if resident is None else resident)

    autocast = functools.partial(devices.autocast, device, cfg["precision"])

    fingerprint = _fingerprint(cfg, data)
    # Where the loop starts: epoch, batches of it already done and their loss sums.
    progress = {"step": 0, "epoch": 1, "batch": 0, "epoch_loss": 0.0, "epoch_pairs": 0}
    history: list[dict] = []
    resumed_from = latest_state(state_dir) if state_dir is not None else None
    if resumed_from is not None:
        progress = read_progress(resumed_from)
        mismatch = _differences(progress["fingerprint"], fingerprint)
        if mismatch:
            raise ValueError(f"{state_dir}: its training state ({resumed_from.name}) was saved by a run with other "
                             f"settings or data ({'; '.join(mismatch)}); delete that folder to start over")
        history = restore_state(resumed_from, model, optimizer, scheduler, device)
        # The split above was redrawn from the seed; the batch order continues from the state's epoch.
        rng.bit_generator.state = progress["epoch_rng"]
        if leader:
            print(f"[align] resuming from step {progress['step']}/{total_steps} (state in {resumed_from})", flush=True)

    def log(step: int, metrics: dict) -> None:
        history.append({"step": step, **metrics})
        if log_fn is not None and leader:
            log_fn(step, metrics)

    def save_state(epoch: int, batch: int, epoch_rng: dict, epoch_loss: float, epoch_pairs: int) -> None:
        write_state(state_dir, model, optimizer, scheduler, device,
                    {"fingerprint": fingerprint, "step": step, "epoch": epoch, "batch": batch,
                     "epoch_rng": epoch_rng, "epoch_loss": epoch_loss, "epoch_pairs": epoch_pairs},
                    history)

    saving = state_dir is not None and leader
    every = cfg["checkpoint_every"] if saving else None
    gather = gather_rows if world > 1 else None
    print_every = max(1, total_steps // PROGRESS_LINES)
    step, first_step, started = progress["step"], progress["step"], time.perf_counter()
    # Mixed precision: the loss's float32 matmuls (the B×B logits) run on TF32 tensor cores, as SAIL's fp16 loss
    # does in its precision class; fp32 keeps them exact.
    with devices.loss_matmuls(device, cfg["precision"]):
        for epoch in range(progress["epoch"], cfg["epochs"] + 1):
            epoch_rng = rng.bit_generator.state  # a state saved mid-epoch redraws the epoch's order from here
            order = train_idx[rng.permutation(len(train_idx))]
            done, epoch_loss, epoch_pairs = 0, 0.0, 0
            if epoch == progress["epoch"]:
                done, epoch_loss, epoch_pairs = progress["batch"], progress["epoch_loss"], progress["epoch_pairs"]
            for batch, idx in enumerate(batches(order, cfg["batch_size"])[done:], start=done + 1):
                t0 = time.perf_counter()
                loss = _loss(model, loss_fn, *fetch(shard(idx, rank, world)), autocast, gather)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if world > 1:
                    average_gradients(model)
                if cfg["grad_clip"] is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                model.clamp_logit_scale()
                loss_value = loss.item()  # synchronises with the device, so the timing is honest
                step += 1
                pairs_per_s = len(idx) / max(time.perf_counter() - t0, 1e-9)
                epoch_loss += loss_value * len(idx)
                epoch_pairs += len(idx)
                log(step, {"loss": loss_value, "logit_scale": model.logit_scale.exp().item(),
                           "logit_bias": model.logit_bias.item(), "lr": lr, "pairs_per_s": pairs_per_s})
                # After logging, so that the state's history holds this step.
                if every is not None and step % every == 0:
                    save_state(epoch, batch, epoch_rng, epoch_loss, epoch_pairs)
                if leader and (step % print_every == 0 or step == total_steps):
                    elapsed = time.perf_counter() - started
                    eta = elapsed / (step - first_step) * (total_steps - step)
                    print(f"[align] step {step}/{total_steps} epoch {epoch}/{cfg['epochs']} "
                          f"loss {loss_value:.4f} {pairs_per_s:,.0f} pairs/s ETA {format_duration(eta)}",
                          flush=True)
            epoch_metrics = {"epoch": epoch, "train_loss": epoch_loss / epoch_pairs}
            if len(val_idx):
                epoch_metrics["val_loss"] = _validation_loss(model, loss_fn, fetch, val_idx,
                                                             cfg["batch_size"], autocast)
            log(step, epoch_metrics)
            if saving and every is None:
                save_state(epoch + 1, 0, rng.bit_generator.state, 0.0, 0)
    model.eval()
    return TrainResult(model=model, history=history,
                       resumed_from_step=progress["step"] if resumed_from is not None else None)
