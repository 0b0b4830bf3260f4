"""A real ``tumorscope serve`` process on a free loopback port, talked to over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

KEY = "test-key-0123456789abcdef"
START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running service process."""

    proc: subprocess.Popen[str]
    url: str
    log: Path

    def client(self, key: str | None = KEY, **kw: object) -> httpx.Client:
        headers = {} if key is None else {"X-API-Key": key}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60.0, **kw)  # type: ignore[arg-type]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def start_server(run: Path, log: Path, *args: str, **settings: str) -> Server:
    """``python -m tumorscope serve`` with ``TUMORSCOPE_*`` settings; waits for readiness."""
    port = free_port()
    env = {
        **os.environ,
        "TUMORSCOPE_API_KEY": KEY,
        "TUMORSCOPE_TEST_HOOKS": "true",
        "TUMORSCOPE_TORCH_THREADS": "1",
        **{f"TUMORSCOPE_{k.upper()}": v for k, v in settings.items()},
    }
    cmd = [
        sys.executable,
        "-m",
        "tumorscope.cli",
        "serve",
        "--run",
        str(run),
        "--port",
        str(port),
        *args,
    ]
    out = log.open("w", encoding="utf-8")
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log_text()}")
        try:
            if httpx.get(f"{server.url}/health/ready", timeout=2.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # start-up polling only; no test result depends on timing
    server.stop()
    raise RuntimeError(f"server not ready in {START_TIMEOUT_S} s:\n{server.log_text()}")


@pytest.fixture(scope="session")
def server(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One service on the tiny run: small caps (2 MiB /predict), one slot, one queue place."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    s = start_server(
        tiny_run, log, max_predict_bytes=str(2 * 2**20), concurrency="1", queue_size="1"
    )
    yield s
    s.stop()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A private upload folder one level below tmp_path (so traversal has somewhere to go)."""
    out = tmp_path / "jobs" / "job-1"
    out.mkdir(parents=True)
    (tmp_path / "jobs" / "keep.txt").write_text("untouched")
    return out
