"""Render config/README.md from the configuration schema, the one place where keys, defaults and their
meaning are written down.

    python scripts/config_readme.py          # write config/README.md
    python scripts/config_readme.py --check  # exit 1 if config/README.md is not what it would write

Every object of the schema whose keys are documented one by one becomes a section: its description is the
section's prose, each of its values a row of the section's table (key | default | meaning), each of its
nested objects a subsection. The entries of a map (`additionalProperties`, e.g. `sources`) are documented
as one entry, `<name>`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import yaml

from vlalign.schema import SCHEMA_PATH, load_schema, resolve_ref

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = SCHEMA_PATH
README = ROOT / "config" / "README.md"
SCHEMA_LINK = "../src/vlalign/schemas/config.schema.yaml"  # as seen from config/README.md
REGENERATE = "python scripts/config_readme.py"
# A list default longer than this (the boilerplate phrases) would swamp its table; it is counted instead.
MAX_DEFAULT_CHARS = 120


def keys(node: dict) -> list[tuple[str, dict, bool]]:
    """(name, schema, required) of an object's keys, the entry of a map last, named `<name>`."""
    node = resolve_ref(node)
    found = [(name, sub, name in node.get("required", [])) for name, sub in node.get("properties", {}).items()]
    entry = node.get("additionalProperties")
    if isinstance(entry, dict) and has_keys(entry):
        found.append(("<name>", entry, False))
    return found


def has_keys(node: dict) -> bool:
    """Whether `node` is an object whose keys are documented (a section) rather than one value (a row)."""
    node = resolve_ref(node)
    entry = node.get("additionalProperties")
    return "properties" in node or (isinstance(entry, dict) and has_keys(entry))


def split(node: dict) -> tuple[list, list]:
    """An object's keys as (values, a row each; nested objects, a section each)."""
    children = keys(node)
    return ([child for child in children if not has_keys(child[1])],
            [child for child in children if has_keys(child[1])])


def description(node: dict) -> str:
    # A `$ref`'s own description (train.defaults) says what the reference means at that place.
    return (node.get("description") or resolve_ref(node).get("description") or "").strip()


def flow(value) -> str:
    """`value` as YAML in flow style, as one would write it in a config (`1.0e-05`, `'off'`, `[a, b]`)."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=float("inf"), allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...")  # a bare scalar is dumped as a document: `x\n...\n`


def default_cell(node: dict, required: bool) -> str:
    if "default" not in node:
        return "(required)" if required else ""
    value = node["default"]
    text = flow(value)
    if isinstance(value, list) and len(text) > MAX_DEFAULT_CHARS:
        return f"{len(value)} entries, listed in [the schema]({SCHEMA_LINK})"
    return f"`{text}`"


def cell(text: str, path: str) -> str:
    """`text` as one table cell: on one line, its pipes escaped (GitHub honours `\\|` inside code too)."""
    if "\n\n" in text or "```" in text or re.search(r"^\s*[-*] ", text, re.M):
        # A cell cannot hold paragraphs, lists or code; such prose belongs to the enclosing object.
        raise SystemExit(f"{SCHEMA.name}: the description of {path} is too long for a table cell; "
                         "move its prose into the description of the object that holds it")
    return " ".join(text.split()).replace("|", r"\|")


def table(rows: list[tuple[str, dict, bool]], prefix: str) -> list[str]:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for name, node, required in rows:
        meaning = cell(description(node), prefix + name)
        lines.append(f"| `{name}` | {default_cell(resolve_ref(node), required)} | {meaning} |")
    return lines + [""]


def section(path: str, node: dict, required: bool, level: int) -> list[str]:
    """A heading, the object's description, a table of its values, then a section per nested object."""
    heading = f"{'#' * level} `{path}`" + (" (required)" if required else "")
    lines = [heading, ""]
    if text := description(node):
        lines += [text, ""]
    rows, nested = split(node)
    if rows:
        lines += table(rows, path + ".")
    for name, sub, sub_required in nested:
        lines += section(f"{path}.{name}", sub, sub_required, level + 1)
    return lines


def render(schema: dict) -> str:
    lines = [
        "# Configuration",
        "",
        f"> Generated from [`src/vlalign/schemas/config.schema.yaml`]({SCHEMA_LINK}) by "
        f"`scripts/config_readme.py`; do not edit it by hand. Change the schema's descriptions and run "
        f"`{REGENERATE}` (the tests fail while this file is stale).",
        "",
        schema["description"].strip(),
        "",
        "## Top level",
        "",
    ]
    rows, nested = split(schema)
    lines += table(rows, "")
    for name, node, required in nested:
        lines += section(name, node, required, level=2)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if config/README.md is stale instead of writing it")
    args = parser.parse_args(argv)
    text = render(load_schema())
    if not args.check:
        README.write_text(text)
        return 0
    if not README.exists() or README.read_text() != text:
        print(f"{os.path.relpath(README)} is stale (it is generated from {os.path.relpath(SCHEMA)}); "
              f"regenerate it with `{REGENERATE}`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
