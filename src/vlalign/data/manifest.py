"""The download manifest: one row per source item, the same columns and types for every source type."""

from __future__ import annotations

import pandas as pd

DTYPES = {
    "key": "string", "source": "string", "origin": "string", "split": "string", "status": "string",
    "error": "string", "detail": "string", "bytes": "int64", "width": "Int64", "height": "Int64",
    "caption": "string", "category": "string",
}  # fmt: skip


def manifest_row(key: str, source: str, origin: str | None, caption: str | None, category: str | None = None) -> dict:
    """A row that says `failed` until the item is shown to be usable (or skipped)."""
    return {"key": key, "source": source, "origin": origin, "split": None, "status": "failed", "error": None,
            "detail": None, "bytes": 0, "width": None, "height": None, "caption": caption,
            "category": category}  # fmt: skip


def manifest_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(DTYPES)).astype(DTYPES)


def mark_unexpected(row: dict, exc: Exception) -> None:
    """Record on `row` a failure no check foresaw: one row's surprise is that row's status, never the job's end."""
    row.update(status="failed", split=None, error="unexpected_error", detail=f"{type(exc).__name__}: {exc}"[:300])
