"""Process-wide set-up of a `vlalign` process, done once before any model library loads.

Two defaults of the C runtime cost the CPU demo more than half of its embedding time (measured in
docs/PERFORMANCE.md, issue 14):

- glibc serves an allocation above its mmap threshold (at most 32 MiB) with a fresh mapping and unmaps it
  when it is freed, so every batch of a CNN (activations of 50-100 MB at 224 px, batch 64) faults all of
  its pages in again: about 8,000 minor page faults per image, half of the job's CPU time spent in the
  kernel. Kept in the heap, freed blocks serve the next batch.
- GNU OpenMP, torch's intra-op threads, spins at every barrier (300,000 rounds) before it sleeps. Beside
  the loader's decode threads, and beside the other jobs that Snakemake runs on the same cores, the
  spinning takes the cycles the work needs. Passive waiting sleeps at once.

Threads: Snakemake sets OMP_NUM_THREADS to a rule's `threads:`, which torch reads at start-up, so a
stage uses the cores its rule declared.
"""

from __future__ import annotations

import ctypes
import os

# mallopt parameters, from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# Freed memory at the top of the heap is given back to the system only beyond this much.
_TRIM_THRESHOLD = 1 << 30


def configure_process() -> None:
    """Keep freed memory for reuse and let idle OpenMP threads sleep; an OMP_WAIT_POLICY already set is kept.

    Call it before torch is imported: GNU OpenMP reads its environment when torch loads it. Processes
    this one spawns inherit the wait policy.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if _is_glibc():
        libc = ctypes.CDLL(None)
        # No mmap for large blocks: freed ones stay in the heap instead of being unmapped and faulted in again.
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)


def _is_glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # not a POSIX confstr, or not a GNU system
        return False
