"""Existing webdataset shards as a source: local paths, globs or fsspec URLs, with `{000..009}` ranges.

Samples are re-keyed (`{source}_{shard}_{key}`, made safe) so that shards of different
datasets, or keys with dots and slashes, cannot collide or break the layout; each is
checked like any downloaded item. A shard that cannot be opened or ends early counts as
one failed item, since how many samples it held is unknown.
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path
from typing import IO, Iterator
from urllib.parse import urlsplit

import fsspec
from braceexpand import braceexpand
from fsspec.implementations.local import LocalFileSystem

from vlalign.data.images import IMAGE_EXTENSIONS
from vlalign.data.shards import check_tar_end
from vlalign.data.sources import SourceItem, caption_lines, class_caption, safe_key
# webdataset's convention: the key is the member path up to the first dot of its file name.
MEMBER = re.compile(r"^((?:.*/|)[^./]+)\.([^/]+)$")


def _is_glob(url: str) -> bool:
    # A `?` in an http URL starts its query, not a pattern.
    return not url.startswith(("http://", "https://")) and any(c in url for c in "*?[")


def expand_urls(patterns: list[str]) -> list[str]:
    """Shard URLs in order: brace ranges expanded, globs matched (a glob matching nothing is an error)."""
    shards = []
    for pattern in patterns:
        for url in braceexpand(pattern):
            if not _is_glob(url):
                shards.append(url)
                continue
            fs, path = fsspec.core.url_to_fs(url)
            matches = sorted(fs.glob(path))
            if not matches:
                raise FileNotFoundError(f"no shard matches {url!r}")
            shards += matches if isinstance(fs, LocalFileSystem) else [fs.unstrip_protocol(m) for m in matches]
    return shards


def shard_problems(source: dict) -> list[str]:
    """`urls: ...` lines for local shards the source names that are missing (URLs with a scheme are the
    download's to fetch)."""
    problems = []
    for pattern in (u for u in source.get("urls") or [] if "://" not in u):
        try:
            missing = [shard for shard in expand_urls([pattern]) if not Path(shard).is_file()]
        except FileNotFoundError as exc:  # a glob that matches nothing
            missing = [str(exc)]
        if missing:
            problems.append(f"urls: {len(missing)} shard(s) of {pattern!r} missing, first: {missing[0]}")
    return problems


def _groups(stream: IO[bytes], max_bytes: int) -> Iterator[tuple[str, dict[str, bytes], list[str]]]:
    """(key, {ext: bytes}, names of members over max_bytes, left unread) per sample of a tar stream."""
    key, group, oversized = None, {}, []
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            match = MEMBER.match(member.name) if member.isfile() else None
            if match is None:
                continue
            if match.group(1) != key and key is not None:
                yield key, group, oversized
                group, oversized = {}, []
            key, ext = match.group(1), match.group(2).lower()
            if member.size > max_bytes:
                oversized.append(f"{ext} ({member.size} bytes)")
            else:
                group[ext] = tar.extractfile(member).read()
        check_tar_end(tar)  # before the last sample, which a cut may have left without some members
    if key is not None:
        yield key, group, oversized


def _metadata(group: dict[str, bytes]) -> dict | None:
    """The sample's json object ({} when it has none), None when it is not a JSON object."""
    if "json" not in group:
        return {}
    try:
        meta = json.loads(group["json"])
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


def _class_of(group: dict[str, bytes], classnames: list[str] | dict[str, str] | None) -> tuple[str | None, str | None]:
    """(class name, problem) from a clip_benchmark `cls` member (the label index) and the class names."""
    if "cls" not in group or classnames is None:
        return None, None
    label = group["cls"].decode("utf-8", errors="replace").strip()
    names = classnames if isinstance(classnames, dict) else dict(enumerate(classnames))
    index = int(label) if label.isdigit() else label
    if index not in names:
        return None, f"cls {label!r} is not among the {len(names)} class names"
    return names[index], None


def _item(name: str, url: str, shard: str, member_key: str, group: dict[str, bytes], oversized: list[str],
          classnames=None, caption_template: str | None = None) -> SourceItem:  # fmt: skip
    item = SourceItem(key=safe_key(f"{name}_{shard}_{member_key}"), origin=f"{url}#{member_key}")
    image_ext = next((ext for ext in IMAGE_EXTENSIONS if ext in group), None)
    classname, class_problem = _class_of(group, classnames)
    captions = caption_lines(group.get("txt", b"").decode("utf-8", errors="replace"))
    caption = captions[0] if captions else class_caption(caption_template, classname)
    meta = _metadata(group)
    if meta is not None and len(captions) > 1:
        meta = {"captions": captions, **meta}  # several captions: the first is the sample's caption
    if member_key.startswith("/") or ".." in member_key.split("/"):
        # Nothing is extracted by name here, but a shard that tries to escape is not one to trust.
        item.error, item.detail = "unsafe_name", f"member path {member_key!r} leaves the shard"
    elif class_problem:
        item.error, item.detail = "bad_label", class_problem
    elif oversized:
        item.error, item.detail = "too_large_bytes", ", ".join(oversized)
    elif image_ext is None:
        item.error, item.detail = "no_image", f"members: {sorted(group)}"
    elif not caption:
        item.error = "no_caption"
    elif meta is None:
        item.error, item.detail = "bad_metadata", f"json is not an object: {group['json'][:100]!r}"
    else:
        item.caption, item.image, item.image_ext, item.meta = caption, group[image_ext], image_ext, meta
        item.category = classname or (meta.get("category") if isinstance(meta.get("category"), str) else None)
    return item


def webdataset_items(urls: list[str], name: str, max_bytes: int, classnames=None,
                     caption_template: str | None = None) -> Iterator[SourceItem]:
    """The samples of the shards; with `classnames`, a clip_benchmark classification set: each
    sample's `cls` label names its category, and `caption_template` captions samples without `txt`."""
    seen: set[str] = set()
    for url in expand_urls(urls):
        shard = urlsplit(url).path.rsplit("/", 1)[-1].split(".")[0]
        try:
            with fsspec.open(url, "rb") as stream:
                for member_key, group, oversized in _groups(stream, max_bytes):
                    item = _item(name, url, shard, member_key, group, oversized, classnames, caption_template)
                    if item.key in seen:
                        item = SourceItem(key=item.key, origin=item.origin, error="duplicate_key",
                                          detail="an earlier shard of this source has the same key")  # fmt: skip
                    seen.add(item.key)
                    yield item
        except Exception as exc:  # remote file systems raise many types; the shard is accounted, not the run lost
            yield SourceItem(key=safe_key(f"{name}_{shard}_unreadable"), origin=url, error="unreadable_shard",
                             detail=f"{type(exc).__name__}: {exc}"[:300])  # fmt: skip
