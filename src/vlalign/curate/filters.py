"""Basic filters (DataComp-style heuristics): each measures a value and gives a verdict.

A filter is a name, the measured columns it needs, and a rule on them; all measured
values are kept in the decisions table, so a threshold can be changed and re-applied
without measuring again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd


@dataclass(frozen=True)
class Filter:
    name: str
    keep: Callable[[pd.DataFrame, dict], pd.Series]  # (measurements, curate config) -> bool per sample


def measure(samples: pd.DataFrame) -> pd.DataFrame:
    """Add measured columns to a frame with `caption`, `width`, `height`, `image_sha256`."""
    out = samples.copy()
    captions = out["caption"].fillna("")
    out["n_words"] = captions.str.split().str.len().astype(int)
    out["n_chars"] = captions.str.strip().str.len().astype(int)
    out["min_side"] = out[["width", "height"]].min(axis=1)
    out["aspect_ratio"] = out[["width", "height"]].max(axis=1) / out["min_side"].clip(lower=1)
    # The first occurrence of identical image bytes is kept; later ones are exact duplicates.
    out["duplicate_of"] = out.groupby("image_sha256")["key"].transform("first").where(
        out.duplicated("image_sha256"), None
    )
    return out


FILTERS: list[Filter] = [
    Filter("min_words", lambda m, c: m["n_words"] >= c["min_words"]),
    Filter("min_chars", lambda m, c: m["n_chars"] >= c["min_chars"]),
    Filter("max_words", lambda m, c: m["n_words"] <= c["max_words"]),
    Filter("min_side", lambda m, c: m["min_side"] >= c["min_side"]),
    Filter("max_aspect_ratio", lambda m, c: m["aspect_ratio"] <= c["max_aspect_ratio"]),
    Filter("exact_duplicate", lambda m, c: m["duplicate_of"].isna() | (not c["dedup_exact"])),
]


def decide(measured: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Add `pass_<filter>` for every filter, `kept`, and `reason` (the first failing filter, in order)."""
    out = measured.copy()
    reason = pd.Series("", index=out.index, dtype=object)
    for f in FILTERS:
        passed = f.keep(out, config).astype(bool)
        out[f"pass_{f.name}"] = passed
        reason = reason.where((reason != "") | passed, f.name)
    out["kept"] = reason == ""
    out["reason"] = reason
    return out
