"""Webdataset shards: `{key}.png|jpg` image, `{key}.txt` caption, `{key}.json` metadata.

Each shard is written to a temporary name and renamed when complete, so a killed job
never leaves a shard that looks finished.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from vlalign.data.images import IMAGE_EXTENSIONS


@dataclass
class Sample:
    key: str
    image: bytes
    image_ext: str
    caption: str
    meta: dict = field(default_factory=dict)


class ShardWriter:
    """Writes samples into `shard-000000.tar`, `shard-000001.tar`, ... under `out_dir`."""

    def __init__(self, out_dir: str | os.PathLike, samples_per_shard: int = 1000):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.samples_per_shard = samples_per_shard
        self.paths: list[Path] = []
        self._tar: tarfile.TarFile | None = None
        self._file = None
        self._count = 0
        self.total = 0

    def write(self, sample: Sample) -> None:
        if "." in sample.key or "/" in sample.key:
            raise ValueError(f"sample key {sample.key!r} may not contain '.' or '/'")
        if self._tar is None or self._count >= self.samples_per_shard:
            self._close_shard()
            self._open_shard()
        members = ((sample.image_ext, sample.image), ("txt", sample.caption.encode("utf-8")),
                   ("json", json.dumps(sample.meta, sort_keys=True).encode("utf-8")))  # fmt: skip
        for ext, data in members:
            # Fixed mode and time: the same samples make the same shard, byte for byte.
            info = tarfile.TarInfo(f"{sample.key}.{ext}")
            info.size, info.mode, info.mtime = len(data), 0o444, 0
            self._tar.addfile(info, io.BytesIO(data))
        self._count += 1
        self.total += 1

    def _open_shard(self) -> None:
        final = self.out_dir / f"shard-{len(self.paths):06d}.tar"
        self._partial = final.with_suffix(".tar.part")
        self._file = open(self._partial, "wb")
        # Plain tarfile: webdataset's writer would import torch into every download process (~800 MB).
        self._tar = tarfile.open(fileobj=self._file, mode="w")
        self.paths.append(final)
        self._count = 0

    def _close_shard(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self._file.close()
        os.replace(self._partial, self.paths[-1])
        self._tar = None

    def close(self) -> list[Path]:
        self._close_shard()
        return self.paths

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._tar is not None:
            self._tar.close()
            self._file.close()
            Path(self._partial).unlink(missing_ok=True)


def reorder_shard(path: Path, keys: list[str]) -> None:
    """Rewrite the shard at `path` with its samples in the order of `keys` (all of its samples' keys), each
    sample's members in the order they were written; replaced whole, so a kill leaves the old one."""
    with tarfile.open(path, "r") as source:
        members: dict[str, list[tarfile.TarInfo]] = {}
        order = []
        for member in source:
            key = member_key(member.name)[0]
            if key not in members:
                members[key] = []
                order.append(key)
            members[key].append(member)
        if order == keys:
            return
        if sorted(order) != sorted(keys):
            raise ValueError(f"{path}: holds samples {sorted(set(order) ^ set(keys))[:5]} it should not, or lacks them")
        partial = path.with_suffix(".tar.reorder")
        with open(partial, "wb") as file, tarfile.open(fileobj=file, mode="w") as target:
            for key in keys:
                for member in members[key]:
                    target.addfile(member, source.extractfile(member))
    os.replace(partial, path)


def shard_paths(folder: str | os.PathLike, allow_empty: bool = False) -> list[Path]:
    paths = sorted(Path(folder).glob("shard-*.tar"))
    if not paths and not allow_empty:
        raise FileNotFoundError(f"no shards (shard-*.tar) in {folder}")
    return paths


def folder_shards(folders: Iterable[str | os.PathLike]) -> list[Path]:
    """The shards of several folders, in order. A folder may be empty or missing (a partition whose rows all
    failed, or had no eval rows), but not all of them."""
    folders = list(folders)
    paths = [path for folder in folders for path in shard_paths(folder, allow_empty=True)]
    if not paths:
        raise FileNotFoundError(f"no shards (shard-*.tar) in {', '.join(map(str, folders))}")
    return paths


def iter_samples(paths: Iterable[str | os.PathLike]) -> Iterator[Sample]:
    """Yield the samples of webdataset shards in order; a malformed shard raises naming the file."""
    for path in paths:
        try:
            with tarfile.open(path, "r") as tar:
                yield from _samples_in_tar(tar, Path(path))
        except tarfile.TarError as exc:
            raise ValueError(f"{path}: not a readable tar shard ({exc})") from exc


def _samples_in_tar(tar: tarfile.TarFile, path: Path) -> Iterator[Sample]:
    group: dict[str, bytes] = {}
    current = None
    for member in tar:
        if not member.isfile():
            continue
        name = member.name
        if name.startswith("/") or ".." in Path(name).parts:
            raise ValueError(f"{path}: member {name!r} escapes the shard")
        key, ext = member_key(name)
        if key != current and group:
            yield _to_sample(current, group, path)
            group = {}
        current = key
        group[ext.lower()] = tar.extractfile(member).read()
    check_tar_end(tar)
    if group:
        yield _to_sample(current, group, path)


def member_key(name: str) -> tuple[str, str]:
    """(sample key, extension) of a shard member: its file name split at the first dot."""
    key, _, ext = Path(name).name.partition(".")
    return key, ext


def check_tar_end(tar: tarfile.TarFile) -> None:
    """Raise tarfile.ReadError unless an end-of-archive block followed the last member read: tarfile takes a
    tar cut short at (or inside) a member header for a complete, shorter one, and its samples would be lost
    silently. Call it when iteration has ended; works for seekable and stream (`r|`) modes alike."""
    if tar.fileobj.tell() < tar.offset + tarfile.BLOCKSIZE:
        raise tarfile.ReadError(f"cut short: no end-of-archive block after {tar.offset} bytes")


def _to_sample(key: str, group: dict[str, bytes], path: Path) -> Sample:
    ext = next((e for e in IMAGE_EXTENSIONS if e in group), None)
    if ext is None:
        raise ValueError(f"{path}: sample {key!r} has no image (members: {sorted(group)})")
    meta = json.loads(group["json"]) if "json" in group else {}
    caption = group.get("txt", b"").decode("utf-8", errors="replace")
    return Sample(key=key, image=group[ext], image_ext=ext, caption=caption, meta=meta)
