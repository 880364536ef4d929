"""A real `mlflow server` on 127.0.0.1 for tests, as the cluster setup runs it: backend store on
local disk (a temporary folder), artifacts proxied through the server, stopped by its PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from slurm_cluster import free_port

BIN = Path(sys.executable).parent


@dataclass
class TrackingServer:
    uri: str
    root: Path
    proc: subprocess.Popen

    def log_tail(self, chars: int = 3000) -> str:
        return (self.root / "server.log").read_text(errors="replace")[-chars:]


def start_server(root: Path) -> TrackingServer:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--artifacts-destination", str(root / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True,
            env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
        )  # fmt: skip
    server = TrackingServer(uri, root, proc)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    stop_server(server)
    raise RuntimeError(f"mlflow server did not answer on {uri}\n{server.log_tail()}")


def stop_server(server: TrackingServer) -> None:
    """SIGTERM to the server's PID; it leads its own session, so its workers get it too."""
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()


@pytest.fixture
def tracking_server(tmp_path_factory, monkeypatch):
    # A proxy from the environment must not carry requests meant for this machine's loopback.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    server = start_server(tmp_path_factory.mktemp("mlflow-server"))
    yield server
    stop_server(server)
