"""The UI's only way to the model: the service's HTTP API (``tumorscope serve``).

The API key is read from the environment of the UI's own server process
(``TUMORSCOPE_API_KEY``), so it never reaches the page, a URL or the browser.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx

#: Where the UI finds the service unless told (``tumorscope ui --api URL``).
API_ENV = "TUMORSCOPE_UI_API"
KEY_ENV = "TUMORSCOPE_API_KEY"
DEFAULT_API = "http://127.0.0.1:8000"


class ServiceUnavailable(RuntimeError):
    """The service answered with an error, or not at all: one line for the page."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServiceClient:
    """Calls of the service's routes.

    Attributes:
        base_url: The service's URL.
        api_key: Its key (None: a service started with ``--no-auth``).
        timeout_s: Seconds per request.
    """

    base_url: str
    api_key: str | None = None
    timeout_s: float = 300.0

    @classmethod
    def from_env(cls) -> ServiceClient:
        """The client configured by ``TUMORSCOPE_UI_API`` and ``TUMORSCOPE_API_KEY``."""
        return cls(os.environ.get(API_ENV, DEFAULT_API), os.environ.get(KEY_ENV) or None)

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {} if self.api_key is None else {"X-API-Key": self.api_key}
        try:
            r = httpx.request(
                method, f"{self.base_url}{path}", headers=headers, timeout=self.timeout_s, **kw
            )
        except httpx.HTTPError as err:
            raise ServiceUnavailable(
                f"the service at {self.base_url} did not answer ({type(err).__name__})"
            ) from None
        if r.status_code >= 400:
            try:
                message = str(r.json().get("message", r.text))
            except ValueError:
                message = r.text[:200]
            raise ServiceUnavailable(f"{message} (HTTP {r.status_code})", r.status_code)
        return r

    def ready(self) -> bool:
        """True when the service says it is ready."""
        try:
            return self._call("GET", "/health/ready").status_code == 200
        except ServiceUnavailable:
            return False

    def info(self) -> dict[str, Any]:
        """``/model/info``."""
        return dict(self._call("GET", "/model/info").json())

    def predict(
        self,
        name: str,
        data: bytes,
        *,
        gate: float | None = None,
        gradcam: bool = True,
        uncertainty: str | None = None,
        samples: int | None = None,
    ) -> dict[str, Any]:
        """``/predict`` on one slice."""
        params: dict[str, Any] = {"gradcam": str(gradcam).lower()}
        if gate is not None:
            params["gate"] = gate
        if uncertainty:
            params["uncertainty"] = uncertainty
            if samples:
                params["samples"] = samples
        r = self._call("POST", "/predict", params=params, files={"file": (name, data)})
        return dict(r.json())

    def predict_batch(self, files: list[tuple[str, bytes]]) -> dict[str, Any]:
        """``/predict/batch``."""
        parts = [("files", (name, data)) for name, data in files]
        return dict(self._call("POST", "/predict/batch", files=parts).json())

    def predict_volume(self, name: str, data: bytes) -> dict[str, Any]:
        """``/predict/volume``."""
        return dict(self._call("POST", "/predict/volume", files={"file": (name, data)}).json())

    def download(self, url: str) -> bytes:
        """A result file named by a ``mask_url``."""
        return self._call("GET", url).content
