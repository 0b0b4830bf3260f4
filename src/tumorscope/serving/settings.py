"""The service's settings: one ``pydantic-settings`` object from arguments, the environment
(``TUMORSCOPE_*``) and a ``.env`` file, in that order of precedence.

This is the only settings object of the package; it is built by the CLI (or by
:func:`tumorscope.serving.app.app_from_env` in a uvicorn worker), never at import.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 2**20
#: Environment variable prefix of every setting (``TUMORSCOPE_API_KEY``, ``TUMORSCOPE_RUN``...).
ENV_PREFIX = "TUMORSCOPE_"


class ServiceSettings(BaseSettings):
    """What the HTTP service loads and how much it accepts.

    Attributes:
        run: The run folder (or exported model folder) to serve.
        report: An ``evaluate`` output folder whose ``metrics.json`` ``/model/info`` shows.
        host: Address to bind (loopback by default).
        port: TCP port.
        api_key: Key every request but the health checks must send in ``X-API-Key``;
            None with ``no_auth`` off: :func:`resolve_key` generates one at start.
        no_auth: Serve without a key (refused unless ``host`` is a loopback address).
        max_predict_bytes: Body cap of ``/predict`` and ``/predict_multitask``.
        max_batch_bytes: Body cap of ``/predict/batch``.
        max_volume_bytes: Body cap of ``/predict/volume``.
        max_batch_items: Images one ``/predict/batch`` request may hold.
        max_samples: Largest ``samples`` of an uncertainty request.
        concurrency: Predictions computed at once (each in a worker thread).
        queue_size: Requests that may wait for a free slot; beyond it: 503 at once.
        deadline_s: Seconds from arrival to the answer; past it: 504.
        retry_after_s: ``Retry-After`` of a 503.
        torch_threads: Intra-op threads of PyTorch in this process (0: PyTorch's default).
        results_kept: Volume masks kept for download (the oldest is dropped first).
        test_hooks: Expose ``/_test/hold`` and ``/_test/release`` (for the tests' queue
            checks; never in production).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    run: Path
    report: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: SecretStr | None = None
    no_auth: bool = False
    max_predict_bytes: int = Field(16 * MiB, gt=0)
    max_batch_bytes: int = Field(256 * MiB, gt=0)
    max_volume_bytes: int = Field(512 * MiB, gt=0)
    max_batch_items: int = Field(100, ge=1)
    max_samples: int = Field(50, ge=1)
    concurrency: int = Field(1, ge=1)
    queue_size: int = Field(8, ge=0)
    deadline_s: float = Field(120.0, gt=0)
    retry_after_s: int = Field(2, ge=1)
    torch_threads: int = Field(0, ge=0)
    results_kept: int = Field(16, ge=1)
    test_hooks: bool = False

    @field_validator("api_key")
    @classmethod
    def _key_long_enough(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 16:
            raise ValueError("the API key must be at least 16 characters")
        return v

    @model_validator(mode="after")
    def _no_auth_on_loopback_only(self) -> ServiceSettings:
        if self.no_auth and not is_loopback(self.host):
            raise ValueError(
                f"no_auth: refused on {self.host}; serving without a key is allowed on a "
                "loopback address (127.0.0.1, ::1, localhost) only"
            )
        if self.no_auth and self.api_key is not None:
            raise ValueError("no_auth: an API key is configured as well; choose one")
        return self


def is_loopback(host: str) -> bool:
    """True when ``host`` names only loopback addresses (``localhost`` is resolved)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def resolve_key(settings: ServiceSettings) -> tuple[ServiceSettings, bool]:
    """The settings with an API key: the configured one, or a new random one.

    Returns:
        ``(settings, generated)``; ``generated`` says a key was made (print it once).
        With ``no_auth`` the settings come back unchanged.
    """
    if settings.no_auth or settings.api_key is not None:
        return settings, False
    key = SecretStr(secrets.token_urlsafe(32))
    return settings.model_copy(update={"api_key": key}), True
