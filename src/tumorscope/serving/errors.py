"""Every refusal of the service as one JSON shape, ``{"code": ..., "message": ...}``.

Messages name the fault and never echo the upload: no bytes, no client file name, no
header value (a DICOM's PatientName may sit in either).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from tumorscope.data.errors import DecompressionBombError, ImageTooLargeError, VolumeTooLargeError
from tumorscope.data.types import DataError

log = logging.getLogger(__name__)

#: Data faults that are a size budget: 413 rather than 422.
TOO_LARGE = (DecompressionBombError, ImageTooLargeError, VolumeTooLargeError)


class ErrorBody(BaseModel):
    """The body of every 4xx/5xx answer."""

    code: str
    message: str


class ServiceError(Exception):
    """A refusal with an HTTP status, a short machine code and a one-line message."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The JSON answer of a refusal."""
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


def data_error(err: DataError, folder: str) -> ServiceError:
    """A data fault of an upload as a refusal: the path shown relative to the upload's
    private folder (``upload.png: ...``), never the server's temporary path.
    """
    path = str(err.path)
    where = path[len(folder) :].lstrip("/\\") if path.startswith(folder) else "upload"
    status, code = (413, "too_large") if isinstance(err, TOO_LARGE) else (422, "invalid_input")
    return ServiceError(status, code, f"{where or 'upload'}: {err.fault}")


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_type",
    422: "invalid_request",
    503: "unavailable",
}


def install_handlers(app: FastAPI) -> None:
    """Answer every exception in the JSON shape (FastAPI's own ones included)."""

    async def service(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    async def http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(exc.status_code, code, detail, exc.headers)

    async def validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        faults = []
        for e in exc.errors()[:5]:  # the location and the rule, never the input value
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            faults.append(f"{where or 'request'}: {e.get('msg', 'invalid')}")
        return error_response(422, "invalid_request", "; ".join(faults) or "invalid request")

    async def internal(_: Request, exc: Exception) -> Response:
        log.error("internal error: %s", type(exc).__name__)
        return error_response(500, "internal", "internal error; the server log has the kind")

    app.add_exception_handler(ServiceError, service)
    app.add_exception_handler(StarletteHTTPException, http)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(Exception, internal)
