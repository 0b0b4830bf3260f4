"""``tumorscope app``: both processes start and answer their health checks, a taken port
is named, and SIGTERM stops both with exit code 0 and no process left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from .conftest import Server  # noqa: F401  (keeps the serving suite's starter on sys.path)

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(x) for x in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@contextmanager
def launched(
    run: Path, log: Path, env: Mapping[str, str] | None = None, *args: str
) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """``tumorscope app`` on free ports (``env``: more variables for both processes;
    ``args``: more options)."""
    ui, api = _free_port(), _free_port()
    cmd = [sys.executable, "-m", "tumorscope.cli", "app", "--run", str(run),
           "--port", str(ui), "--api-port", str(api), *args]  # fmt: skip
    full_env = {**os.environ, "TUMORSCOPE_TORCH_THREADS": "1", **(env or {})}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, env=full_env)
    try:
        yield proc, f"http://127.0.0.1:{ui}", f"http://127.0.0.1:{api}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for(url: str, proc: subprocess.Popen[str], log: Path, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)  # start-up polling only
    raise AssertionError(f"{url} not healthy:\n{log.read_text()}")


def test_app_starts_both_and_sigterm_stops_both(tiny_run: Path, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    with launched(tiny_run, log) as (proc, ui, api):
        wait_for(f"{ui}/_stcore/health", proc, log)
        assert httpx.get(f"{api}/health/ready").json() == {"status": "ready"}
        assert httpx.get(f"{api}/model/info").status_code == 401  # the key stays with the UI
        for _ in range(100):  # the URLs are printed once both are healthy
            if "UI: " in log.read_text():
                break
            time.sleep(0.1)
        assert f"UI: {ui}" in log.read_text() and f"service: {api}" in log.read_text()
        kids = _children(proc.pid)
        assert len(kids) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
        assert not [k for k in kids if _alive(k)]


def test_app_names_a_taken_port(tiny_run: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = subprocess.run(
            [sys.executable, "-m", "tumorscope.cli", "app", "--run", str(tiny_run),
             "--api-port", str(port)],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
    assert res.returncode == 2
    assert f"127.0.0.1:{port} (the service) is taken by another process" in res.stderr
