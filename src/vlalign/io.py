"""Atomic file and folder writes, checksums: a killed job never leaves an output that looks finished."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def remove_leftovers(path: Path, kind: str = "part") -> None:
    """Remove the temporary siblings (`.NAME.XXXXXXXX.<kind>`, tempfile's 8 random characters) that a killed
    writer of `path` left behind: each output has one writer at a time, so any found now are stale, and a
    killed job's half-written .beton or store must not stay on disk until someone notices."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.{re.escape(kind)}")
    if not path.parent.is_dir():
        return
    for stale in path.parent.iterdir():
        if pattern.fullmatch(stale.name) and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        elif pattern.fullmatch(stale.name):
            stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, folder: bool = False) -> Iterator[Path]:
    """Yield a temporary file (or, with `folder`, folder) beside `path`; it replaces `path` only if the block
    succeeds, and is removed if it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    beside = {"prefix": f".{path.name}.", "suffix": ".part", "dir": path.parent}
    if folder:
        tmp = Path(tempfile.mkdtemp(**beside))
    else:
        fd, name = tempfile.mkstemp(**beside)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        replace_dir(tmp, path) if folder else os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True) if folder else tmp.unlink(missing_ok=True)


def atomic_dir(path: str | os.PathLike):
    """`atomic_path` for a folder."""
    return atomic_path(path, folder=True)


def work_dir(out: str | os.PathLike, kind: str = "inprogress") -> Path:
    """Where the output `out` is built, or a job's state kept, until it is complete: `.{name}.{kind}` beside
    it, which Snakemake (deleting an unfinished output before a re-run) leaves alone, so a re-run resumes."""
    out = Path(out)
    return out.parent / f".{out.name}.{kind}"


def replace_dir(finished: str | os.PathLike, path: str | os.PathLike) -> None:
    """Move the complete folder `finished` onto `path`, replacing whatever was there."""
    if Path(path).exists():
        shutil.rmtree(path)
    os.replace(finished, path)


def link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """`target` as a hard link to `source` (no bytes copied, and it survives the source's name being deleted), or a
    copy across file systems; whatever was at `target` is replaced."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj) -> str:
    """Digest of a JSON-able object, independent of key order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
