"""Train an aligner on a curated pool's pairs and write its checkpoint: what the train and probe stages share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from vlalign.align.checkpoint import save_checkpoint
from vlalign.align.trainer import LogFn, TrainResult, train_alignment
from vlalign.devices import resolve_device
from vlalign.store.pairs import keyed_rows, paired_embeddings


@dataclass
class PoolFit:
    result: TrainResult
    keys: list[str]  # the pairs trained on
    image_dim: int
    text_dim: int


def fit_pool(settings: dict, image_embeddings: str, text_embeddings: str, pool_decisions: str,
             negative_embeddings: str | None = None, extra_text_embeddings: list[str] | None = None,
             log_fn: LogFn | None = None, state_dir: Path | None = None) -> PoolFit:  # fmt: skip
    """Train on the pairs `pool_decisions` keeps, with `settings["train"]` on `settings["device"]`; the
    embeddings of hard negatives and of extra caption sets are read where those settings ask for them."""
    decisions = pd.read_parquet(pool_decisions, columns=["key", "kept"])
    kept = set(decisions.loc[decisions["kept"], "key"])
    image_emb, text_emb, keys = paired_embeddings(image_embeddings, text_embeddings, keys=kept, lazy=True)
    train = settings["train"]
    negative_emb = None
    if train.get("hard_negatives"):
        if not negative_embeddings:
            raise ValueError("hard_negatives is set but no --negative-embeddings were given")
        negative_emb = keyed_rows(negative_embeddings, keys)
    extra = [keyed_rows(folder, keys) for folder in extra_text_embeddings or []] if train.get("multi_positive") else []
    result = train_alignment(image_emb, text_emb, train, log_fn=log_fn, device=resolve_device(settings["device"]),
                             state_dir=state_dir, negative_text_emb=negative_emb, extra_text_emb=extra)  # fmt: skip
    return PoolFit(result, keys, image_emb.shape[1], text_emb.shape[1])


def save_fit(fit: PoolFit, out: Path, settings: dict, pool_decisions: str) -> None:
    """model.safetensors and model.json (with both encoders' config entries, the pool and what the training did:
    its steps, samples seen and which step's weights it kept), and curves.csv."""
    extra = {"encoders": settings["encoders"], "image_dim": int(fit.image_dim), "text_dim": int(fit.text_dim),
             "train_pairs": len(fit.keys), "pool_decisions": str(pool_decisions),
             "training": fit.result.summary}  # fmt: skip
    save_checkpoint(out, fit.result.model, extra)
    pd.DataFrame(fit.result.history).to_csv(out / "curves.csv", index=False)
