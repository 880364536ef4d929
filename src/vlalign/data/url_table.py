"""Reading a URL list (parquet or CSV) into `url`, `caption` and the extra columns kept as metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

RESERVED = {"url", "caption"}


def read_url_table(path: str | Path, url_col: str, caption_col: str,
                   key_col: str | None = None) -> tuple[pd.DataFrame, list[str]]:  # fmt: skip
    """(table with `url` and `caption` first, names of the extra columns); every row is one source item.
    `key_col`, when the table has it, is read as text (a uid of digits keeps its leading zeros)."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".parquet"):
        table = pd.read_parquet(path)
    elif name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz")):
        # A caption "NA" or "null" is a caption, and URLs and captions are never parsed as numbers;
        # the extra columns get their types inferred.
        sep = "\t" if ".tsv" in name else ","
        text = {url_col: str, caption_col: str, **({key_col: str} if key_col else {})}
        table = pd.read_csv(path, sep=sep, dtype=text, keep_default_na=False, na_values=[""])
    else:
        raise ValueError(f"{path}: a URL list must be .parquet, .csv or .tsv (optionally .gz)")
    missing = [col for col in (url_col, caption_col) if col not in table.columns]
    if missing:
        raise ValueError(f"{path}: no column {missing} (columns: {list(table.columns)}); set url_col / caption_col")
    extras = [col for col in table.columns if col not in (url_col, caption_col)]
    clashes = RESERVED.intersection(extras)
    if clashes:
        raise ValueError(f"{path}: extra columns {sorted(clashes)} would shadow the url/caption columns")
    table = table.rename(columns={url_col: "url", caption_col: "caption"})[["url", "caption", *extras]]
    return table.reset_index(drop=True), extras


def extras_as_json(rows: pd.DataFrame, extras: list[str]) -> list[dict]:
    """The extra columns of each row as JSON-ready dicts (NaN -> null, numpy and time types -> JSON)."""
    if not extras:
        return [{} for _ in range(len(rows))]
    return json.loads(rows[extras].to_json(orient="records", date_format="iso"))
