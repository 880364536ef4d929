"""A local HTTP server for download tests and benchmarks: good images and every way a web image can go wrong.

It listens on 127.0.0.1 at a port the OS picks, counts the requests of each path (to
prove that resumed downloads fetch nothing twice), records the order in which responses
were completed (to prove that fetching went on around a slow one), and stops at the end of the test;
its slow responses wait on an event that the shutdown sets, so no thread outlives it.
"""

from __future__ import annotations

import io
import mimetypes
import socket
import struct
import threading
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from PIL import Image

STALL_S = 5.0  # how long /slow holds a request: well past the tests' 1 s timeout


def image_bytes(fmt: str, size=(64, 48), colour=(200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A valid PNG header claiming `width` x `height` pixels, in a few dozen bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


class _Server(ThreadingHTTPServer):
    # socketserver's backlog of 5 drops the connections of many fetching threads at once: they would time out.
    request_queue_size = 256


class ImageServer:
    """Paths: /jpg/NAME, /png/NAME, /gif/NAME (distinct images by NAME), /status/CODE, /slow,
    /truncated.jpg, /html.jpg, /bomb.png, /bomb/WxH.png, /tiny.png, /huge.bin, /huge-stream.bin (no Content-Length),
    /loop, /to-file, /redirect/NAME (to /jpg/NAME), /noai.jpg, /flaky/NAME (500 once, then an image),
    /reset (the connection reset, nothing sent), /cut.jpg (the body ends before its Content-Length),
    /files/NAME (the bytes put in `files`), /to?location=ANY (a redirect to exactly that, unchecked),
    /trickle-body and /trickle-headers (one byte every `?interval=` seconds, 0.2 by default, until stopped);
    a path put in `routes` answers (status, headers, body) as given, one put in `raw` sends those bytes as the
    whole response. Any path takes `?delay=SECONDS`, or a delay put in `delays`.
    `hits` counts requests by path, `requests` by path and query (one count per distinct URL)."""

    def __init__(self, max_bytes_hint: int = 50_000, host: str = "127.0.0.1", tls=None):
        self.hits: Counter = Counter()
        self.requests: Counter = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.big = bytes(max_bytes_hint * 2)
        self.files: dict[str, bytes] = {}  # served at /files/NAME, typed by NAME's extension
        # path -> seconds held before answering: a slow response whose URL is the same as a fast one's
        self.delays: dict[str, float] = {}
        self.completed: list[str] = []  # paths, in the order their responses were sent
        self.routes: dict[str, tuple[int, list[tuple[str, str]], bytes]] = {}
        self.raw: dict[str, bytes] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                with server._lock:
                    server.hits[path] += 1
                    server.requests[self.path] += 1
                    hits = server.hits[path]
                server._respond(self, path, hits, parse_qs(urlsplit(self.path).query))
                with server._lock:
                    server.completed.append(path)

        self._httpd = _Server((host, 0), Handler)
        self._httpd.daemon_threads = True
        if tls is not None:  # an ssl.SSLContext for the server side: https
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self.base = f"{'https' if tls is not None else 'http'}://{host}:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return self.base + path

    def _respond(self, handler: BaseHTTPRequestHandler, path: str, hits: int, query: dict) -> None:
        kind, _, name = path.lstrip("/").partition("/")
        delay = float(query["delay"][0]) if "delay" in query else self.delays.get(path, 0.0)
        if delay:
            self._stop.wait(delay)
        if path in self.routes:
            status, headers, body = self.routes[path]
            return self._send(handler, status, body, "application/octet-stream", dict(headers))
        if path in self.raw:
            handler.close_connection = True
            return self._write(handler, self.raw[path])
        if path == "/to":
            return self._send(handler, 302, b"", "text/plain", {"Location": query["location"][0]})
        if path in ("/trickle-body", "/trickle-headers"):
            return self._trickle(handler, path == "/trickle-body", float(query.get("interval", ["0.2"])[0]))
        if kind in ("jpg", "png", "gif"):
            colour = tuple(b % 256 for b in zlib.crc32(name.encode()).to_bytes(4, "big")[:3])
            data = image_bytes({"jpg": "JPEG", "png": "PNG", "gif": "GIF"}[kind], colour=colour)
            return self._send(handler, 200, data, f"image/{kind}")
        name = unquote(name)  # a percent-encoded request names the file it decodes to
        if kind == "files" and name in self.files:
            content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
            return self._send(handler, 200, self.files[name], content_type)
        if kind == "status":
            return self._send(handler, int(name), b"error page", "text/plain")
        if kind == "flaky":
            if hits == 1:
                return self._send(handler, 500, b"try again", "text/plain")
            return self._send(handler, 200, image_bytes("JPEG"), "image/jpeg")
        if kind == "redirect":
            return self._send(handler, 302, b"", "text/plain", {"Location": f"/jpg/{name}"})
        if path == "/to-file":  # a redirect must not lead out of http(s)
            return self._send(handler, 302, b"", "text/plain", {"Location": "file:///etc/passwd"})
        if path == "/loop":
            return self._send(handler, 302, b"", "text/plain", {"Location": "/loop"})
        if path == "/slow":
            self._stop.wait(STALL_S)
            return self._send(handler, 200, image_bytes("JPEG"), "image/jpeg")
        if path == "/truncated.jpg":
            data = image_bytes("JPEG", size=(200, 150))
            return self._send(handler, 200, data[: len(data) // 2], "image/jpeg")
        if path == "/cut.jpg":  # the server dies mid-body: fewer bytes than declared, then the connection ends
            data = image_bytes("JPEG", size=(200, 150))
            return self._send(handler, 200, data[: len(data) // 2], "image/jpeg", {"Content-Length": str(len(data))},
                              length=False)  # fmt: skip
        if path == "/reset":  # linger 0: closing the socket sends a TCP RST instead of a clean end
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.close_connection = True
            handler.rfile.close()  # the reader holds a reference that would delay the close
            handler.connection.close()
            return None
        if path == "/html.jpg":
            return self._send(handler, 200, b"<!doctype html><html><body>Not found</body></html>", "image/jpeg")
        if path == "/bomb.png":
            return self._send(handler, 200, png_bomb(), "image/png")
        if kind == "bomb":  # /bomb/9000x8000.png: above our pixel limit, below PIL's own
            width, height = (int(n) for n in name.removesuffix(".png").split("x"))
            return self._send(handler, 200, png_bomb(width, height), "image/png")
        if path == "/tiny.png":
            return self._send(handler, 200, image_bytes("PNG", size=(4, 4)), "image/png")
        if path == "/huge.bin":
            return self._send(handler, 200, self.big, "image/jpeg")
        if path == "/huge-stream.bin":
            return self._send(handler, 200, self.big, "image/jpeg", length=False)
        if path == "/noai.jpg":
            return self._send(handler, 200, image_bytes("JPEG"), "image/jpeg", {"X-Robots-Tag": "noai"})
        return self._send(handler, 404, b"no such thing", "text/plain")

    def _trickle(self, handler, body: bool, interval: float) -> None:
        """Headers (all at once when `body`, else one byte at a time) and then a body, one byte per `interval`."""
        handler.close_connection = True
        head = b"HTTP/1.1 200 OK\r\n" + (b"Content-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n" if body else b"")
        if not self._write(handler, head):
            return
        stream = image_bytes("JPEG", size=(640, 480)) if body else b"X-Slow: " + b"a" * 100000
        for byte in stream:
            if self._stop.wait(interval) or not self._write(handler, bytes([byte])):
                return

    @staticmethod
    def _write(handler, data: bytes) -> bool:
        try:
            handler.wfile.write(data)
            handler.wfile.flush()
            return True
        except OSError:
            return False  # the client gave up: what a deadline test wants

    def _send(self, handler, status: int, body: bytes, content_type: str, headers: dict | None = None,
              length: bool = True) -> None:  # fmt: skip
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            if length:
                handler.send_header("Content-Length", str(len(body)))
            else:
                handler.send_header("Connection", "close")  # the body ends when the connection does
                handler.close_connection = True
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first (a timeout or a size limit): what the test wants

    def start(self) -> "ImageServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
