"""An ordered map over batches in worker processes that holds only a few batches in memory.

`Pool.imap` reads its whole input ahead (every image of the pool), so batches are
submitted as results come back, at most `2 * workers` in flight. Workers are spawned,
not forked: the parent may hold threads (MLflow, BLAS) whose locks a fork would copy.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], batches: Iterable[T], workers: int) -> Iterator[R]:
    """Yield fn(batch) in input order; with `workers` <= 1 everything runs in this process."""
    if workers <= 1:
        yield from map(fn, batches)
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    pending: deque = deque()
    try:
        for batch in batches:
            pending.append(pool.submit(fn, batch))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        # After an error, or when the caller stops early, queued batches are dropped.
        pool.shutdown(wait=True, cancel_futures=True)
