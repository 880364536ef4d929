"""Published compositionality benchmarks read from local copies: SugarCrepe and Winoground.

Both become evaluation sets in the form the synthetic set (`compositional.py`) has, so that
`evaluate.evaluation.compositional_metrics` scores them alike: each sample's caption is a true caption of its
image, `negatives` lists hard-negative captions with their type, and Winoground samples carry
`winoground` = {pair, role, variant}.

SugarCrepe (Hsieh et al. 2023; github.com/RAIVNLab/sugar-crepe, `data/`): one JSON file per negative
type (`add_att.json`, `replace_rel.json`, ...), each mapping an id to {filename, caption,
negative_caption} over COCO val2017 images. An image can have several true captions, each with its own
negatives, and SugarCrepe compares a caption only with the negatives written from it; so a sample is one
(image, true caption) with every negative of that caption, from all files. `compositional_metrics` scores
each negative against its positive on its own, as SugarCrepe does, so grouping changes no score.

Winoground (Thrush et al. 2022; huggingface.co/datasets/facebook/winoground): `data/examples.jsonl`, one
example a line {id, image_0, image_1, caption_0, caption_1, tag, secondary_tag, num_main_preds,
collapsed_tag}, and `data/images/{image_0}.png` (from `data/images.zip`). An example is two samples,
role a (image_0, caption_0) and role b (image_1, caption_1); each has the other caption as its negative.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from vlalign.data.sources import SourceItem, safe_key

WINOGROUND_EXAMPLES = "data/examples.jsonl"
DEFAULT_IMAGES = {"sugarcrepe": "val2017", "winoground": "data/images"}  # relative to `path`
SUGARCREPE_FIELDS = ("filename", "caption", "negative_caption")
WINOGROUND_FIELDS = ("id", "image_0", "image_1", "caption_0", "caption_1")


def images_folder(source: dict) -> Path:
    return Path(source["images"]) if source.get("images") else Path(source["path"]) / DEFAULT_IMAGES[source["type"]]


def layout_problems(source: dict) -> list[str]:
    """What the configured folders lack of the benchmark's published layout, as `key: problem` lines.
    Cheap (no file is read), so the config check runs it before any job as the reader does."""
    if not source.get("path"):
        return [f"path: required for type {source['type']}"]
    root = Path(source["path"])
    if not root.is_dir():
        return [f"path: {root} is not a folder"]
    problems = []
    if source["type"] == "sugarcrepe" and not any(root.glob("*.json")):
        problems.append(f"path: {root} holds no SugarCrepe .json file (add_att.json, replace_rel.json, ...)")
    if source["type"] == "winoground" and not (root / WINOGROUND_EXAMPLES).is_file():
        problems.append(f"path: {root / WINOGROUND_EXAMPLES} is not a file")
    if not images_folder(source).is_dir():
        problems.append(f"images: {images_folder(source)} is not a folder")
    return problems


def _check_layout(name: str, source: dict) -> None:
    problems = layout_problems(source)
    if problems:
        raise FileNotFoundError("; ".join(f"sources.{name}.{problem}" for problem in problems))


def _image_item(key: str, origin: str, caption: str, image: Path, meta: dict) -> SourceItem:
    """An item read lazily from `image`; a missing file is the item's failure, not the run's."""
    item = SourceItem(key=key, origin=origin, caption=caption, path=image, meta=meta)
    if not image.is_file():
        item.error, item.detail = "no_image", f"{image}: no such file"
    return item


def _fields(record, fields: tuple[str, ...], where: str) -> None:
    if not isinstance(record, dict) or any(field not in record for field in fields):
        raise ValueError(f"{where}: expected an object with {', '.join(fields)}, got {str(record)[:200]}")


def sugarcrepe_items(name: str, source: dict) -> list[SourceItem]:
    """One item per (image, true caption) with all of its negatives; every `*.json` in `path` is one negative
    type, named by the file (the repository's history has both add_obj.json and add_ent.json)."""
    _check_layout(name, source)
    images = images_folder(source)
    groups: dict[tuple[str, str], dict] = {}  # insertion order: files sorted, entries as written
    for path in sorted(Path(source["path"]).glob("*.json")):
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"sources.{name}: {path} is not a JSON file ({exc})") from exc
        if not isinstance(entries, dict):
            raise ValueError(f"sources.{name}: {path} must map ids to entries, got a {type(entries).__name__}")
        for entry_id, entry in entries.items():
            _fields(entry, SUGARCREPE_FIELDS, f"sources.{name}: {path} entry {entry_id!r}")
            # The published captions carry stray spaces ("in  a room. "): the same caption in two files is one.
            caption = " ".join(str(entry["caption"]).split())
            group = groups.setdefault((entry["filename"], caption), {"negatives": [], "entries": []})
            group["negatives"].append({"caption": " ".join(str(entry["negative_caption"]).split()),
                                       "type": path.stem})  # fmt: skip
            group["entries"].append(f"{path.name}#{entry_id}")
    items = []
    for (filename, caption), group in groups.items():
        digest = hashlib.sha1(caption.encode()).hexdigest()[:10]
        key = safe_key(f"{name}_{Path(filename).stem}_{digest}")
        # The origin lists the entries the sample stands for, so the manifest accounts every one of them.
        items.append(_image_item(key, " ".join(group["entries"]), caption, images / filename,
                                 {"filename": filename, "negatives": group["negatives"]}))  # fmt: skip
    return items


def winoground_items(name: str, source: dict) -> list[SourceItem]:
    """Two items per example: image_0 with caption_0 (role a) and image_1 with caption_1 (role b)."""
    _check_layout(name, source)
    images = images_folder(source)
    examples = Path(source["path"]) / WINOGROUND_EXAMPLES
    items, seen = [], set()
    for number, line in enumerate(examples.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"sources.{name}: {examples} line {number}"
        try:
            example = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not JSON ({exc})") from exc
        _fields(example, WINOGROUND_FIELDS, where)
        if example["id"] in seen:
            raise ValueError(f"{where}: id {example['id']!r} is used by an earlier example")
        seen.add(example["id"])
        tags = {k: example[k] for k in ("tag", "secondary_tag", "num_main_preds", "collapsed_tag") if k in example}
        variant = example.get("collapsed_tag") or example.get("tag")
        for role, index in (("a", 0), ("b", 1)):
            meta = {**tags, "winoground": {"pair": example["id"], "role": role, "variant": variant},
                    "negatives": [{"caption": example[f"caption_{1 - index}"], "type": "winoground_swap"}]}  # fmt: skip
            key = safe_key(f"{name}_{example['id']}_{role}")
            origin = f"{examples.name}#{example['id']}/image_{index}"
            image = images / f"{example[f'image_{index}']}.png"
            items.append(_image_item(key, origin, example[f"caption_{index}"], image, meta))
    return items


# type -> reader of (source name, source settings) into items
BENCHMARKS = {"sugarcrepe": sugarcrepe_items, "winoground": winoground_items}


def benchmark_items(name: str, source: dict) -> tuple[list[SourceItem], str]:
    """The items of a benchmark source and the provenance line of its download."""
    items = BENCHMARKS[source["type"]](name, source)
    return items, f"{source['type']} {Path(source['path']).resolve()}, images {images_folder(source).resolve()}"
