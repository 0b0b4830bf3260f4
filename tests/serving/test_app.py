"""The service in process (FastAPI's TestClient): settings, key handling, the model card
with a report, the limits that need no real socket, readiness while draining."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from typer.testing import CliRunner

from tumorscope.cli import app as cli_app
from tumorscope.inference.predictor import Predictor
from tumorscope.serving.app import create_app
from tumorscope.serving.modelcard import ReportError
from tumorscope.serving.settings import ServiceSettings, is_loopback, resolve_key

KEY = "in-process-key-0123456789"
H = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def predictor(tiny_run: Path) -> Predictor:
    return Predictor.from_run(tiny_run)


@pytest.fixture(scope="module")
def png(synth_brain: Path) -> bytes:
    return sorted((synth_brain / "kaggle" / "yes").iterdir())[0].read_bytes()


@pytest.fixture
def client(tiny_run: Path, predictor: Predictor) -> Iterator[TestClient]:
    s = ServiceSettings(run=tiny_run, api_key=KEY, max_batch_items=3, max_samples=4)
    with TestClient(create_app(s, predictor=predictor)) as c:
        yield c


def test_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TUMORSCOPE_RUN", str(tmp_path))
    monkeypatch.setenv("TUMORSCOPE_PORT", "8123")
    monkeypatch.setenv("TUMORSCOPE_MAX_PREDICT_BYTES", "1000")
    s = ServiceSettings()  # type: ignore[call-arg]
    assert (s.run, s.port, s.max_predict_bytes, s.host) == (tmp_path, 8123, 1000, "127.0.0.1")


def test_no_auth_only_on_loopback_and_keys_are_long(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.7")
    ServiceSettings(run=tmp_path, no_auth=True)
    with pytest.raises(ValidationError, match="loopback"):
        ServiceSettings(run=tmp_path, no_auth=True, host="0.0.0.0")
    with pytest.raises(ValidationError, match="at least 16"):
        ServiceSettings(run=tmp_path, api_key="short")


def test_a_key_is_generated_when_none_is_configured(tmp_path: Path) -> None:
    s, made = resolve_key(ServiceSettings(run=tmp_path))
    assert made and s.api_key is not None and len(s.api_key.get_secret_value()) >= 32
    again, made_again = resolve_key(s)
    assert not made_again and again.api_key == s.api_key
    other, _ = resolve_key(ServiceSettings(run=tmp_path))
    assert other.api_key != s.api_key
    with pytest.raises(ValueError, match="no API key"):
        create_app(ServiceSettings(run=tmp_path))


def test_ready_flips_while_draining(client: TestClient) -> None:
    assert client.get("/health/ready").status_code == 200
    client.app.state.service.draining = True  # type: ignore[attr-defined]
    r = client.get("/health/ready")
    assert r.status_code == 503 and r.json()["code"] == "not_ready"
    assert client.get("/health/live").status_code == 200


def test_request_limits(client: TestClient, png: bytes) -> None:
    r = client.post("/predict?uncertainty=mc&samples=5", headers=H, files={"file": ("a", png)})
    assert r.status_code == 422 and "at most 4" in r.json()["message"]
    files = [("files", (f"{i}.png", png)) for i in range(4)]
    r = client.post("/predict/batch", headers=H, files=files)
    assert r.status_code == 413 and r.json()["code"] == "too_many_items"
    r = client.post("/predict?uncertainty=bogus", headers=H, files={"file": ("a", png)})
    assert r.status_code == 422 and r.json()["message"].startswith("query.uncertainty")
    r = client.post("/predict", headers={**H, "Content-Length": "-3"}, content=b"")
    assert r.status_code == 400 and r.json()["code"] == "bad_request"


def test_each_slot_has_its_own_predictor(tiny_run: Path, predictor: Predictor) -> None:
    s = ServiceSettings(run=tiny_run, api_key=KEY, concurrency=2)
    with TestClient(create_app(s, predictor=predictor)) as c:
        state = c.app.state.service  # type: ignore[attr-defined]
        with state.lease() as a, state.lease() as b:
            assert a is not b and a.model is not b.model
            for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
                assert pa.data_ptr() != pb.data_ptr() and bool((pa == pb).all())


def test_the_card_shows_the_report(tiny_run: Path, predictor: Predictor, tmp_path: Path) -> None:
    report = tmp_path / "report"
    report.mkdir()
    metrics = {"segmentation": {"dice": {"value": 0.5, "ci": [0.4, 0.6]}}, "meta": {"n": 2}}
    (report / "metrics.json").write_text(json.dumps(metrics))
    s = ServiceSettings(run=tiny_run, api_key=KEY, report=report)
    with TestClient(create_app(s, predictor=predictor)) as c:
        assert c.get("/model/info", headers=H).json()["report"] == metrics
    (report / "metrics.json").write_text("{not json")
    with pytest.raises(ReportError, match=r"metrics\.json: not readable JSON"):
        create_app(s, predictor=predictor)
    with pytest.raises(ReportError, match="no such file"):
        create_app(s.model_copy(update={"report": tmp_path}), predictor=predictor)


# ---------------------------------------------------------------- the serve command
runner = CliRunner()


def test_serve_refuses_a_missing_run(tmp_path: Path) -> None:
    res = runner.invoke(cli_app, ["serve", "--run", str(tmp_path / "nope")])
    assert res.exit_code == 2
    assert "nope" in res.output and "Traceback" not in res.output


def test_serve_refuses_no_auth_off_loopback(tiny_run: Path) -> None:
    res = runner.invoke(
        cli_app, ["serve", "--run", str(tiny_run), "--no-auth", "--host", "0.0.0.0"]
    )
    assert res.exit_code == 2 and "loopback" in res.output


def test_serve_names_a_taken_port(tiny_run: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = runner.invoke(cli_app, ["serve", "--run", str(tiny_run), "--port", str(port)])
    assert res.exit_code == 2
    assert f"127.0.0.1:{port}: the port is taken" in res.output
