"""A wall-clock deadline for blocking socket work, however a server paces its bytes.

A socket timeout bounds one read, not a response: a server sending one byte a second never
trips it, in the headers or in the body. `Deadlines` keeps one thread that shuts down the
sockets of attempts whose time is up, which makes the blocked read (or connect, or TLS
handshake) in the fetching thread return at once; the fetcher then asks `Attempt.expired`.
"""

from __future__ import annotations

import socket
import threading
import time


class Attempt:
    """The sockets of one fetch attempt and the moment they are cut."""

    def __init__(self, deadlines: "Deadlines", seconds: float):
        self._deadlines = deadlines
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.expired = False
        self.phase = "starting"  # what the attempt was doing, for the message when it runs out of time
        self._sockets: list[socket.socket] = []
        self._done = False

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)

    def watch(self, sock: socket.socket) -> None:
        """Cut `sock` at the deadline (at once when it has passed)."""
        with self._deadlines.lock:
            self._sockets.append(sock)
            if self.expired:
                _cut(sock)

    def expire(self) -> None:
        with self._deadlines.lock:
            if self._done:
                return
            self.expired = True
            for sock in self._sockets:
                _cut(sock)

    def close(self) -> None:
        """End the attempt: its sockets are closed and no longer watched."""
        with self._deadlines.lock:
            self._done = True
            self._deadlines.active.discard(self)
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()

    def __enter__(self) -> "Attempt":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _cut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected yet, or closed already: the connect's own timeout bounds it


class Deadlines:
    """One watcher thread for any number of concurrent attempts (as many as there are fetching threads, so
    finding the next deadline by looking at each is cheap, and a finished attempt is forgotten at once)."""

    def __init__(self):
        self.lock = threading.Lock()
        self._changed = threading.Condition(self.lock)
        self.active: set[Attempt] = set()
        self._thread: threading.Thread | None = None

    def start(self, seconds: float) -> Attempt:
        attempt = Attempt(self, seconds)
        with self.lock:
            self.active.add(attempt)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="fetch-deadlines", daemon=True)
                self._thread.start()
            self._changed.notify()
        return attempt

    def _watch(self) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                due = [attempt for attempt in self.active if attempt.deadline <= now]
                if not due:
                    nearest = min((attempt.deadline for attempt in self.active), default=None)
                    self._changed.wait(None if nearest is None else nearest - now)
                    continue
                self.active.difference_update(due)
            for attempt in due:
                attempt.expire()
