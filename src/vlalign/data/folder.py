"""A local folder as a source: `cats/tabby/01.jpg` with its caption in `cats/tabby/01.txt`, category `cats`.

Items carry the image's path, not its bytes, so a large folder is never held in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from vlalign.data.images import IMAGE_EXTENSIONS
from vlalign.data.sources import SourceItem, caption_lines, class_caption, safe_key


def folder_items(root: str | Path, name: str, classnames: list[str] | dict[str, str] | None = None,
                 caption_template: str | None = None) -> Iterator[SourceItem]:
    """Every image file under `root` (recursive, sorted; hidden files and folders left out).

    An ImageNet-style classification set (`n01440764/x.jpg`, no caption files): `classnames`
    names each top folder (a mapping, or a list in sorted folder order) and `caption_template`
    makes the caption of an image without a caption file from its class name.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"sources.{name}.path: {root} is not a folder")
    paths = [p for p in sorted(root.rglob("*")) if p.suffix.lower().removeprefix(".") in IMAGE_EXTENSIONS and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(root).parts)]  # fmt: skip
    folders = sorted({p.relative_to(root).parts[0] for p in paths if len(p.relative_to(root).parts) > 1})
    if isinstance(classnames, list):
        if len(classnames) != len(folders):
            raise ValueError(f"sources.{name}.classnames: {len(classnames)} names for {len(folders)} class folders")
        classnames = dict(zip(folders, classnames))
    for path in paths:
        rel = path.relative_to(root)
        category = rel.parts[0] if len(rel.parts) > 1 else None
        if category is not None and classnames is not None:
            category = classnames.get(category, category)
        item = SourceItem(key=safe_key(f"{name}_{rel.as_posix()}"), origin=rel.as_posix(), category=category, path=path)
        caption_file = path.with_suffix(".txt")
        text = caption_file.read_text(encoding="utf-8", errors="replace") if caption_file.is_file() else ""
        captions = caption_lines(text)
        if len(captions) > 1:  # one caption a line: the first is the sample's caption
            item.meta["captions"] = captions
        caption = captions[0] if captions else class_caption(caption_template, category)
        if caption:
            item.caption = caption
        else:
            item.error = "no_caption"
        yield item
