"""Fetching one URL of an untrusted list: http(s) only, bounded in bytes and time, every failure classified.

Redirects are followed here, hop by hop, so that each hop's scheme is checked and a loop is
named as one. Transient failures (timeouts, dropped connections, 5xx, 429) are retried.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

ALLOWED_SCHEMES = {"http", "https"}
MAX_REDIRECTS = 5
# A server that trickles bytes never trips the per-read timeout; a transfer may take at most this many timeouts.
TRANSFER_TIMEOUTS = 10
# Directives by which a site asks not to have its images used for AI training (img2dataset honours the same).
DISALLOWED_ROBOTS = {"noai", "noimageai", "noindex", "noimageindex"}
RETRYABLE = {"timeout", "connection_error", "truncated_transfer", "http_408", "http_429"}
USER_AGENT = "vlalign-download/0.1 (dataset download; honours X-Robots-Tag noai)"
CHUNK = 1 << 16


@dataclass
class Fetched:
    data: bytes | None = None
    error: str | None = None  # class: bad_scheme, http_404, timeout, too_large_bytes, redirect_loop, ...
    detail: str | None = None
    received: int = 0  # bytes received before success or refusal


class _Refused(Exception):
    def __init__(self, error: str, detail: str, received: int = 0):
        super().__init__(detail)
        self.error, self.detail, self.received = error, detail, received


def _robots_disallow(headers) -> bool:
    """X-Robots-Tag values like `noai` or `otherbot: noimageai, noindex` (any agent counts)."""
    for value in headers.get("X-Robots-Tag", "").split(","):
        directive = value.split(":")[-1].strip().lower()
        if directive in DISALLOWED_ROBOTS:
            return True
    return False


def _classify(exc: Exception) -> tuple[str, str]:
    detail = f"{type(exc).__name__}: {exc}"[:300]
    if isinstance(exc, requests.Timeout):
        return "timeout", detail
    inner = exc.args[0] if exc.args else None
    if isinstance(exc, requests.ConnectionError) and isinstance(inner, urllib3.exceptions.ReadTimeoutError):
        return "timeout", detail  # a read timeout while streaming the body arrives wrapped this way
    if isinstance(exc, requests.exceptions.SSLError):
        return "ssl_error", detail
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "truncated_transfer", detail  # the body ended before its Content-Length
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema, UnicodeError)):
        return "bad_url", detail
    return "connection_error", detail


class Fetcher:
    """Thread-safe: each thread keeps its own connection pool."""

    def __init__(self, max_bytes: int, timeout_s: float, retries: int, backoff_s: float = 0.5):
        self.max_bytes, self.timeout_s, self.retries, self.backoff_s = max_bytes, timeout_s, retries, backoff_s
        self._local = threading.local()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            session = requests.Session()
            # Images are compressed already (a body compressed anyway is counted decoded, against max_bytes).
            session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
            self._local.session = session
        return self._local.session

    def fetch(self, url: str) -> Fetched:
        attempt = 0
        while True:
            result = self._fetch_once(url)
            transient = result.error in RETRYABLE or (result.error or "").startswith("http_5")
            if not transient or attempt == self.retries:
                return result
            time.sleep(self.backoff_s * 2**attempt)
            attempt += 1

    def _fetch_once(self, url: str) -> Fetched:
        try:
            data = self._follow(url)
            return Fetched(data=data, received=len(data))
        except _Refused as refused:
            return Fetched(error=refused.error, detail=refused.detail, received=refused.received)
        except (requests.RequestException, urllib3.exceptions.HTTPError, UnicodeError) as exc:
            error, detail = _classify(exc)
            return Fetched(error=error, detail=detail)

    def _follow(self, url: str) -> bytes:
        seen = {url}
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme.lower() not in ALLOWED_SCHEMES:
                raise _Refused("bad_scheme", f"scheme {parts.scheme!r} of {url[:200]!r}")
            if not parts.hostname:
                raise _Refused("bad_url", f"no host in {url[:200]!r}")
            with self._session().get(url, stream=True, timeout=self.timeout_s, allow_redirects=False) as response:
                if response.is_redirect:
                    url = urljoin(url, response.headers["Location"])
                    if url in seen:
                        raise _Refused("redirect_loop", f"redirected back to {url[:200]!r}")
                    seen.add(url)
                    continue
                if not 200 <= response.status_code < 300:
                    raise _Refused(f"http_{response.status_code}", f"HTTP {response.status_code} {response.reason}")
                if _robots_disallow(response.headers):
                    raise _Refused("robots_disallowed", f"X-Robots-Tag: {response.headers['X-Robots-Tag']}")
                return self._read_body(response)
        raise _Refused("too_many_redirects", f"more than {MAX_REDIRECTS} redirects")

    def _read_body(self, response: requests.Response) -> bytes:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise _Refused("too_large_bytes", f"Content-Length {declared} > {self.max_bytes}")
        deadline = time.monotonic() + TRANSFER_TIMEOUTS * self.timeout_s
        body = bytearray()
        for block in response.iter_content(CHUNK):
            body += block
            if len(body) > self.max_bytes:
                raise _Refused("too_large_bytes", f"more than {self.max_bytes} bytes", len(body))
            if time.monotonic() > deadline:
                raise _Refused("timeout", f"transfer slower than {TRANSFER_TIMEOUTS} x {self.timeout_s} s", len(body))
        return bytes(body)
