"""The stated figures a plan rests on (`assumptions.yaml`), and the record of those it used, to print."""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml


@cache
def load_data(name: str) -> dict:
    """A YAML data file of this package (`assumptions.yaml`, `gpus.yaml`, `architectures.yaml`)."""
    return yaml.safe_load((resources.files("vlalign.plan") / name).read_text())


class Assumptions:
    """Looks up stated figures by dotted key and remembers each one used, with its source, in order."""

    def __init__(self):
        self.used: dict[str, str] = {}

    def value(self, key: str):
        """The figure at `key` in assumptions.yaml (an entry with `value` and `source`), recorded as used."""
        entry = load_data("assumptions.yaml")
        for part in key.split("."):
            entry = entry[part]
        self.note(key, f"{entry['value']:,}" if isinstance(entry["value"], (int, float)) else entry["value"],
                  entry["source"])  # fmt: skip
        return entry["value"]

    def note(self, key: str, value, source: str) -> None:
        """Record an assumption the plan made itself (a measured length, a user's --samples, ...)."""
        self.used[key] = f"{key} = {value}: {source}"

    def lines(self) -> list[str]:
        return list(self.used.values())
