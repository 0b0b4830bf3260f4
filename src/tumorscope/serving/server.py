"""``serve``: the app under uvicorn, with a key printed once, a port check, and a drain
on SIGTERM/SIGINT that flips readiness first and lets in-flight requests finish."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

import uvicorn

from tumorscope.runs.load import read_run_manifest
from tumorscope.serving.app import create_app
from tumorscope.serving.modelcard import read_report
from tumorscope.serving.settings import ENV_PREFIX, ServiceSettings, resolve_key
from tumorscope.serving.state import ServiceState

log = logging.getLogger(__name__)
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ServeError(RuntimeError):
    """The server could not start: one line saying why."""


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose exit signal first marks the service as draining
    (``/health/ready`` answers 503), then stops accepting and waits for in-flight requests.
    """

    def __init__(self, config: uvicorn.Config, state: ServiceState) -> None:
        super().__init__(config)
        self.state = state

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM drain the server, which then exits 0 (uvicorn's own version
        re-raises the signal after the drain, so the process would die by it)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.state.draining:
            log.info("signal %d: draining (readiness off, in-flight requests finish)", sig)
        self.state.draining = True
        self.state.admission.release_all()  # test holds must not keep a drain waiting
        super().handle_exit(sig, frame)


def check_port_free(host: str, port: int) -> None:
    """Raises :class:`ServeError` naming the port when another process holds it."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise ServeError(f"{host}:{port}: the port is taken by another process") from None
            raise ServeError(f"{host}:{port}: cannot bind ({err.strerror})") from None


def _settings_env(settings: ServiceSettings) -> dict[str, str]:
    """The settings as ``TUMORSCOPE_*`` variables for worker processes."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if name == "api_key":
            value = settings.api_key.get_secret_value() if settings.api_key else None
        env[f"{ENV_PREFIX}{name.upper()}"] = (
            str(value).lower() if isinstance(value, bool) else str(value)
        )
    return env


def serve(
    settings: ServiceSettings, *, workers: int = 1, announce: Callable[[str], None] = print
) -> None:
    """Check the run and the port, then serve until a signal.

    Args:
        settings: The service settings.
        workers: uvicorn worker processes (each loads the model; settings pass to them by
            environment).
        announce: Where the start-up lines go (the generated key is printed once).

    Raises:
        ServeError: The port is taken, or the app failed to start (the reason named).
        CheckpointError, ManifestError, ReportError: The run or report is not usable.
    """
    read_run_manifest(settings.run)  # hashes and format, before a port is touched
    read_report(settings.report)
    check_port_free(settings.host, settings.port)
    settings, generated = resolve_key(settings)
    url = f"http://{settings.host}:{settings.port}"
    if generated and settings.api_key is not None:
        announce(
            f"API key (send it as the X-API-Key header): {settings.api_key.get_secret_value()}"
        )
    elif settings.no_auth:
        announce("no API key: serving without authentication on a loopback address")
    announce(
        f"serving {settings.run} on {url} (readiness: {url}/health/ready; OpenAPI schema, "
        f"with the key: {url}/openapi.json)"
    )
    if workers > 1:
        os.environ.update(_settings_env(settings))
        uvicorn.run(
            "tumorscope.serving.app:app_from_env", factory=True, host=settings.host,
            port=settings.port, workers=workers, log_config=None, access_log=False,
            timeout_graceful_shutdown=int(settings.deadline_s),
        )  # fmt: skip
        return
    app = create_app(settings)
    state: ServiceState = app.state.service
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, access_log=False,
        timeout_graceful_shutdown=int(settings.deadline_s), lifespan="on",
    )  # fmt: skip
    server = DrainingServer(config, state)
    server.run()
    if not server.started:
        why = state.startup_error or "see the log above"
        raise ServeError(f"{settings.run}: the service did not start: {why}")
