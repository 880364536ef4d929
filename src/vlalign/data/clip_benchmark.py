"""Evaluation splits in clip_benchmark's webdataset layout, so other tools can read vlalign's eval sets.

The layout: every sample has a `cls` member (its class index, as text), and the folder holds
`classnames.txt` (one class name per line, in index order) and `zeroshot_classification_templates.txt`
(one prompt template per line, `{c}` for the class name). Shards are written as samples stream in, before
the classes are all known, so the labels are added by rewriting the (small) eval shards afterwards.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

from vlalign.io import atomic_path


def _categories(paths: list[Path]) -> dict[str, str | None]:
    """Sample key -> its category (from its json member), shard by shard."""
    found = {}
    for path in paths:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(member).read())
                    category = meta.get("category") if isinstance(meta, dict) else None
                    found[member.name.removesuffix(".json")] = category if isinstance(category, str) else None
    return found


def write_clip_benchmark_layout(split_dir: str | os.PathLike, templates: list[str]) -> list[str] | None:
    """Add a `cls` member to every sample of the shards in `split_dir` and write the class names and the
    templates (`{}` in vlalign's templates becomes clip_benchmark's `{c}`). Only a classification set gets
    the layout: when some sample has no category, nothing is changed and None is returned; else the
    class names."""
    split_dir = Path(split_dir)
    paths = sorted(split_dir.glob("shard-*.tar"))
    categories = _categories(paths)
    if not categories or any(c is None for c in categories.values()):
        return None
    classnames = sorted(set(categories.values()))
    index = {name: i for i, name in enumerate(classnames)}
    for path in paths:
        with tarfile.open(path) as source, atomic_path(path) as part, tarfile.open(part, "w") as target:
            for member in source:
                data = source.extractfile(member).read() if member.isfile() else None
                target.addfile(member, io.BytesIO(data) if data is not None else None)
                if member.name.endswith(".json"):
                    key = member.name.removesuffix(".json")
                    label = str(index[categories[key]]).encode()
                    info = tarfile.TarInfo(f"{key}.cls")
                    info.size, info.mtime, info.mode = len(label), member.mtime, member.mode
                    target.addfile(info, io.BytesIO(label))
    with atomic_path(split_dir / "classnames.txt") as part:
        part.write_text("".join(f"{name}\n" for name in classnames))
    with atomic_path(split_dir / "zeroshot_classification_templates.txt") as part:
        part.write_text("".join(template.replace("{}", "{c}") + "\n" for template in templates))
    return classnames
