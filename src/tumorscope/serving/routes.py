"""The service's routes: health, model card, metrics, and the predictions."""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response

from tumorscope import DISCLAIMER
from tumorscope.data.types import DataError
from tumorscope.inference.predictor import Predictor
from tumorscope.inference.results import SliceResult
from tumorscope.serving import render, schemas
from tumorscope.serving.errors import ErrorBody, ServiceError, data_error
from tumorscope.serving.state import ServiceState
from tumorscope.serving.telemetry import CONTENT_TYPE_LATEST
from tumorscope.serving.uploads import UploadError, save_image, save_volume

router = APIRouter()
MASK_FILE = "mask.nii.gz"
_ERRORS: dict[int | str, dict[str, object]] = {
    s: {"model": ErrorBody} for s in (401, 413, 415, 422, 503, 504)
}

Gate = Annotated[
    float | None,
    Query(ge=0.0, le=1.0, description="Tumour probability under which no mask is returned"),
]
UncertaintyMethod = Annotated[
    Literal["none", "mc", "tta"],
    Query(
        description="mc: MC dropout; tta: test-time augmentation (flips, small rotations/scales)"
    ),
]
Samples = Annotated[
    int | None,
    Query(
        ge=1, le=1000, description="MC-dropout samples (default 20) or TTA views (1–8, default 8)"
    ),
]
DEFAULT_SAMPLES = {"none": 1, "mc": 20, "tta": 8}
WithCam = Annotated[bool, Query(description="Add the Grad-CAM overlay of the tumour decision")]


def _state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


def _can_gradcam(state: ServiceState) -> bool:
    """Whether the served backend computes Grad-CAM (an ONNX export does not)."""
    return state.info is not None and state.info.capabilities.get("gradcam", False)


def _deadline(request: Request, state: ServiceState) -> float:
    arrival = getattr(request.state, "arrival", time.monotonic())
    return float(arrival) + state.settings.deadline_s


def _refusal(err: Exception, folder: str) -> ServiceError:
    if isinstance(err, UploadError):
        return ServiceError(err.status, err.code, err.message)
    if isinstance(err, DataError):
        return data_error(err, folder)
    if isinstance(err, ValueError):
        return ServiceError(422, "invalid_request", str(err).splitlines()[0])
    raise err


# ---------------------------------------------------------------- health, card, metrics
@router.get("/health/live", response_model=schemas.Health, tags=["health"])
async def live() -> schemas.Health:
    """The process is up (answered while inference is busy)."""
    return schemas.Health(status="live")


@router.get(
    "/health/ready",
    response_model=schemas.Health,
    responses={503: {"model": ErrorBody}},
    tags=["health"],
)
async def ready(request: Request) -> Response:
    """The model is loaded, a warm-up prediction passed, and the server is not draining."""
    state = _state(request)
    if state.ready and not state.draining:
        return JSONResponse({"status": "ready"})
    why = "draining: the server is shutting down" if state.draining else "the model is loading"
    return JSONResponse({"code": "not_ready", "message": why}, status_code=503)


@router.get("/model/info", response_model=schemas.ModelInfo, responses=_ERRORS, tags=["model"])
async def info(request: Request) -> schemas.ModelInfo:
    """The model card: parts, input spec, labels, calibration, measured metrics, hashes."""
    state = _state(request)
    if state.info is None:
        raise ServiceError(503, "not_ready", "the model is loading")
    return state.info


@router.get("/metrics", response_class=Response, responses=_ERRORS, tags=["model"])
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this process."""
    body = _state(request).telemetry.exposition()
    return Response(body, media_type=CONTENT_TYPE_LATEST)


# ---------------------------------------------------------------- 2D
def _slice(
    predictor: Predictor,
    upload: UploadFile,
    *,
    gate: float | None,
    uncertainty: str,
    samples: int,
    gradcam: bool,
) -> tuple[schemas.SlicePrediction, SliceResult]:
    with tempfile.TemporaryDirectory(prefix="tumorscope-upload-") as folder:
        try:
            path = save_image(upload.file, Path(folder))
            if uncertainty != "none" or gradcam:
                full = predictor.predict_full(
                    path,
                    mc_samples=samples if uncertainty == "mc" else 0,
                    tta_views=samples if uncertainty == "tta" else 0,
                    gradcam=gradcam,
                    gate_threshold=gate,
                )
                return render.slice_prediction(full.base, full), full.base
            result = predictor.predict(path, name="upload", gate_threshold=gate)
            return render.slice_prediction(result), result
        except (UploadError, DataError, ValueError) as err:
            raise _refusal(err, folder) from None


async def _predict_one(
    request: Request,
    file: UploadFile,
    gate: float | None,
    uncertainty: str,
    samples: int | None,
    gradcam: bool,
) -> tuple[schemas.SlicePrediction, SliceResult]:
    state = _state(request)
    if gradcam and not _can_gradcam(state):
        raise ServiceError(
            422,
            "not_available",
            "gradcam: this model is an ONNX export, whose graphs carry no gradients; "
            "Grad-CAM needs the PyTorch run (see capabilities in /model/info)",
        )
    if samples is None:
        samples = DEFAULT_SAMPLES[uncertainty]
    if samples > state.settings.max_samples:
        raise ServiceError(
            422, "invalid_request", f"samples: at most {state.settings.max_samples} here"
        )

    def work() -> tuple[schemas.SlicePrediction, SliceResult]:
        with state.lease() as predictor:
            return _slice(
                predictor, file, gate=gate, uncertainty=uncertainty, samples=samples,
                gradcam=gradcam,
            )  # fmt: skip

    return await state.admission.run(work, deadline=_deadline(request, state))


@router.post(
    "/predict", response_model=schemas.SlicePrediction, responses=_ERRORS, tags=["predict"]
)
async def predict(
    request: Request,
    file: Annotated[UploadFile, File(description="PNG, JPEG, DICOM or 2D NIfTI slice")],
    gate: Gate = None,
    uncertainty: UncertaintyMethod = "none",
    samples: Samples = None,
    gradcam: WithCam = False,
) -> schemas.SlicePrediction:
    """One 2D slice: tumour decision, conditional mask, domain check, review flag."""
    answer, _ = await _predict_one(request, file, gate, uncertainty, samples, gradcam)
    return answer


@router.post(
    "/predict_multitask",
    response_model=schemas.MultitaskPrediction,
    responses=_ERRORS,
    tags=["predict"],
)
async def predict_multitask(
    request: Request,
    file: Annotated[UploadFile, File(description="PNG, JPEG, DICOM or 2D NIfTI slice")],
    gate: Gate = None,
    gradcam: Annotated[
        bool | None,
        Query(
            description="Add the Grad-CAM overlay of the tumour decision (default: where "
            "the backend can compute it, i.e. not on an ONNX export)"
        ),
    ] = None,
) -> schemas.MultitaskPrediction:
    """``/predict`` with the brain prototype's response fields (its clients keep working)."""
    if gradcam is None:
        gradcam = _can_gradcam(_state(request))
    answer, result = await _predict_one(request, file, gate, "none", 1, gradcam)
    return render.multitask_prediction(answer, result)


@router.post(
    "/predict/batch", response_model=schemas.BatchPrediction, responses=_ERRORS, tags=["predict"]
)
async def predict_batch(
    request: Request,
    files: Annotated[list[UploadFile], File(description="Up to max_batch_items 2D slices")],
    gate: Gate = None,
) -> schemas.BatchPrediction:
    """Several 2D slices in batched passes; a bad image fails alone, in its own item."""
    state = _state(request)
    cap = state.settings.max_batch_items
    if not files:
        raise ServiceError(422, "invalid_request", "files: no image uploaded")
    if len(files) > cap:
        raise ServiceError(413, "too_many_items", f"files: {len(files)} images, at most {cap}")

    def work() -> list[schemas.BatchItem]:
        with state.lease() as predictor, tempfile.TemporaryDirectory() as folder:
            return _batch(predictor, files, Path(folder), gate)

    items = await state.admission.run(work, deadline=_deadline(request, state))
    ok = sum(i.ok for i in items)
    return schemas.BatchPrediction(
        items=items, succeeded=ok, failed=len(items) - ok, disclaimer=DISCLAIMER
    )


def _batch(
    predictor: Predictor, files: list[UploadFile], folder: Path, gate: float | None
) -> list[schemas.BatchItem]:
    items: dict[int, schemas.BatchItem] = {}
    paths: dict[int, Path] = {}
    for i, upload in enumerate(files):
        sub = folder / str(i)
        sub.mkdir()
        try:
            paths[i] = save_image(upload.file, sub)
        except UploadError as err:
            items[i] = _failed(i, ServiceError(err.status, err.code, err.message))
    try:  # one batched pass; a bad file makes it fall back to one image at a time
        good = list(paths)
        results = predictor.predict_batch(
            [paths[i] for i in good], names=[f"upload_{i}" for i in good], gate_threshold=gate
        )
        for i, r in zip(good, results, strict=True):
            items[i] = schemas.BatchItem(index=i, ok=True, prediction=render.slice_prediction(r))
    except (DataError, ValueError):
        for i, path in paths.items():
            try:
                r = predictor.predict(path, name=f"upload_{i}", gate_threshold=gate)
                items[i] = schemas.BatchItem(
                    index=i, ok=True, prediction=render.slice_prediction(r)
                )
            except (DataError, ValueError) as err:
                items[i] = _failed(i, _refusal(err, str(path.parent)))
    return [items[i] for i in range(len(files))]


def _failed(i: int, err: ServiceError) -> schemas.BatchItem:
    return schemas.BatchItem(index=i, ok=False, error=ErrorBody(code=err.code, message=err.message))


# ---------------------------------------------------------------- 3D
@router.post(
    "/predict/volume",
    response_model=schemas.VolumePrediction,
    responses=_ERRORS,
    tags=["predict"],
)
async def predict_volume(
    request: Request,
    file: Annotated[
        UploadFile,
        File(
            description="NIfTI volume, multi-frame DICOM, or a zipped BraTS/HECKTOR case "
            "folder or DICOM series"
        ),
    ],
    gate: Gate = None,
) -> schemas.VolumePrediction:
    """A whole volume: patient decision, 3D mask (downloadable NIfTI), volumes, risk."""
    state = _state(request)

    def work() -> schemas.VolumePrediction:
        with state.lease() as predictor, tempfile.TemporaryDirectory() as folder:
            try:
                path = save_volume(file.file, Path(folder))
                result = predictor.predict_volume(path, gate_threshold=gate)
            except (UploadError, DataError, ValueError) as err:
                raise _refusal(err, folder) from None
            url = None
            if not result.gated:
                rid = secrets.token_urlsafe(16)
                predictor.write_mask(result, state.store.add(rid) / MASK_FILE)
                url = f"/results/{rid}/{MASK_FILE}"
            return render.volume_prediction(result, url)

    return await state.admission.run(work, deadline=_deadline(request, state))


@router.get(
    "/results/{rid}/mask.nii.gz",
    response_class=FileResponse,
    responses={404: {"model": ErrorBody}, 401: {"model": ErrorBody}},
    tags=["predict"],
)
async def download_mask(request: Request, rid: str) -> FileResponse:
    """The mask NIfTI of a ``/predict/volume`` answer, in the input's geometry."""
    folder = _state(request).store.get(rid)
    if folder is None or not (folder / MASK_FILE).is_file():
        raise ServiceError(404, "not_found", "no such result (results are kept for a while)")
    return FileResponse(folder / MASK_FILE, media_type="application/gzip", filename=MASK_FILE)


# ---------------------------------------------------------------- test hooks
def install_test_hooks(app_router: APIRouter) -> None:
    """``/_test/hold``, ``/_test/state`` and ``/_test/release`` (settings.test_hooks only)."""

    @app_router.post("/_test/hold", include_in_schema=False)
    async def hold(request: Request) -> dict[str, str]:
        _state(request).admission.hold_all()
        return {"status": "held"}

    @app_router.get("/_test/state", include_in_schema=False)
    async def busy(request: Request) -> dict[str, int]:
        running, waiting = _state(request).admission.busy
        return {"running": running, "waiting": waiting}

    @app_router.post("/_test/release", include_in_schema=False)
    async def release(request: Request) -> dict[str, str]:
        _state(request).admission.release_all()
        return {"status": "released"}
