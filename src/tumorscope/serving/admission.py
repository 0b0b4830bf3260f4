"""Bounded concurrency: a fixed number of inference slots, a bounded queue in front of
them, and one deadline per request.

A prediction request is admitted at the door, by :class:`AdmissionGate`, before a byte of
its body is read: when the slots and the queue already hold as many requests as they
can, it is refused at once (503 with ``Retry-After``) — an upload is never read only to be
refused, so overload never grows a backlog. An admitted request that waits or runs past
its deadline gets a 504. A computation that overran keeps its slot until it really ends (a
thread cannot be stopped), so the slots always count the work the CPU is doing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from starlette.types import ASGIApp, Receive, Scope, Send

from tumorscope.serving.errors import ServiceError, error_response
from tumorscope.serving.telemetry import Telemetry

T = TypeVar("T")


class Admission:
    """Inference slots, a waiting queue and deadlines.

    Args:
        concurrency: Computations at once (worker threads).
        queue_size: Requests that may wait for a slot.
        retry_after_s: ``Retry-After`` of a 503.
        telemetry: Counts rejected requests and the queue length.
        hold: A test hook: while set (:meth:`hold_all`), computations wait for
            :meth:`release_all` before they start, so a test can fill the slots and the
            queue without timing.
    """

    def __init__(
        self, concurrency: int, queue_size: int, retry_after_s: int, telemetry: Telemetry
    ) -> None:
        self.concurrency = concurrency
        self.queue_size = queue_size
        self.retry_after_s = retry_after_s
        self.telemetry = telemetry
        self._free = asyncio.Semaphore(concurrency)
        self._admitted = 0
        self._running = 0
        self._waiting = 0
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="tumorscope-infer")
        self._held = False
        self._release = threading.Event()

    @property
    def busy(self) -> tuple[int, int]:
        """``(running, waiting)`` now."""
        return self._running, self._waiting

    @property
    def capacity(self) -> int:
        """Requests admitted at once: slots plus queue places."""
        return self.concurrency + self.queue_size

    def enter(self) -> bool:
        """Admit one request (False: full; refuse it)."""
        if self._admitted >= self.capacity:
            self.telemetry.rejected.labels("busy").inc()
            return False
        self._admitted += 1
        return True

    def leave(self) -> None:
        """An admitted request has been answered."""
        self._admitted -= 1

    def busy_error(self) -> ServiceError:
        """The 503 of a full service."""
        return ServiceError(
            503, "busy",
            f"all {self.concurrency} inference slots and {self.queue_size} queue places "
            "are taken; retry later",
            headers={"Retry-After": str(self.retry_after_s)},
        )  # fmt: skip

    def hold_all(self) -> None:
        """Make computations wait at their start until :meth:`release_all` (tests only)."""
        self._release.clear()
        self._held = True

    def release_all(self) -> None:
        """Let held computations start."""
        self._held = False
        self._release.set()

    async def run(self, fn: Callable[[], T], *, deadline: float) -> T:
        """Run ``fn`` in an inference slot, answering by ``deadline`` (``time.monotonic``).

        The caller was admitted by :class:`AdmissionGate`; the queue is bounded there.

        Raises:
            ServiceError: 504 (deadline passed).
        """
        self._waiting += 1
        self.telemetry.queued.inc()
        try:
            await asyncio.wait_for(self._free.acquire(), timeout=_left(deadline))
        except TimeoutError:
            raise _timeout("waiting for a free inference slot") from None
        finally:
            self._waiting -= 1
            self.telemetry.queued.dec()
        self._running += 1
        future = asyncio.get_running_loop().run_in_executor(self._pool, self._call, fn)

        def done(_: object) -> None:
            self._running -= 1
            self._free.release()

        future.add_done_callback(done)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=_left(deadline))
        except TimeoutError:
            raise _timeout("computing the prediction") from None

    def _call(self, fn: Callable[[], T]) -> T:
        if self._held:
            self._release.wait()
        return fn()

    def close(self) -> None:
        """Release held work and wait for the running computations to end."""
        self.release_all()
        self._pool.shutdown(wait=True)


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _timeout(doing: str) -> ServiceError:
    return ServiceError(504, "deadline", f"the request's deadline passed while {doing}")


class AdmissionGate:
    """ASGI middleware: admits requests to ``paths`` through :meth:`Admission.enter`
    before their body is read, answering 503 at once when the service is full.

    Args:
        app: The wrapped ASGI app.
        admission: The service's admission.
        paths: The prediction routes.
    """

    def __init__(self, app: ASGIApp, *, admission: Admission, paths: frozenset[str]) -> None:
        self.app = app
        self.admission = admission
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        if not self.admission.enter():
            err = self.admission.busy_error()
            response = error_response(err.status, err.code, err.message, err.headers)
            await response(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.leave()
