"""``tumorscope app`` and ``tumorscope ui``: the service and the Streamlit UI as child
processes, each checked healthy before the URLs are printed, both stopped together."""

from __future__ import annotations

import errno
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

APP_SCRIPT = Path(__file__).resolve().parents[1] / "ui" / "app.py"
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0


class LaunchError(RuntimeError):
    """A process could not start: one line saying which and why."""


def check_free(host: str, port: int, what: str) -> None:
    """Raises :class:`LaunchError` naming the port and its use when it is taken."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            taken = err.errno == errno.EADDRINUSE
            why = "is taken by another process" if taken else f"cannot be bound ({err.strerror})"
            raise LaunchError(f"{host}:{port} ({what}) {why}; choose another port") from None


def streamlit_command(host: str, port: int) -> list[str]:
    """``python -m streamlit run ui/app.py`` on ``host:port``, headless, no telemetry."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT),
        "--server.address", host, "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
    ]  # fmt: skip


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LaunchError(f"{what} exited with code {proc.returncode} before it was ready")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)  # start-up polling
    raise LaunchError(f"{what} was not ready at {url} within {START_TIMEOUT_S:.0f} s")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _supervise(procs: list[subprocess.Popen[bytes]], names: list[str]) -> str | None:
    """Until SIGINT/SIGTERM (None) or a child's exit (its name); then both are stopped."""
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            for p, name in zip(procs, names, strict=True):
                if p.poll() is not None:
                    return name
        return None
    finally:
        _stop(procs)
        for s, h in previous.items():
            signal.signal(s, h)


def run_app(
    *, run: Path, port: int, api_port: int, host: str = "127.0.0.1",
    report: Path | None = None, announce: Callable[[str], None] = print,
) -> None:  # fmt: skip
    """Start ``tumorscope serve`` and the UI, print both URLs, stop both on a signal.

    ``report`` (an ``evaluate --out`` folder) is the service's ``--report``: the model
    card's metrics and reliability diagram.

    Raises:
        LaunchError: A port is taken, or a process failed to start or died.
    """
    if not (run / "manifest.json").is_file():
        raise LaunchError(f"{run}: not a run folder (no manifest.json); train one first")
    check_free(host, api_port, "the service")
    check_free(host, port, "the UI")
    key = secrets.token_urlsafe(32)
    api_url, ui_url = f"http://{host}:{api_port}", f"http://{host}:{port}"
    env = {**os.environ, "TUMORSCOPE_API_KEY": key, "TUMORSCOPE_UI_API": api_url}
    serve = [sys.executable, "-m", "tumorscope.cli", "serve", "--run", str(run),
             "--host", host, "--port", str(api_port)]  # fmt: skip
    if report is not None:
        serve += ["--report", str(report)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen(serve, env=env))
        _wait_healthy(procs[0], f"{api_url}/health/ready", "the service")
        procs.append(subprocess.Popen(streamlit_command(host, port), env=env))
        _wait_healthy(procs[1], f"{ui_url}/_stcore/health", "the UI")
    except BaseException:
        _stop(procs)
        raise
    announce(f"service: {api_url} (its key is passed to the UI only)")
    announce(f"UI: {ui_url}  — open it in a browser; Ctrl-C stops both")
    died = _supervise(procs, ["the service", "the UI"])
    if died is not None:
        raise LaunchError(f"{died} stopped unexpectedly; both are stopped")


def run_ui(*, api: str, port: int, host: str = "127.0.0.1") -> int:
    """The UI alone, in front of a running service (``TUMORSCOPE_API_KEY`` from the env)."""
    check_free(host, port, "the UI")
    env = {**os.environ, "TUMORSCOPE_UI_API": api}
    proc = subprocess.Popen(streamlit_command(host, port), env=env)
    died = _supervise([proc], ["the UI"])
    return 0 if died is None else 2
