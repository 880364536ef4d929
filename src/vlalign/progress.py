"""Progress lines with rate and ETA that read well in Snakemake log files (no carriage returns)."""

from __future__ import annotations

import sys
import time


def format_duration(seconds: float) -> str:
    """`H:MM:SS`."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Prints `label: done/total (pct) rate/s ETA` at most every `interval` seconds, and at the end;
    `enabled=False` counts silently."""

    def __init__(self, label: str, total: int | None, unit: str = "items", interval: float = 10.0,
                 enabled: bool = True, initial: int = 0):
        self.label, self.total, self.unit, self.interval, self.enabled = label, total, unit, interval, enabled
        self.initial = self.done = initial  # a resumed job's rate counts only what it did itself
        self.started = self._last = time.time()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.time()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self._print(now)

    def _print(self, now: float, final: bool = False) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = (self.done - self.initial) / elapsed
        parts = [f"{self.label}: {self.done}"]
        if self.total:
            parts[0] += f"/{self.total} ({100 * self.done / self.total:.0f}%)"
        parts.append(f"{rate:.1f} {self.unit}/s")
        if final:
            parts.append(f"took {format_duration(elapsed)}")
        elif self.total and rate > 0:
            parts.append(f"ETA {format_duration((self.total - self.done) / rate)}")
        print(", ".join(parts), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            self._print(time.time(), final=True)
