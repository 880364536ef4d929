"""Fetching one URL of an untrusted list: http(s) only, public addresses only, bounded in bytes and wall time.

An attempt follows redirects hop by hop. Each hop's URL is parsed and its scheme checked, its
host resolved once, every address it resolves to checked by the `AddressPolicy`, and the
connection made to a checked address (the Host header and TLS name stay the URL's host).
One deadline, `timeout_s`, covers the whole attempt: resolving, connecting, headers, body,
every hop. Transient failures (timeouts, dropped connections, 5xx, 408, 429) are retried.
Nothing raises out of `Fetcher.fetch`: every failure is a class and a message.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

from vlalign.data.address_policy import AddressPolicy, parse_address
from vlalign.data.deadline import Attempt, Deadlines

ALLOWED_SCHEMES = {"http": 80, "https": 443}
MAX_REDIRECTS = 5
REDIRECTS = {301, 302, 303, 307, 308}
# Directives by which a site asks not to have its images used for AI training (img2dataset honours the same).
DISALLOWED_ROBOTS = {"noai", "noimageai", "noindex", "noimageindex"}
RETRYABLE = {"timeout", "connection_error", "truncated_transfer", "dns_retry", "http_408", "http_429"}


def is_transient(error: str | None) -> bool:
    """A failure that may not happen again (a timeout, a dropped connection, 429, 5xx): retried within an attempt
    budget, and again by a later retry round (`sources.*.retry_round`)."""
    return isinstance(error, str) and (error in RETRYABLE or error.startswith("http_5"))
USER_AGENT = "vlalign-download/0.1 (dataset download; honours X-Robots-Tag noai)"
CHUNK = 1 << 16
# Characters left as they are when a URL's path and query are percent-encoded for the request line.
URL_SAFE = "!#$%&'()*+,/:;=?@[]~"
# Resolver threads: getaddrinfo cannot be interrupted, so it runs aside and the attempt stops waiting for it.
RESOLVERS = 32


@dataclass
class Fetched:
    data: bytes | None = None
    error: str | None = None  # class: bad_scheme, refused_address, http_404, timeout, too_large_bytes, ...
    detail: str | None = None
    received: int = 0  # bytes received before success or refusal


class _Refused(Exception):
    def __init__(self, error: str, detail: str, received: int = 0):
        super().__init__(detail)
        self.error, self.detail, self.received = error, detail, received


def _robots_disallow(headers: http.client.HTTPMessage) -> bool:
    """X-Robots-Tag values like `noai` or `otherbot: noimageai, noindex` (any agent counts)."""
    for header in headers.get_all("X-Robots-Tag") or ():
        for value in header.split(","):
            if value.split(":")[-1].strip().lower() in DISALLOWED_ROBOTS:
                return True
    return False


def _classify(exc: BaseException, attempt: Attempt) -> tuple[str, str]:
    """(class, message) of a failed attempt: a timeout whatever the cut raised, else a refusal's own class."""
    detail = f"{type(exc).__name__}: {exc}"[:300]
    if attempt.expired or isinstance(exc, (TimeoutError, FutureTimeout)):
        return "timeout", f"attempt took more than {attempt.seconds:g} s (timeout_s), stopped while {attempt.phase}"
    if isinstance(exc, _Refused):
        return exc.error, exc.detail
    if isinstance(exc, socket.gaierror):
        return ("dns_retry" if exc.errno == socket.EAI_AGAIN else "dns_error"), detail
    if isinstance(exc, (ssl.SSLError, ssl.CertificateError)):
        return "ssl_error", detail
    if isinstance(exc, http.client.IncompleteRead):
        return "truncated_transfer", detail  # the body ended before its Content-Length or last chunk
    if isinstance(exc, (ConnectionError, http.client.RemoteDisconnected)):
        return "connection_error", detail
    if isinstance(exc, (http.client.HTTPException, zlib.error)):
        return "bad_response", detail  # a malformed status line, header, chunk or compressed body
    if isinstance(exc, OSError):
        return "connection_error", detail
    return "fetch_failed", detail  # nothing of a row may stop the list: the rest is named and recorded


@dataclass(frozen=True)
class _Hop:
    """One parsed request: where to connect, what to ask for."""

    scheme: str
    host: str  # ASCII (IDNA) host, IPv6 without brackets
    port: int
    target: str  # path and query, percent-encoded

    @classmethod
    def parse(cls, url: str) -> "_Hop":
        try:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            if scheme not in ALLOWED_SCHEMES:
                raise _Refused("bad_scheme", f"scheme {parts.scheme!r} of {url[:200]!r}")
            host = parts.hostname
            if not host:
                raise _Refused("bad_url", f"no host in {url[:200]!r}")
            port = parts.port or ALLOWED_SCHEMES[scheme]
            host = host if ":" in host else host.encode("idna").decode("ascii")
        except (ValueError, UnicodeError) as exc:  # unbalanced brackets, bad ports, labels IDNA refuses
            raise _Refused("bad_url", f"{type(exc).__name__}: {exc} in {url[:200]!r}") from None
        target = quote(parts.path or "/", safe=URL_SAFE) + (f"?{quote(parts.query, safe=URL_SAFE)}" if parts.query else "")
        return cls(scheme, host, port, target)


class _PinnedHTTP(http.client.HTTPConnection):
    """A connection to an address checked beforehand, for a request naming `host`."""

    def __init__(self, host: str, port: int, sockaddrs: list[tuple], attempt: Attempt):
        super().__init__(host, port)
        self._sockaddrs, self._attempt = sockaddrs, attempt

    def _connect_checked(self) -> socket.socket:
        failure: OSError | None = None
        for family, sockaddr in self._sockaddrs:  # as a browser does: the next address when one does not answer
            remaining = self._attempt.remaining()
            if remaining <= 0:
                raise TimeoutError("no time left to connect")
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(remaining)
            self._attempt.watch(sock)
            try:
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                failure = exc
        raise failure

    def connect(self) -> None:
        self.sock = self._connect_checked()


class _PinnedHTTPS(_PinnedHTTP):
    def __init__(self, host: str, port: int, sockaddrs: list[tuple], attempt: Attempt, context: ssl.SSLContext):
        super().__init__(host, port, sockaddrs, attempt)
        self._context = context

    def connect(self) -> None:
        raw = self._connect_checked()
        # The handshake runs after the wrapped socket is watched, so a stalled handshake is cut as well.
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host, do_handshake_on_connect=False)
        self._attempt.watch(self.sock)
        self.sock.do_handshake()


class Fetcher:
    """Thread-safe; one per download. `allow_networks` names non-public networks that may be fetched from."""

    def __init__(self, max_bytes: int, timeout_s: float, retries: int, backoff_s: float = 0.5,
                 allow_networks: tuple[str, ...] | list[str] = (), resolve=socket.getaddrinfo,
                 ca_file: str | None = None):  # fmt: skip
        self.max_bytes, self.timeout_s, self.retries, self.backoff_s = max_bytes, timeout_s, retries, backoff_s
        self.policy = AddressPolicy(allow_networks)
        self._resolve = resolve  # getaddrinfo's signature; a test passes one that answers differently each time
        self._ca_file = ca_file  # None: certifi's bundle; a test passes its own authority
        self._resolvers = ThreadPoolExecutor(RESOLVERS, thread_name_prefix="resolve")
        self._deadlines = Deadlines()
        self._tls_lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None  # made at the first https URL, shared by the threads

    def _context(self) -> ssl.SSLContext:
        with self._tls_lock:
            if self._tls is None:
                import certifi  # the CA bundle requests uses, present however bare the machine's own store is

                self._tls = ssl.create_default_context(cafile=self._ca_file or certifi.where())
            return self._tls

    def fetch(self, url: str) -> Fetched:
        attempt = 0
        while True:
            result = self._fetch_once(url)
            if not is_transient(result.error) or attempt == self.retries:
                return result
            time.sleep(self.backoff_s * 2**attempt)
            attempt += 1

    def _fetch_once(self, url: str) -> Fetched:
        with self._deadlines.start(self.timeout_s) as attempt:
            try:
                data = self._follow(url, attempt)
                if attempt.expired:  # the cut may end a body without a length as if it were complete
                    raise TimeoutError("body cut at the deadline")
                return Fetched(data=data, received=len(data))
            except Exception as exc:  # noqa: BLE001 -- every failure of one URL is that row's status, never the job's
                error, detail = _classify(exc, attempt)
                return Fetched(error=error, detail=detail, received=getattr(exc, "received", 0))

    def _addresses(self, hop: _Hop, attempt: Attempt) -> list[tuple]:
        """(family, sockaddr) of every address the hop's host resolves to, each one checked."""
        attempt.phase = f"resolving {hop.host}"
        lookup = self._resolvers.submit(self._resolve, hop.host, hop.port, 0, socket.SOCK_STREAM)
        answers = lookup.result(timeout=attempt.remaining())
        sockaddrs = []
        for family, _, _, _, sockaddr in answers:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            refusal = self.policy.refusal(parse_address(sockaddr[0]))
            if refusal is not None:  # one bad answer refuses the host: the next lookup could prefer it
                raise _Refused("refused_address", f"{hop.host} resolves to {refusal}")
            if (family, sockaddr) not in sockaddrs:
                sockaddrs.append((family, sockaddr))
        if not sockaddrs:
            raise _Refused("dns_error", f"{hop.host} resolves to no IPv4 or IPv6 address")
        return sockaddrs

    def _follow(self, url: str, attempt: Attempt) -> bytes:
        seen = {url}
        for _ in range(MAX_REDIRECTS + 1):
            hop = _Hop.parse(url)
            sockaddrs = self._addresses(hop, attempt)
            if hop.scheme == "https":
                connection = _PinnedHTTPS(hop.host, hop.port, sockaddrs, attempt, self._context())
            else:
                connection = _PinnedHTTP(hop.host, hop.port, sockaddrs, attempt)
            try:
                attempt.phase = f"connecting to {hop.host}"
                connection.request("GET", hop.target, headers={"User-Agent": USER_AGENT, "Accept": "image/*, */*;q=0.5",
                                                                "Accept-Encoding": "identity"})  # fmt: skip
                attempt.phase = f"waiting for the response headers of {hop.host}"
                response = connection.getresponse()
                if attempt.expired:  # headers cut mid-line read as a short, complete header block
                    raise TimeoutError("headers cut at the deadline")
                if response.status in REDIRECTS and response.getheader("Location"):
                    location = response.getheader("Location")
                    try:
                        url = urljoin(url, location.strip())
                    except ValueError as exc:
                        raise _Refused("bad_url", f"{exc} in redirect to {location[:200]!r}") from None
                    if url in seen:
                        raise _Refused("redirect_loop", f"redirected back to {url[:200]!r}")
                    seen.add(url)
                    continue
                if not 200 <= response.status < 300:
                    raise _Refused(f"http_{response.status}", f"HTTP {response.status} {response.reason}"[:300])
                if _robots_disallow(response.headers):
                    raise _Refused("robots_disallowed", f"X-Robots-Tag: {response.getheader('X-Robots-Tag')}"[:300])
                attempt.phase = f"reading the body from {hop.host}"
                return self._read_body(response)
            finally:
                connection.close()
        raise _Refused("too_many_redirects", f"more than {MAX_REDIRECTS} redirects")

    def _read_body(self, response: http.client.HTTPResponse) -> bytes:
        declared = response.getheader("Content-Length", "").strip()
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise _Refused("too_large_bytes", f"Content-Length {declared} > {self.max_bytes}")
        encoding = response.getheader("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "", "gzip", "x-gzip", "deflate"):
            raise _Refused("bad_response", f"Content-Encoding {encoding!r} (identity was asked for)")
        # A server that compresses anyway: inflated as it arrives, and counted inflated, so a zip bomb stops at max_bytes.
        inflate = None if encoding in ("identity", "") else zlib.decompressobj(wbits=47 if "gzip" in encoding else 15)
        body = bytearray()
        received = 0
        while block := response.read(CHUNK):
            received += len(block)
            body += block if inflate is None else inflate.decompress(block, self.max_bytes + 1 - len(body))
            if len(body) > self.max_bytes:
                raise _Refused("too_large_bytes", f"more than {self.max_bytes} bytes", received)
        if declared.isdigit() and received < int(declared):  # http.client's read(n) takes an early end for the end
            raise _Refused("truncated_transfer", f"{received} of {declared} bytes before the connection ended", received)
        if inflate is not None:
            try:
                body += inflate.flush()
            except zlib.error as exc:
                raise _Refused("bad_response", f"Content-Encoding {encoding}: {exc}", received) from None
        return bytes(body)
