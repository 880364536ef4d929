"""Hostile configs: every wrong type and unknown key the schema knows of, missing paths and impossible
combinations are refused before any job starts, naming the key."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vlalign.config import ConfigError, load_schema, validate_config

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# One value of each JSON type; a key gets the first its schema's `type` does not allow.
WRONG_VALUES = [{"wrong": 1}, "wrong", 1.5, True, [1]]
JSON_TYPE = {dict: "object", str: "string", float: "number", bool: "boolean", list: "array"}


@pytest.fixture(scope="module")
def demo() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _resolve(schema: dict) -> dict:
    ref = schema.get("$ref")
    return load_schema()["$defs"][ref.rsplit("/", 1)[-1]] if ref else schema


def schema_keys(schema: dict, config: dict, path: tuple = ()) -> list[tuple[tuple, dict]]:
    """(key path, its schema) of every key the schema declares under the objects of a validated `config`:
    named properties, and the entries of maps such as `sources` or `train.runs`."""
    schema = _resolve(schema)
    found = []
    for name, sub in schema.get("properties", {}).items():
        found.append((path + (name,), _resolve(sub)))
        if isinstance(config.get(name), dict):
            found += schema_keys(sub, config[name], path + (name,))
    entries = schema.get("additionalProperties")
    if isinstance(entries, dict):
        for name, value in config.items():
            if name not in schema.get("properties", {}) and isinstance(value, dict):
                found.append((path + (name,), _resolve(entries)))
                found += schema_keys(entries, value, path + (name,))
    return found


def _set(config: dict, path: tuple, value) -> None:
    for name in path[:-1]:
        config = config[name]
    config[path[-1]] = value


def typed_keys(demo: dict) -> list[tuple[tuple, object]]:
    cases = []
    for path, schema in schema_keys(load_schema(), validate_config(demo)):
        allowed = schema.get("type")
        if allowed is None:
            continue
        allowed = {allowed} if isinstance(allowed, str) else set(allowed)
        cases.append((path, next(v for v in WRONG_VALUES if JSON_TYPE[type(v)] not in allowed)))
    return cases


def test_every_wrong_type_is_refused_naming_the_key(demo):
    cases = typed_keys(demo)
    assert len(cases) > 150  # the walk reached the nested keys (sources, encoders, filters, runs...)
    unnamed = []
    validated = validate_config(demo)  # every key present, so that each can be spoilt
    for path, wrong in cases:
        config = copy.deepcopy(validated)
        _set(config, path, wrong)
        key = ".".join(path)
        try:
            validate_config(config)
            unnamed.append(f"{key} = {wrong!r}: accepted")
        except ConfigError as exc:
            if f"  {key}: " not in str(exc) and f"  {key}." not in str(exc):
                unnamed.append(f"{key} = {wrong!r}: {exc}")
    assert unnamed == []


def test_every_unknown_key_is_refused_naming_its_place(demo):
    validated = validate_config(demo)
    objects = [()] + [path for path, schema in schema_keys(load_schema(), validated)
                      if schema.get("additionalProperties") is False]  # fmt: skip
    objects = [p for p in objects if isinstance(_get(validated, p), dict)]
    assert len(objects) > 20
    for path in objects:
        config = copy.deepcopy(validated)
        _get(config, path)["bogus_key"] = 1
        with pytest.raises(ConfigError, match=r"  " + (r"\.".join(path) or "<top level>") + r": .*'bogus_key'"):
            validate_config(config)


def _get(config: dict, path: tuple):
    for name in path:
        config = config[name]
    return config


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.pop("sources"), "<top level>: 'sources' is a required property"),
        (lambda c: c.pop("encoders"), "<top level>: 'encoders' is a required property"),
        (lambda c: c["sources"].update(web={"type": "url_list", "path": "/missing/urls.parquet"}),
         "sources.web.path: /missing/urls.parquet is not a file"),
        (lambda c: c["sources"].update(pics={"type": "folder", "path": "/missing/pics"}),
         "sources.pics.path: /missing/pics is not a folder"),
        # an eval set whose class file is missing
        (lambda c: (c["sources"].update(cls={"type": "folder", "path": "config", "eval_fraction": 1,
                                             "classnames": "/missing/classnames.txt"}),
                    c["evaluate"]["zeroshot"].append("cls")), "sources.cls.classnames: /missing/classnames.txt"),
        (lambda c: c["sources"].update(wds={"type": "webdataset", "urls": ["/missing/shard-{000..003}.tar"]}),
         "sources.wds.urls: 4 shard(s) of '/missing/shard-{000..003}.tar' missing"),
        (lambda c: c["sources"].update(wds={"type": "webdataset", "urls": ["/missing/*.tar"]}),
         "sources.wds.urls: 1 shard(s) of '/missing/*.tar' missing, first: no shard matches"),
        (lambda c: c["curate"]["measure"].update(concepts="/missing/concepts.txt"), "curate.measure.concepts"),
        (lambda c: c["curate"]["filters"]["balance"].update(entries="/missing/e.txt"),
         "curate.filters.balance.entries"),
        (lambda c: c["encoders"]["efficientnet_lite0"].update(path="/missing/weights.pt"),
         "encoders.efficientnet_lite0.path: /missing/weights.pt is not a file or folder"),
        # impossible combinations
        (lambda c: c["sources"].update(wds={"type": "webdataset", "urls": ["s3://bucket/a.tar"], "max_items": 5}),
         "sources.wds.max_items: not supported for webdataset sources"),
        (lambda c: c["sources"].update(web={"type": "url_list", "path": "config/config.yaml", "per_class": 5}),
         "sources.web.per_class: needs categories"),
        (lambda c: c["sources"].update(web={"type": "url_list", "path": "config/config.yaml",
                                            "allow_networks": ["10.0.0.0/8", "metadata"]}),
         "sources.web.allow_networks: 'metadata' is not a network"),
        (lambda c: c["evaluate"].update(zeroshot=["openclipart"]), "evaluate.zeroshot: source 'openclipart' has no"),
        (lambda c: c["curate"]["sources"].append("fashion_mnist"), "curate.sources: 'fashion_mnist' has eval_fraction"),
    ],
)
def test_missing_paths_and_impossible_combinations_are_refused(demo, edit, message, monkeypatch):
    monkeypatch.chdir(REPO)  # relative paths in a config are the working directory's, as under Snakemake
    config = copy.deepcopy(demo)
    edit(config)
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(config)


def test_snakemake_refuses_a_missing_class_file_before_any_job(demo, tmp_path):
    config = copy.deepcopy(demo)
    config["sources"]["cls"] = {"type": "folder", "path": str(tmp_path), "eval_fraction": 1,
                                "classnames": "classnames.txt"}  # fmt: skip
    config["evaluate"]["zeroshot"].append("cls")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--cores", "1"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode != 0
    assert "sources.cls.classnames: classnames.txt is not a file" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()
