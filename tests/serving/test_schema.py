"""Schemathesis against the real server's OpenAPI schema, valid and invalid requests: no answer is a 500 (only the
designed 503/504 may be 5xx), every refusal is ``{code, message}``, and the server stays
alive after every example.

Each operation's cases come from schemathesis' Hypothesis strategy, driven by
``hypothesis.given`` here (its pytest plugin does not run under this pytest). The example
count is small in ``make test``; ``TUMORSCOPE_SCHEMATHESIS_EXAMPLES`` raises it."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from .conftest import KEY, Server

EXAMPLES = int(os.environ.get("TUMORSCOPE_SCHEMATHESIS_EXAMPLES", "8"))
pytestmark = pytest.mark.slow


def test_no_answer_is_a_server_error(server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers={"X-API-Key": KEY})
    operations = [r.ok() for r in schema.get_all_operations()]
    names = {f"{op.method.upper()} {op.path}" for op in operations}
    assert {"POST /predict", "POST /predict/batch", "POST /predict/volume"} <= names
    seen: dict[str, set[int]] = {}

    for op in operations:
        for mode in schemathesis.GenerationMode:  # valid requests, then invalid ones
            _fuzz(server, op, mode, f"{op.method.upper()} {op.path}", seen)
    assert set(seen) == names
    assert 422 in seen["POST /predict"], seen["POST /predict"]


def _fuzz(server: Server, op: Any, mode: Any, name: str, seen: dict[str, set[int]]) -> None:
    @given(case=op.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        response = case.call(base_url=server.url, headers={"X-API-Key": KEY}, timeout=60)
        status = response.status_code
        seen.setdefault(name, set()).add(status)
        assert status < 500 or status in (503, 504), f"{name}: {status} {response.text[:300]}"
        if status >= 400:
            assert set(response.json()) == {"code", "message"}, (name, response.text[:300])
        assert httpx.get(f"{server.url}/health/live", timeout=10).status_code == 200

    try:
        check()
    except Unsatisfiable:
        # An operation without parameters or body has no invalid request to make.
        assert mode is schemathesis.GenerationMode.NEGATIVE, name
