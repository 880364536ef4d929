"""Apply a list of filters, in order, to a measured pool: a curated pool is a selection.

Only measured columns are read, so other thresholds can be tried without the images.
"""

from __future__ import annotations

import warnings

import pandas as pd

from vlalign.curate.filters import FILTERS
from vlalign.schema import complete


def resolve_filter(spec: dict) -> dict:
    """A filter entry `{"name": ..., **settings}` with the schema's defaults filled in; unknown names and keys
    are refused."""
    name = spec.get("name")
    if name not in FILTERS:
        raise ValueError(f"unknown curation filter {name!r}; known: {', '.join(FILTERS)}")
    settings = {k: v for k, v in spec.items() if k != "name"}
    return {"name": name, **complete(f"curate.filters.{name}", settings, what=f"filter {name}")}


def decide(measurements: pd.DataFrame, filters: list[dict]) -> pd.DataFrame:
    """Add `pass_<name>` per enabled filter, `kept`, `reason` (first failing filter, "" when kept)
    and `reason_detail` (which check of that filter failed).

    Filters run in the order given; a sample leaves the pool at its first failure.
    """
    specs = [resolve_filter(f) for f in filters]
    names = [s["name"] for s in specs if s["enabled"]]
    if len(names) != len(set(names)):
        raise ValueError(f"curation filters: each filter may be enabled once, got {names}")
    out = measurements.copy()
    alive = pd.Series(True, index=out.index)
    reason = pd.Series("", index=out.index, dtype=object)
    detail = pd.Series("", index=out.index, dtype=object)
    for spec in (s for s in specs if s["enabled"]):
        name = spec["name"]
        missing = [c for c in FILTERS[name].reads if c not in out.columns]
        if missing:
            raise ValueError(f"filter {name} needs measured columns {missing}, which the measurements lack")
        passed, why = FILTERS[name].rule(out, spec, alive.copy())
        out[f"pass_{name}"] = passed
        failed = alive & (passed == False).fillna(False).astype(bool)  # noqa: E712
        reason[failed] = name
        detail[failed] = why[failed].fillna("")
        alive &= ~failed
    out["kept"] = alive
    out["reason"] = reason
    out["reason_detail"] = detail
    _warn_unread_text(out, names)
    return out


def _warn_unread_text(decisions: pd.DataFrame, names: list[str]) -> None:
    if "text_spotting" in names:
        unread = int((decisions["kept"] & decisions["ocr_seconds"].isna()).sum())
        if unread:
            warnings.warn(f"text_spotting: {unread} kept samples were not read by OCR (measured with ocr: survivors "
                          "of other filters); they pass it unjudged", stacklevel=3)  # fmt: skip
