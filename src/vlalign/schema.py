"""The configuration schema, the one source of every key's default and meaning.

`vlalign.config` validates whole configurations against it. Library entry points called without the
workflow (`train_alignment`, `measure_pool`, `resolve_filter`, `create_encoder`, `write_beton`, ...) complete
their settings here from the part of the schema that describes them, so a key left out means the same
whether a function is called from Snakemake, from `vlalign <stage>` or from Python. `config/README.md` is
generated from the same file (`scripts/config_readme.py`).
"""

from __future__ import annotations

import copy
from functools import cache
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(str(resources.files("vlalign") / "schemas" / "config.schema.yaml"))


class ConfigError(ValueError):
    """A configuration that must be refused before any work starts."""


@cache
def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _defaults_filling_validator():
    base = jsonschema.Draft202012Validator

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})


DefaultsValidator = _defaults_filling_validator()


def key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def resolve_ref(node: dict) -> dict:
    """`node`, or the `$defs` entry its `$ref` points to."""
    ref = node.get("$ref")
    if ref is None:
        return node
    found = load_schema()
    for part in ref.removeprefix("#/").split("/"):
        found = found[part]
    return found


def locate(path: str) -> dict:
    """The schema of a config key given as a dotted path; `*` stands for any name of a mapping
    (`sources.*`, `encoders.*`, `curate.filters.caption`, `train.defaults`)."""
    node = load_schema()
    for part in path.split(".") if path else []:
        node = resolve_ref(node)
        node = node["additionalProperties"] if part == "*" else node["properties"][part]
    return resolve_ref(node)


def defaults_errors(validator, instance) -> list[jsonschema.ValidationError]:
    """Fill `instance`'s defaults in place and return what is still wrong with it. Two passes: a default
    inserted in the first (an empty `train: {}`) is itself checked in the second."""
    errors = []
    for _ in range(2):
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
        if errors:
            break
    return errors


@cache
def _validator(path: str):
    return DefaultsValidator({"$defs": load_schema().get("$defs", {}), **locate(path)})


def _message(error: jsonschema.ValidationError, what: str) -> str:
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(known))
        where = f"{what}.{key_path(error)}" if error.absolute_path else what
        return f"unknown {where} keys {unknown}; known: {known}"
    return f"{what}.{key_path(error)}: {error.message}" if error.absolute_path else f"{what}: {error.message}"


def complete(path: str, settings: dict | None = None, what: str | None = None) -> dict:
    """A copy of `settings` with every default of the schema at `path` (see `locate`) filled in, keys in the
    schema's order. Unknown keys, wrong types and values out of range raise ConfigError naming the key, as
    `what` (default: `path`)."""
    settings = copy.deepcopy(dict(settings or {}))
    errors = defaults_errors(_validator(path), settings)
    if errors:
        raise ConfigError("; ".join(_message(e, what or path) for e in errors))
    order = list(locate(path).get("properties", {}))
    return dict(sorted(settings.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)))


def defaults(path: str) -> dict:
    """Every default of the settings at `path`."""
    return complete(path, {})


def default(path: str):
    """The default of one key (`evaluate.templates`)."""
    return copy.deepcopy(locate(path)["default"])
