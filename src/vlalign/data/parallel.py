"""An ordered thread-pool map over a stream that holds only a window of results at a time.

`ThreadPoolExecutor.map` submits the whole input at once: with image bytes in the
results, a long source would sit in memory. Results come back in input order, so the
shards written from them are the same whatever the timing.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], threads: int, window_per_thread: int = 4) -> Iterator[R]:
    """fn(item) for each item, in order, with at most threads * window_per_thread calls in flight."""
    pool = ThreadPoolExecutor(max_workers=threads)
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= threads * window_per_thread:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        # On an error or an abandoned generator, queued calls are dropped; running ones finish.
        pool.shutdown(wait=True, cancel_futures=True)
