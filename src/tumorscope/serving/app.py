"""``create_app(settings)``: the FastAPI service over one loaded model.

The model is loaded once, by the ``lifespan`` (never at import), and warmed up with one
prediction before ``/health/ready`` says ready. Each inference slot of
:class:`~tumorscope.serving.admission.Admission` owns its own copy of the predictor, since
MC dropout and Grad-CAM change a network's modes and hooks while they run.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
from fastapi import APIRouter, FastAPI

from tumorscope import DISCLAIMER, __version__
from tumorscope.inference.predictor import Predictor
from tumorscope.serving.admission import Admission, AdmissionGate
from tumorscope.serving.errors import install_handlers
from tumorscope.serving.guard import Guard, caps_for
from tumorscope.serving.modelcard import model_info, read_report
from tumorscope.serving.routes import install_test_hooks, router
from tumorscope.serving.settings import ServiceSettings
from tumorscope.serving.state import ResultStore, ServiceState
from tumorscope.serving.telemetry import Telemetry

log = logging.getLogger(__name__)

DESCRIPTION = (
    "Tumour detection, segmentation and survival risk from one multi-task model. "
    f"{DISCLAIMER} Every route but /health/* needs the X-API-Key header."
)


def _warm_up(predictor: Predictor) -> None:
    """One real prediction on a deterministic image: the path every request takes."""
    image = np.random.default_rng(0).normal(100.0, 20.0, size=(96, 96)).astype(np.float32)
    result = predictor.predict(image, name="warm-up")
    if not np.isfinite(result.tumour_probability):
        raise RuntimeError("warm-up prediction gave a non-finite probability")


def create_app(settings: ServiceSettings, *, predictor: Predictor | None = None) -> FastAPI:
    """The service app.

    Args:
        settings: Its settings; ``api_key`` set, or ``no_auth`` (see
            :func:`tumorscope.serving.settings.resolve_key`).
        predictor: A loaded predictor (default: load ``settings.run`` at start-up).

    Raises:
        ValueError: No API key and ``no_auth`` off.
        ReportError: ``settings.report`` is not an ``evaluate`` output.
    """
    if settings.api_key is None and not settings.no_auth:
        raise ValueError("settings: no API key and no_auth is off; call resolve_key first")
    report = read_report(settings.report)
    telemetry = Telemetry()
    state = ServiceState(
        settings=settings,
        telemetry=telemetry,
        admission=Admission(
            settings.concurrency, settings.queue_size, settings.retry_after_s, telemetry
        ),
        store=ResultStore(settings.results_kept),
    )
    caps, default_cap = caps_for(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        start = time.perf_counter()
        if settings.torch_threads:
            import torch

            torch.set_num_threads(settings.torch_threads)
        try:
            first = predictor if predictor is not None else Predictor.from_run(settings.run)
            _warm_up(first)
        except Exception as err:
            state.startup_error = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise
        state.predictors.put(first)
        for _ in range(settings.concurrency - 1):
            state.predictors.put(copy.deepcopy(first))
        state.info = model_info(first, settings.run, report, {**caps, "default": default_cap})
        state.load_seconds = time.perf_counter() - start
        telemetry.load_seconds.set(state.load_seconds)
        state.ready = True
        log.info("model loaded and warmed up in %.1f s; ready", state.load_seconds)
        try:
            yield
        finally:
            state.ready = False
            state.admission.close()
            state.store.close()

    app = FastAPI(
        title="tumorscope",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.service = state
    install_handlers(app)
    app.include_router(router)
    if settings.test_hooks:
        hooks = APIRouter()
        install_test_hooks(hooks)
        app.include_router(hooks)
    key = None if settings.api_key is None else settings.api_key.get_secret_value()
    # Added first, so it runs inside the guard: a request is authenticated before admission.
    app.add_middleware(AdmissionGate, admission=state.admission, paths=frozenset(caps))
    app.add_middleware(Guard, api_key=key, caps=caps, default_cap=default_cap, telemetry=telemetry)
    return app


def app_from_env() -> FastAPI:
    """The app of a uvicorn worker process (``--workers N``): settings from the environment
    the parent set (its key included)."""
    return create_app(ServiceSettings())  # type: ignore[call-arg]
