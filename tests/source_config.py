"""Source entries for download tests, with every key the schema gives a default (as a validated config has)."""

from __future__ import annotations

import copy

from vlalign.config import load_schema


def source_config(type_: str, **overrides) -> dict:
    keys = load_schema()["properties"]["sources"]["additionalProperties"]["properties"]
    defaults = {key: copy.deepcopy(spec["default"]) for key, spec in keys.items() if "default" in spec}
    return {**defaults, "type": type_, **overrides}
