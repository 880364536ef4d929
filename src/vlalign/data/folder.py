"""A local folder as a source: `cats/tabby/01.jpg` with its caption in `cats/tabby/01.txt`, category `cats`.

Items carry the image's path, not its bytes, so a large folder is never held in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from vlalign.data.sources import SourceItem, safe_key

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def folder_items(root: str | Path, name: str) -> Iterator[SourceItem]:
    """Every image file under `root` (recursive, sorted; hidden files and folders left out)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"sources.{name}.path: {root} is not a folder")
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.suffix.lower() not in IMAGE_SUFFIXES or any(p.startswith(".") for p in rel.parts) or not path.is_file():
            continue
        category = rel.parts[0] if len(rel.parts) > 1 else None
        item = SourceItem(key=safe_key(f"{name}_{rel.as_posix()}"), origin=rel.as_posix(), category=category, path=path)
        caption_file = path.with_suffix(".txt")
        caption = caption_file.read_text(encoding="utf-8", errors="replace").strip() if caption_file.is_file() else ""
        if caption:
            item.caption = caption
        else:
            item.error = "no_caption"
        yield item
