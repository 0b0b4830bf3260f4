"""The checks every request meets before any route sees it, as one ASGI middleware.

In order: the API key (``X-API-Key``, constant-time compare) on every path but the health
checks, *before* a byte of the body is read; the declared ``Content-Length`` against the
route's cap; then the streamed body, counted as it arrives, so a chunked upload without a
``Content-Length`` is cut off at the cap too (the route's answer is replaced by the 413).
Content types are the routes' concern and come after, so an oversized body of any type is
a 413. It also times every request for :class:`~tumorscope.serving.telemetry.Telemetry`
and logs route, status and latency only — never a query, a file name or a header value.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tumorscope.serving.errors import error_response
from tumorscope.serving.telemetry import Telemetry, route_label

log = logging.getLogger("tumorscope.serving.access")

OPEN_PATHS = frozenset({"/health/live", "/health/ready"})
KEY_HEADER = b"x-api-key"


class BodyTooLarge(Exception):
    """Raised into the route when the streamed body passes its cap."""


class Guard:
    """API key, body caps and request telemetry (see the module docstring).

    Args:
        app: The wrapped ASGI app.
        api_key: The key requests must send, or None to serve without one.
        caps: Path → body cap in bytes; other paths get ``default_cap``.
        default_cap: Cap of any path not in ``caps``.
        telemetry: Where counts and latencies go.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str | None,
        caps: Mapping[str, int],
        default_cap: int,
        telemetry: Telemetry,
    ) -> None:
        self.app = app
        self.key = None if api_key is None else api_key.encode()
        self.caps = dict(caps)
        self.default_cap = default_cap
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        scope.setdefault("state", {})["arrival"] = time.monotonic()  # the deadline counts from here
        route = route_label(scope["path"])
        status = {"code": 500}

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        self.telemetry.in_flight.inc()
        try:
            await self._guarded(scope, receive, send_counted)
        finally:
            self.telemetry.in_flight.dec()
            elapsed = time.perf_counter() - start
            self.telemetry.requests.labels(route, str(status["code"])).inc()
            self.telemetry.latency.labels(route).observe(elapsed)
            log.info("%s %s %d %.1f ms", scope["method"], route, status["code"], 1e3 * elapsed)

    async def _refuse(self, send: Send, status: int, code: str, message: str, **kw: Any) -> None:
        self.telemetry.rejected.labels(code).inc()
        response = error_response(status, code, message, **kw)
        await response({"type": "http"}, _no_body, send)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        if self.key is not None and scope["path"] not in OPEN_PATHS:
            given = headers.get(KEY_HEADER)
            if given is None or not hmac.compare_digest(given, self.key):
                what = "missing" if given is None else "wrong"
                await self._refuse(
                    send, 401, "unauthorized", f"the X-API-Key header is {what}",
                    headers={"WWW-Authenticate": "X-API-Key"},
                )  # fmt: skip
                return
        cap = self.caps.get(scope["path"], self.default_cap)
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length < 0:
                await self._refuse(send, 400, "bad_request", "Content-Length is not a number")
                return
            if length > cap:
                await self._refuse(send, 413, "too_large", _too_large(cap))
                return
        await self._capped(scope, receive, send, cap)

    async def _capped(self, scope: Scope, receive: Receive, send: Send, cap: int) -> None:
        state = {"read": 0, "over": False, "started": False}

        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > cap:
                    state["over"] = True
                    raise BodyTooLarge
            return message

        async def send_unless_over(message: Message) -> None:
            if state["over"] and not state["started"]:
                return  # the route's answer to a cut-off body is replaced by the 413 below
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counted, send_unless_over)
        except BodyTooLarge:
            pass
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await self._refuse(send, 413, "too_large", _too_large(cap))


def _too_large(cap: int) -> str:
    return f"the body is over this route's cap of {cap} bytes ({cap / 2**20:.0f} MiB)"


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


def caps_for(settings: Any) -> tuple[dict[str, int], int]:
    """Body caps by path from :class:`~tumorscope.serving.settings.ServiceSettings`."""
    predict = int(settings.max_predict_bytes)
    caps = {
        "/predict": predict,
        "/predict_multitask": predict,
        "/predict/batch": int(settings.max_batch_bytes),
        "/predict/volume": int(settings.max_volume_bytes),
    }
    return caps, min(predict, 1 * 2**20)


__all__: list[str] = ["OPEN_PATHS", "BodyTooLarge", "Guard", "caps_for"]
