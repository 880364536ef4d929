"""Load and validate the workflow configuration against the JSON schema, filling defaults.

The same validation runs in the Snakefile (before any job starts) and in every
`vlalign` stage command, so a wrong key or type is refused with its name either way.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from vlalign.schema import ConfigError, DefaultsValidator, defaults_errors, key_path, load_schema

__all__ = ["ConfigError", "load_config", "load_schema", "validate_config"]


def validate_config(config: dict, name: str | None = None) -> dict:
    """Return a validated copy of `config` with every default filled in; raise ConfigError naming the key.

    `name` (the config file's name, without suffix) names the experiment when the config does not."""
    config = copy.deepcopy(config)
    validator = DefaultsValidator(load_schema())
    errors = defaults_errors(validator, config)
    if errors:
        lines = [f"  {key_path(e)}: {e.message}" for e in errors]
        raise ConfigError("invalid configuration:\n" + "\n".join(lines))
    _resolve_derived_defaults(config, name)
    _check_overrides(config, validator)
    _check_references(config)
    problems = _input_problems(config)
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))
    return config


def _resolve_derived_defaults(config: dict, name: str | None) -> None:
    """Fill the `null` defaults that follow from other keys, so every job sees the same concrete values."""
    from vlalign.encoders import check_encoder_entry, is_text_spec

    if config["experiment"] is None:
        config["experiment"] = name or "vlalign"
    if config["deb_cache"] is None:
        config["deb_cache"] = str(Path(config["results_dir"]) / "debs")
    if config["curate"]["sources"] is None:
        # A planted source stands in for its `from`, whose samples it holds under the same keys.
        planted_from = {s.get("from") for s in config["sources"].values() if s["type"] == "planted"}
        config["curate"]["sources"] = [n for n, s in config["sources"].items() if s["eval_fraction"] < 1
                                       and s["type"] not in _evaluation_types() and n not in planted_from]  # fmt: skip
        if not config["curate"]["sources"]:
            raise ConfigError("curate.sources: no source has a train split (every eval_fraction is 1); "
                              "add a training source or lower an eval_fraction")  # fmt: skip
    for side, wants_text in (("image", False), ("text", True)):
        key = f"{side}_encoder"
        if config[key] is not None:
            continue
        found = [alias for alias, entry in config["encoders"].items()
                 if not check_encoder_entry(entry) and is_text_spec(entry["spec"]) == wants_text]  # fmt: skip
        if len(found) != 1:
            raise ConfigError(f"{key}: name the {side} tower, one of the aliases under encoders "
                              f"({'none is an ' + side + ' encoder' if not found else ', '.join(found)})")
        config[key] = found[0]
    probe = config["probe"]
    if probe["pool"] is None:
        probe["pool"] = config["train"]["pool"]
    if probe["eval_source"] is None and config["evaluate"]["retrieval"]:
        probe["eval_source"] = config["evaluate"]["retrieval"][0]


def _evaluation_types() -> list[str]:
    from vlalign.data.download import SOURCE_TYPES

    return sorted(kind for kind, declared in SOURCE_TYPES.items() if declared.evaluation)


def probing(config: dict) -> bool:
    """Whether the config asks for SAIL's probing matrix."""
    return config["probe"]["image_encoders"] is not None or config["probe"]["text_encoders"] is not None


def experiment_dir(config: dict) -> Path:
    """`{results_dir}/{experiment}`: where every output of the experiment goes."""
    return Path(config["results_dir"]) / config["experiment"]


def _input_problems(config: dict) -> list[str]:
    """Local files and folders the config names must exist, and source settings must suit their type: refused
    here, before any job, not by the job that reads them hours later. Paths with a scheme are the job's to fetch."""
    from vlalign.data.download import source_problems

    problems = [f"sources.{name}.{problem}" for name, source in config["sources"].items()
                for problem in source_problems(source)]  # fmt: skip
    wanted = [("curate.measure.concepts", config["curate"]["measure"]["concepts"], "file"),
              ("curate.filters.balance.entries", config["curate"]["filters"]["balance"]["entries"], "file")]
    wanted += [(f"encoders.{alias}.path", entry.get("path"), "path") for alias, entry in config["encoders"].items()]
    exists = {"file": Path.is_file, "path": Path.exists}
    for key, path, kind in wanted:
        if path and "://" not in str(path) and not exists[kind](Path(path)):
            problems.append(f"{key}: {path} is not a {'file or folder' if kind == 'path' else kind}")
    # Hub models the jobs will load: one timm does not know, or one not cached while the hub is offline.
    from vlalign.encoders import hub_problems

    used = {config["image_encoder"], config["text_encoder"], *(a for side in probe_encoders(config) for a in side)}
    problems += [f"encoders.{alias}: {problem}" for alias in sorted(used)
                 for problem in hub_problems(alias, config["encoders"][alias])]  # fmt: skip
    return problems


def _check_overrides(config: dict, validator) -> None:
    """Run overrides and probe settings use the train settings' keys; check each merged set."""
    settings_validator = validator.evolve(schema={"$defs": load_schema()["$defs"], "$ref": "#/$defs/train_settings"})
    overrides = {f"train.runs.{name}": {k: v for k, v in o.items() if k not in RUN_KEYS}
                 for name, o in config["train"]["runs"].items()}  # fmt: skip
    if probing(config):
        overrides["probe.settings"] = config["probe"]["settings"]
    problems = []
    for key, override in overrides.items():
        merged = {**config["train"]["defaults"], **override}
        for error in settings_validator.iter_errors(merged):
            problems.append(f"  {key}{'.' + key_path(error) if error.absolute_path else ''}: {error.message}")
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(problems))


def _check_references(config: dict) -> None:
    """Cross-key checks that a JSON schema cannot express."""
    from vlalign.encoders import check_encoder_entry, is_text_spec

    problems = []
    encoders = config["encoders"]
    for alias, entry in encoders.items():
        problems += [f"encoders.{alias}: {problem}" for problem in check_encoder_entry(entry)]
    towers = [("image_encoder", config["image_encoder"], False), ("text_encoder", config["text_encoder"], True)]
    for side, wants_text in (("image", False), ("text", True)) if probing(config) else ():
        listed = config["probe"][f"{side}_encoders"] or []
        towers += [(f"probe.{side}_encoders.{i}", alias, wants_text) for i, alias in enumerate(listed)]
    for key, alias, wants_text in towers:
        entry = encoders.get(alias)
        if entry is None:
            problems.append(f"{key}: {alias!r} is not defined under encoders ({sorted(encoders)})")
        elif not check_encoder_entry(entry) and is_text_spec(entry["spec"]) != wants_text:
            problems.append(f"{key}: {alias!r} is not {'a text' if wants_text else 'an image'} encoder")
    sources = config["sources"]
    curate = config["curate"]
    pools, runs = curate["pools"], config["train"]["runs"]
    for pool, names in pools.items():
        for name in names:
            if name not in curate["filters"]:
                problems.append(f"curate.pools.{pool}: unknown filter {name!r} (filters: {sorted(curate['filters'])})")
    for run in runs:
        if train_settings(config, run)["multi_positive"] and not config["captions"]["extra"]:
            problems.append(f"train.runs.{run}.multi_positive: needs caption sets under captions.extra")
    baselines = [(f"train.runs.{r}.baseline", runs[r]["baseline"]) for r in runs if runs[r].get("baseline")]
    baselines += [("train.baseline", config["train"]["baseline"])] if config["train"]["baseline"] else []
    for key, baseline in baselines:
        if baseline not in runs:
            problems.append(f"{key}: {baseline!r} is not defined under train.runs ({sorted(runs)})")
    pool_refs = [(f"train.runs.{r}.pool", run_pool(config, r)) for r in runs]
    pool_refs += [("probe.pool", config["probe"]["pool"])] if probing(config) else []
    for key, pool in pool_refs:
        if pool not in pools:
            problems.append(f"{key}: {pool!r} is not defined under curate.pools ({sorted(pools)})")
    scorer = curate["filters"]["alignment"]["run"]
    if any(scoring_run(config, pool) for pool in pools):
        if scorer not in runs:
            problems.append(f"curate.filters.alignment.run: {scorer!r} is not defined under train.runs")
        elif "alignment" in pools.get(run_pool(config, scorer), []):
            problems.append(f"curate.filters.alignment.run: run {scorer!r} trains on a pool that its own scores filter")
    # The filter compares its threshold with the measured eval_hamming, which is not measured beyond the
    # measurement's own radius: a larger threshold would silently act as the smaller one.
    measured, decontaminate = curate["measure"]["max_hamming"], curate["filters"]["decontaminate"]["max_hamming"]
    if decontaminate > measured:
        problems.append(f"curate.filters.decontaminate.max_hamming: {decontaminate} is above "
                        f"curate.measure.max_hamming ({measured}), beyond which eval_hamming is not measured; "
                        "raise curate.measure.max_hamming or lower the filter's")  # fmt: skip
    for name in config["curate"]["sources"]:
        if name not in sources:
            problems.append(f"curate.sources: {name!r} is not defined under sources")
        elif sources[name]["eval_fraction"] >= 1:
            problems.append(f"curate.sources: {name!r} has eval_fraction 1, so no train split")
    for name, source in sources.items():
        if source["type"] == "planted":
            problems += _planted_references(name, source, sources, config["curate"]["sources"])
    eval_refs = [("evaluate.retrieval", n) for n in config["evaluate"]["retrieval"]]
    eval_refs += [("evaluate.zeroshot", n) for n in config["evaluate"]["zeroshot"]]
    eval_refs += [("evaluate.compositional", n) for n in config["evaluate"]["compositional"]]
    evaluation_types = _evaluation_types()
    for name in config["evaluate"]["compositional"]:
        if name in sources and sources[name]["type"] not in evaluation_types:
            problems.append(f"evaluate.compositional: {name!r} is not a source of type {', '.join(evaluation_types)} "
                            f"(its type is {sources[name]['type']})")
    for name, source in sources.items():
        if source["type"] in evaluation_types and source["eval_fraction"] != 1:
            problems.append(f"sources.{name}.eval_fraction: a {source['type']} source is an evaluation set; "
                            "set it to 1")
    if probing(config):
        if config["probe"]["eval_source"] is None:
            problems.append("probe.eval_source: the probing matrix needs a retrieval set; name one here or under "
                            "evaluate.retrieval")
        else:
            eval_refs.append(("probe.eval_source", config["probe"]["eval_source"]))
    for key, name in eval_refs:
        if name not in sources:
            problems.append(f"{key}: {name!r} is not defined under sources")
        elif sources[name]["eval_fraction"] <= 0:
            problems.append(f"{key}: source {name!r} has no eval split (eval_fraction is 0)")
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


def load_config(path: str | Path) -> dict:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read configuration ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: configuration must be a mapping, got {type(raw).__name__}")
    return validate_config(raw, name=path.stem)


def eval_dataset(source: str) -> str:
    """Name of a source's eval split as a dataset (beton, table and embeddings use it)."""
    return f"eval_{source}"


def eval_sources(config: dict) -> list[str]:
    """Sources whose eval split some evaluation or the probe reads."""
    ev = config["evaluate"]
    names = ev["retrieval"] + ev["zeroshot"] + ev["compositional"]
    return sorted(set(names + ([config["probe"]["eval_source"]] if probing(config) else [])))


# Keys of a `train.runs` entry that are not training settings.
RUN_KEYS = ("pool", "baseline")


def _planted_references(name: str, source: dict, sources: dict, pool_sources: list[str]) -> list[str]:
    """A planted source derives from sources that must exist and have the splits it reads, and never shares a
    pool with its `from` (the same samples under the same keys)."""
    problems = []
    origin = source["from"]
    if origin not in sources:
        problems.append(f"sources.{name}.from: {origin!r} is not defined under sources")
    elif sources[origin]["eval_fraction"] >= 1:
        problems.append(f"sources.{name}.from: {origin!r} has eval_fraction 1, so no train split to plant into")
    elif name in pool_sources and origin in pool_sources:
        problems.append(f"curate.sources: {name!r} holds {origin!r}'s samples under the same keys; list one of them")
    for other in source["eval_from"]:
        if other not in sources:
            problems.append(f"sources.{name}.eval_from: {other!r} is not defined under sources")
        elif sources[other]["eval_fraction"] <= 0:
            problems.append(f"sources.{name}.eval_from: {other!r} has eval_fraction 0, so no eval split to copy")
    return problems


def train_settings(config: dict, run: str, seed: int | None = None) -> dict:
    """The settings of one training run: `train.defaults` overridden by `train.runs[run]` (less its pool and
    baseline), under `seed` when given (one of `run_seeds`)."""
    overrides = {k: v for k, v in config["train"]["runs"][run].items() if k not in RUN_KEYS}
    return {**config["train"]["defaults"], **overrides, **({"seed": seed} if seed is not None else {})}


def run_seeds(config: dict, run: str) -> list[int]:
    """The seeds a run is trained under: `train.seeds`, or the run's own `seed`."""
    return list(config["train"]["seeds"] or [train_settings(config, run)["seed"]])


def run_instances(config: dict) -> list[tuple[str, int]]:
    """Every (run, seed) trained: one training job, one MLflow run and one evaluation each."""
    return [(run, seed) for run in config["train"]["runs"] for seed in run_seeds(config, run)]


def run_baseline(config: dict, run: str) -> str | None:
    """The run `run` is compared with in the report: its own `baseline` (None when it names none), else
    `train.baseline`, else the first run; None for that run itself."""
    runs = config["train"]["runs"]
    baseline = runs[run]["baseline"] if "baseline" in runs[run] else config["train"]["baseline"] or next(iter(runs))
    return None if baseline == run else baseline


def run_pool(config: dict, run: str) -> str:
    """The curated pool a run trains on."""
    return config["train"]["runs"][run].get("pool", config["train"]["pool"])


def pool_filters(config: dict, pool: str) -> list[dict]:
    """A pool's filters in order, each `{"name": ..., **its settings}`."""
    return [{"name": name, **config["curate"]["filters"][name]} for name in config["curate"]["pools"][pool]]


def scoring_run(config: dict, pool: str) -> str | None:
    """The run whose aligner scores `pool` (its `alignment` filter), if it has one that reads no precomputed score."""
    alignment = config["curate"]["filters"]["alignment"]
    scored = "alignment" in config["curate"]["pools"][pool] and alignment["score_field"] is None
    return alignment["run"] if scored else None


def probe_encoders(config: dict) -> tuple[list[str], list[str]]:
    """The vision and text encoders of the probing matrix (the workflow's own tower on a side that lists none);
    none at all when the config asks for no probing."""
    if not probing(config):
        return [], []
    probe = config["probe"]
    return probe["image_encoders"] or [config["image_encoder"]], probe["text_encoders"] or [config["text_encoder"]]


def probe_settings(config: dict) -> dict:
    return {**config["train"]["defaults"], **config["probe"]["settings"], "head": "linear"}


def tower_specs(config: dict, image: str | None = None, text: str | None = None) -> dict:
    """The config entries of a run's two frozen encoders, each with its alias (the workflow's own pair by default)."""
    image, text = image or config["image_encoder"], text or config["text_encoder"]
    return {"image": {"alias": image, **config["encoders"][image]}, "text": {"alias": text, **config["encoders"][text]}}
