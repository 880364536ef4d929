"""Ordered maps over a stream that keep only a window of calls in flight.

`Executor.map` and `Pool.imap` read their whole input ahead: with image bytes in the
items or results, a long source would sit in memory. Results come back in input order,
so what is written from them is the same whatever the timing.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, ThreadPoolExecutor, wait
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _windowed(fn: Callable[[T], R], items: Iterable[T], pool: Executor, window: int) -> Iterator[R]:
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        # On an error or an abandoned generator, queued calls are dropped; running ones finish.
        pool.shutdown(wait=True, cancel_futures=True)


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last one shorter), read from the stream as they are needed."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def thread_map(fn: Callable[[T], R], items: Iterable[T], threads: int, window: int | None = None) -> Iterator[R]:
    """fn(item) for each item in threads (I/O-bound work), in order.

    At most `window` items (default 4 per thread) are submitted and not yet yielded. A slow
    call stalls the other threads only once the window behind it is done, so a wider window
    rides out slower calls, at the cost of holding that many results in memory.
    """
    window = threads * 4 if window is None else window
    return _windowed(fn, items, ThreadPoolExecutor(max_workers=threads), window)


def thread_map_unordered(fn: Callable[[T], R], items: Iterable[T], threads: int, window: int | None = None
                         ) -> Iterator[R]:  # fmt: skip
    """fn(item) for each item in threads, yielded as each call finishes: a slow call holds back nothing but
    its own thread. At most `window` items (default 4 per thread) are submitted and not yet yielded."""
    window = threads * 4 if window is None else window
    pool = ThreadPoolExecutor(max_workers=threads)
    pending: set = set()
    try:
        for item in items:
            pending.add(pool.submit(fn, item))
            if len(pending) >= window:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (future.result() for future in done)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from (future.result() for future in done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def process_map(fn: Callable[[T], R], batches: Iterable[T], workers: int) -> Iterator[R]:
    """fn(batch) for each batch in worker processes (CPU-bound work), in order; `workers` <= 1 runs here.

    Workers are spawned, not forked: the parent may hold threads (MLflow, BLAS) whose locks
    a fork would copy.
    """
    if workers <= 1:
        return map(fn, batches)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    return _windowed(fn, batches, pool, 2 * workers)
