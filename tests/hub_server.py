"""A loopback stand-in for a model hub: the few endpoints huggingface_hub's downloads and vlalign's probe use.

It serves repositories given as {file name: bytes} at one commit each: the repository and revision info
(`/api/models/ORG/NAME[/revision/REV]`), the file listing (`/api/models/ORG/NAME/tree/REV`) and the files
(`/ORG/NAME/resolve/REV/FILE`, HEAD and GET, with the headers the hub sends: X-Repo-Commit, ETag, sizes).
A repository put in `refusals` answers every request with that (status, X-Error-Code) as the hub does for
missing, gated or private models. It listens on 127.0.0.1 at a port the OS picks, counts requests by method
and path, and stops at the end of the test.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


def commit_of(files: dict[str, bytes]) -> str:
    """A repository's commit: 40 hex digits that change with its content."""
    digest = hashlib.sha1()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name])
    return digest.hexdigest()


class HubServer:
    def __init__(self, repos: dict[str, dict[str, bytes]] | None = None):
        self.repos = dict(repos or {})
        self.refusals: dict[str, tuple[int, str]] = {}  # repo -> (status, X-Error-Code or "")
        self.requests: Counter = Counter()  # "METHOD /path"
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_HEAD(self) -> None:
                server._respond(self, head=True)

            def do_GET(self) -> None:
                server._respond(self, head=False)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def file_gets(self) -> int:
        """How many file downloads (GET of a resolve URL) were served."""
        return sum(n for key, n in self.requests.items() if key.startswith("GET ") and "/resolve/" in key)

    def _respond(self, handler: BaseHTTPRequestHandler, head: bool) -> None:
        path = unquote(urlsplit(handler.path).path)
        with self._lock:
            self.requests[f"{handler.command} {path}"] += 1
        parts = path.strip("/").split("/")
        api = parts[:2] == ["api", "models"]
        repo = "/".join(parts[2:4] if api else parts[:2])
        if repo in self.refusals:
            status, code = self.refusals[repo]
            return self._send(handler, status, {"error": code or "refused"}, {"X-Error-Code": code} if code else {},
                              head=head)  # fmt: skip
        files = self.repos.get(repo)
        if files is None:
            return self._send(handler, 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}, head)
        commit = commit_of(files)
        rest = parts[4:] if api else parts[2:]
        if api and rest[:1] == ["tree"]:
            listing = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                       for name, data in sorted(files.items())]  # fmt: skip
            return self._send(handler, 200, listing, head=head)
        if api:
            siblings = [{"rfilename": name, "size": len(data)} for name, data in sorted(files.items())]
            return self._send(handler, 200, {"id": repo, "modelId": repo, "sha": commit, "private": False,
                                             "siblings": siblings}, head=head)  # fmt: skip
        if rest[:1] != ["resolve"] or len(rest) < 3:
            return self._send(handler, 404, {"error": "not found"}, head=head)
        name = "/".join(rest[2:])
        if name not in files:
            return self._send(handler, 404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"}, head)
        data = files[name]
        headers = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        return self._send(handler, 200, data, headers, head)

    @staticmethod
    def _send(handler, status: int, body, headers: dict | None = None, head: bool = False) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/octet-stream" if isinstance(body, bytes)
                                else "application/json")  # fmt: skip
            for key, value in (headers or {}).items():
                handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            if not head:
                handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def start(self) -> "HubServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
