"""Source entries for download tests, with every key the schema gives a default (as a validated config has)."""

from __future__ import annotations

import copy

from vlalign.config import load_schema
from vlalign.data.outcome_store import OutcomeStore
from vlalign.data.shards import iter_samples, shard_paths


# The tests' servers listen on loopback, which a url_list refuses unless it is named.
LOOPBACK = ["127.0.0.0/8", "::1/128"]


def source_config(type_: str, **overrides) -> dict:
    """A url_list allows the loopback network (the tests' servers) unless `allow_networks` says otherwise."""
    keys = load_schema()["properties"]["sources"]["additionalProperties"]["properties"]
    defaults = {key: copy.deepcopy(spec["default"]) for key, spec in keys.items() if "default" in spec}
    if type_ == "url_list":
        defaults["allow_networks"] = list(LOOPBACK)
    return {**defaults, "type": type_, **overrides}


def shard_contents(out) -> dict:
    """Every sample of a download's train and eval shards, in order: what two runs must agree on."""
    return {split: [(s.key, s.image, s.caption, s.meta) for s in iter_samples(shard_paths(out / split))]
            for split in ("train", "eval") if (out / split).exists()}  # fmt: skip


def stored_rows(store) -> list[int]:
    """The input rows of every chunk a url_list's outcome store holds finished (see data/outcome_store.py)."""
    return sorted(i for entry in OutcomeStore(store).entries() for i in range(*entry.record["rows"]))


def stored_chunks(store) -> int:
    return len(OutcomeStore(store).entries())
