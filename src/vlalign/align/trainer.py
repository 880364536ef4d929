"""Train the alignment layers on precomputed, paired image and text embeddings (SAIL recipe)."""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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
# Model selection before the first evaluation.
SELECTION_START = {"best_val_loss": None, "best_step": None, "evals_since_best": 0}
# Mixed into the seed of FuseMix's draws, so that they never share a stream with the split and batch order.
FUSEMIX_STREAM = 0x46555345

LogFn = Callable[[int, dict], None]


@dataclass
class TrainResult:
    model: AlignmentModel
    history: list[dict] = field(default_factory=list)
    resumed_from_step: int | None = None  # the step of the state the run continued from, if any
    # What was trained and which weights were kept: steps, samples_seen (pairs trained on), epochs_seen,
    # kept_step, best_val_loss (with a validation split), stopped_early, keep and, when it differs from the
    # setting's, keep_reason.
    summary: dict = field(default_factory=dict)


def resolve_settings(settings: dict | None) -> dict:
    """`settings` completed with the schema's defaults (`train_settings`: SAIL's recipe); an unknown key or a
    value out of range is an error naming it (a typo must not be ignored), and so are the combinations the
    schema cannot express."""
    cfg = complete("train.defaults", settings, what="training settings")
    if cfg["samples_seen"] is not None and cfg["samples_seen"] < cfg["batch_size"]:
        raise ValueError(f"training settings: samples_seen ({cfg['samples_seen']}) is below batch_size "
                         f"({cfg['batch_size']}); a budget must pay for at least one full batch")
    if cfg["early_stop_patience"] is not None and cfg["val_fraction"] == 0:
        raise ValueError("training settings: early_stop_patience needs a validation loss, and val_fraction is 0")
    return cfg


def planned_steps(cfg: dict, steps_per_epoch: int) -> int:
    """Optimiser steps of a run: DataComp's budget, ceil(samples_seen / batch_size), whatever the pool's size;
    without one, `epochs` passes over the training pairs."""
    if cfg["samples_seen"] is not None:
        return math.ceil(cfg["samples_seen"] / cfg["batch_size"])
    return steps_per_epoch * cfg["epochs"]


def fusemix_draw(alpha: float, batch_size: int, seed: int, step: int) -> tuple[float, np.ndarray]:
    """FuseMix's mixing coefficient λ ~ Beta(α, α) and partner permutation π of a batch, for optimiser step
    `step`. Drawn from (seed, step) alone, so a resumed run draws what the uninterrupted one did."""
    rng = np.random.default_rng([FUSEMIX_STREAM, seed, step])
    return float(rng.beta(alpha, alpha)), rng.permutation(batch_size)


def fusemix(rows: Sequence[torch.Tensor], partners: Sequence[torch.Tensor], mixing: float) -> list[torch.Tensor]:
    """FuseMix (Vouitsis et al., CVPR 2024): mixup in the frozen encoders' latent spaces. `rows` holds one
    tensor per modality (image, text, extra caption sets) and `partners` the same modalities' rows of each
    pair's partner; every modality is mixed with the one λ and the same partners, so a mixed image stays
    paired with its mixed caption."""
    return [mixing * own + (1.0 - mixing) * partner for own, partner in zip(rows, partners, strict=True)]


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

    def __call__(self, idx: np.ndarray, with_negatives: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor | None]:  # fmt: skip
        """The batch's rows; `with_negatives` False skips reading the hard negatives (None stands for them)."""
        reading_negatives = self.has_negatives and with_negatives
        arrays = self.arrays[:-1] if self.has_negatives and not with_negatives else self.arrays
        img, txt, *extra = (self._rows(a, idx) for a in arrays)
        negatives = None
        if reading_negatives:
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


def _fusemix_batch(fetch: _Batches, idx: np.ndarray, alpha: float, seed: int, step: int, rank: int, world: int):
    """This rank's share of the global batch `idx` with FuseMix applied to its image and caption rows (the hard
    negatives stay as they are: a caption that is wrong for both pairs of a mix is still a negative)."""
    img, txt, extra, negatives = fetch(shard(idx, rank, world))
    mixing, partner = fusemix_draw(alpha, len(idx), seed, step)
    if world == 1:
        order = torch.from_numpy(partner).to(img.device)
        partners = [rows[order] for rows in (img, txt, *extra)]
    else:
        # A rank's partners may lie in another rank's share: it reads them, as the one process indexes them.
        partner_img, partner_txt, partner_extra, _ = fetch(shard(idx[partner], rank, world), with_negatives=False)
        partners = [partner_img, partner_txt, *partner_extra]
    img, txt, *extra = fusemix([img, txt, *extra], partners, mixing)
    return img, txt, extra, negatives


@torch.no_grad()
def _validation_loss(model, loss_fn, fetch, val_idx, batch_size, autocast) -> float:
    # Batches of (nearly) equal size; note a contrastive loss depends on the batch size, so it is
    # comparable across the evaluations of one run, not with the training loss of another batch size.
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


class _Selection:
    """Model selection by validation loss: the lowest so far, its step, a copy of its weights (when they are
    the ones to keep) and how many evaluations since brought no improvement (for early stopping)."""

    def __init__(self, keep_best: bool, patience: int | None, progress: dict, best_weights: dict | None = None):
        self.keep_best, self.patience, self.best_weights = keep_best, patience, best_weights
        self.best_val_loss, self.best_step, self.evals_since_best = (progress[k] for k in SELECTION_START)

    def update(self, val_loss: float, step: int, model: AlignmentModel) -> bool:
        """Weigh the evaluation of `model` at `step`; True when early stopping ends the run there."""
        if self.best_val_loss is None or val_loss < self.best_val_loss:
            self.best_val_loss, self.best_step, self.evals_since_best = val_loss, step, 0
            if self.keep_best:
                # On the host: the device's memory is the batch's.
                self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            return False
        self.evals_since_best += 1
        return self.patience is not None and self.evals_since_best >= self.patience

    def progress(self) -> dict:
        """What a saved state records of the selection (the weights go with its tensors)."""
        return {"best_val_loss": self.best_val_loss, "best_step": self.best_step,
                "evals_since_best": self.evals_since_best}


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

    The run takes `planned_steps` optimiser steps (a `samples_seen` budget, else `epochs`), each epoch in
    a fresh order; `early_stop_patience` may end it sooner. With a validation split (`val_fraction`) the
    validation loss is computed at each epoch's end (or every `val_every_steps` steps) and at the last
    step, and `keep: best_val` returns the weights of the lowest one. `fusemix_alpha` > 0 mixes the
    training batches' image and caption rows (see `fusemix`), never the validation's.

    Per optimiser step, log_fn(step, {"loss", "logit_scale" (exp'd), "logit_bias", "lr",
    "pairs_per_s"}); then, where any applies: at an epoch's end (or where the run ends part-way
    through one) {"epoch", "train_loss"}, at an evaluation {"val_loss"}, and at the last step the
    numeric facts of `TrainResult.summary`, all in one log_fn(step, ...) call. `step` counts finished
    optimiser steps from 1; history holds the same dicts with "step" added.

    With `state_dir`, the training state is saved there every `checkpoint_every` steps (None: at
    the end of each epoch and of the run), and a run continues from the newest state found there,
    reaching the same weights as an uninterrupted run (the kept best weights travel in the state);
    log_fn then sees only the steps after that state, while history holds them all. A state saved
    with other settings or data shapes is an error.
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
    total_steps = planned_steps(cfg, steps_per_epoch)
    total_epochs = math.ceil(total_steps / steps_per_epoch)
    scheduler = cosine_schedule(optimizer, total_steps, cfg["warmup_fraction"])
    data = [image_emb, text_emb, *extra_text_emb, *([] if negative_text_emb is None else [negative_text_emb])]
    fetch = _Batches(data, negative_text_emb is not None, device,
                     resident=_fits_on_device(data, device) if resident is None else resident)

    autocast = functools.partial(devices.autocast, device, cfg["precision"])
    validating = len(val_idx) > 0
    keep, keep_reason = cfg["keep"], None
    if keep == "best_val" and not validating:
        keep, keep_reason = "last", "val_fraction is 0: no validation loss to select by"
        if leader:
            print(f"[align] keeping the last weights: {keep_reason}", flush=True)

    fingerprint = _fingerprint(cfg, data)
    # Where the loop starts: epoch, batches of it already done and their loss sums, and the selection so far.
    progress = {"step": 0, "epoch": 1, "batch": 0, "epoch_loss": 0.0, "epoch_pairs": 0, "pairs_seen": 0,
                "stopped_early": False, **SELECTION_START}  # fmt: skip
    history: list[dict] = []
    selection = _Selection(keep == "best_val", cfg["early_stop_patience"], progress)
    resumed_from = latest_state(state_dir) if state_dir is not None else None
    if resumed_from is not None:
        progress = read_progress(resumed_from)
        mismatch = _differences(progress["fingerprint"], fingerprint)
        if mismatch:
            raise ValueError(f"{state_dir}: its training state ({resumed_from.name}) was saved by a run with other "
                             f"settings or data ({'; '.join(mismatch)}); delete that folder to start over")
        history, best_weights = restore_state(resumed_from, model, optimizer, scheduler, device)
        selection = _Selection(keep == "best_val", cfg["early_stop_patience"], progress, best_weights)
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
                     "epoch_rng": epoch_rng, "epoch_loss": epoch_loss, "epoch_pairs": epoch_pairs,
                     "pairs_seen": pairs_seen, "stopped_early": stopped_early, **selection.progress()},
                    history, best_weights=selection.best_weights)

    def summary() -> dict:
        facts = {"steps": step, "samples_seen": pairs_seen, "epochs_seen": pairs_seen / len(train_idx),
                 "kept_step": selection.best_step if keep == "best_val" else step, "stopped_early": stopped_early}
        if validating:
            facts["best_val_loss"] = selection.best_val_loss
        return facts

    saving = state_dir is not None and leader
    every = cfg["checkpoint_every"] if saving else None
    val_every = cfg["val_every_steps"]
    gather = gather_rows if world > 1 else None
    print_every = max(1, total_steps // PROGRESS_LINES)
    step, epoch, done, epoch_loss, epoch_pairs, pairs_seen, stopped_early = (
        progress[k] for k in ("step", "epoch", "batch", "epoch_loss", "epoch_pairs", "pairs_seen", "stopped_early"))
    first_step, started = step, time.perf_counter()
    # Mixed precision: the loss's float32 matmuls (the B×B logits) run on TF32 tensor cores, as SAIL's fp16 loss
    # does in its precision class; fp32 keeps them exact.
    with devices.loss_matmuls(device, cfg["precision"]):
        # Epochs follow one another, each in a fresh order, until the budget's steps are taken or early stopping
        # ends the run; the last epoch of a samples_seen budget may end part-way.
        while step < total_steps and not stopped_early:
            epoch_rng = rng.bit_generator.state  # a state saved mid-epoch redraws the epoch's order from here
            order = train_idx[rng.permutation(len(train_idx))]
            epoch_batches = batches(order, cfg["batch_size"])
            for batch, idx in enumerate(epoch_batches[done:], start=done + 1):
                t0 = time.perf_counter()
                if cfg["fusemix_alpha"] > 0:
                    rows = _fusemix_batch(fetch, idx, cfg["fusemix_alpha"], cfg["seed"], step + 1, rank, world)
                else:
                    rows = fetch(shard(idx, rank, world))
                loss = _loss(model, loss_fn, *rows, autocast, gather)
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
                pairs_seen += len(idx)
                log(step, {"loss": loss_value, "logit_scale": model.logit_scale.exp().item(),
                           "logit_bias": model.logit_bias.item(), "lr": lr, "pairs_per_s": pairs_per_s})
                epoch_ended = batch == len(epoch_batches)
                # The last step is always evaluated, so that selection weighs the final weights too.
                due = step == total_steps or (epoch_ended if val_every is None else step % val_every == 0)
                events = {}
                if validating and due:
                    events["val_loss"] = _validation_loss(model, loss_fn, fetch, val_idx, cfg["batch_size"], autocast)
                    stopped_early = selection.update(events["val_loss"], step, model)
                finished = stopped_early or step == total_steps
                if epoch_ended or finished:
                    events = {"epoch": epoch, "train_loss": epoch_loss / epoch_pairs, **events}
                if finished:
                    events.update(summary())
                if events:
                    log(step, events)
                # After logging, so that the state's history holds this step's rows.
                every_due = step % every == 0 if every is not None else epoch_ended or finished
                if saving and every_due:
                    if epoch_ended:
                        save_state(epoch + 1, 0, rng.bit_generator.state, 0.0, 0)
                    else:
                        save_state(epoch, batch, epoch_rng, epoch_loss, epoch_pairs)
                if leader and (step % print_every == 0 or finished):
                    elapsed = time.perf_counter() - started
                    eta = elapsed / (step - first_step) * (total_steps - step)
                    print(f"[align] step {step}/{total_steps} epoch {epoch}/{total_epochs} "
                          f"loss {loss_value:.4f} {pairs_per_s:,.0f} pairs/s ETA {format_duration(eta)}",
                          flush=True)
                if finished:
                    break
            epoch, done, epoch_loss, epoch_pairs = epoch + 1, 0, 0.0, 0
    if keep == "best_val":
        model.load_state_dict(selection.best_weights)
    model.eval()
    return TrainResult(model=model, history=history,
                       resumed_from_step=progress["step"] if resumed_from is not None else None,
                       summary={**summary(), "keep": keep, **({"keep_reason": keep_reason} if keep_reason else {})})
