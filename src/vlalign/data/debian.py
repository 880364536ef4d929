"""Debian packages as data: `apt-get download` + `dpkg-deb -x`, neither needs root."""

from __future__ import annotations

import subprocess
from pathlib import Path


class DebianFetchError(RuntimeError):
    pass


def _run(args: list[str], cwd: Path | None = None) -> None:
    # Arguments are passed as a list, never through a shell: package names come from config.
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise DebianFetchError(f"`{' '.join(args)}` failed ({result.returncode}): {result.stderr.strip()[-2000:]}")


def _is_valid_deb(path: Path) -> bool:
    return subprocess.run(["dpkg-deb", "--info", str(path)], capture_output=True).returncode == 0


def fetch_deb(package: str, cache_dir: str | Path) -> Path:
    """Path of `package`'s .deb in `cache_dir`, downloading it with apt-get unless a valid one is there."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for existing in sorted(cache_dir.glob(f"{package}_*.deb")):
        if _is_valid_deb(existing):
            return existing
        existing.unlink()  # a download cut short; fetch again
    _run(["apt-get", "download", package], cwd=cache_dir)
    found = sorted(cache_dir.glob(f"{package}_*.deb"))
    if not found:
        raise DebianFetchError(f"apt-get download {package} left no .deb in {cache_dir}")
    return found[-1]


def extract_deb(deb: str | Path, dest: str | Path) -> Path:
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    _run(["dpkg-deb", "-x", str(deb), str(dest)])
    return dest
