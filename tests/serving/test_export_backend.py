"""The service on an exported run (ONNX Runtime backend): the same answers as the PyTorch
run it came from, MC dropout on the graphs, Grad-CAM refused in one line."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Server, start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def servers(
    tiny_run: Path, tiny_export: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server]]:
    logs = tmp_path_factory.mktemp("export-service")
    a = start_server(tiny_run, logs / "torch.log", concurrency="2")
    b = start_server(tiny_export, logs / "onnx.log", concurrency="2")  # two slots: a copy each
    try:
        yield a, b
    finally:
        assert a.stop() == 0 and b.stop() == 0


@pytest.fixture(scope="module")
def png(synth_brain: Path) -> Path:
    return sorted((synth_brain / "kaggle" / "yes").iterdir())[0]


def test_model_info_says_what_the_export_is(
    servers: tuple[Server, Server], tiny_export: Path
) -> None:
    torch_s, onnx_s = servers
    with onnx_s.client() as c:
        info = c.get("/model/info").json()
    with torch_s.client() as c:
        ref = c.get("/model/info").json()
    manifest = json.loads((tiny_export / "manifest.json").read_text())
    assert info["backend"] == "OnnxBackend" and ref["backend"] == "TorchBackend"
    assert info["export"]["format"] == "onnx" and ref["export"] is None
    assert info["export"]["parity"] == manifest["export"]["parity"]
    assert info["capabilities"] == {"mc_dropout": True, "tta": True, "gradcam": False}
    assert ref["capabilities"]["gradcam"] is True
    assert info["files_sha256"] == manifest["files"]
    assert info["calibration"] == ref["calibration"]


def test_predictions_match_the_pytorch_service(servers: tuple[Server, Server], png: Path) -> None:
    answers = []
    for s in servers:
        with s.client() as c:
            r = c.post("/predict?gate=0", files={"file": ("a.png", png.read_bytes())})
            assert r.status_code == 200, r.text
            answers.append(r.json())
    a, b = answers
    pa, pb = a["classification"]["tumour_probability"], b["classification"]["tumour_probability"]
    assert pb == pytest.approx(pa, abs=1e-4)
    assert b["segmentation"]["area_pixels"]["WT"] == pytest.approx(
        a["segmentation"]["area_pixels"]["WT"], rel=1e-3
    )
    assert b["domain"]["score"] == pytest.approx(a["domain"]["score"], abs=1e-3)


def test_volume_on_the_export(servers: tuple[Server, Server], synth_brain: Path) -> None:
    case = sorted(p for p in (synth_brain / "brats").iterdir() if p.is_dir())[0]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in sorted(case.iterdir()):
            if "_seg" not in f.name:
                z.write(f, f"{case.name}/{f.name}")
    answers = []
    for s in servers:
        with s.client() as c:
            r = c.post("/predict/volume", files={"file": ("case.zip", buf.getvalue())})
            assert r.status_code == 200, r.text
            answers.append(r.json())
    a, b = answers
    pa, pb = a["classification"]["tumour_probability"], b["classification"]["tumour_probability"]
    assert pb == pytest.approx(pa, abs=1e-4)
    assert b["volumes_ml"]["WT"] == pytest.approx(a["volumes_ml"]["WT"], rel=1e-3)
    assert b["survival"]["log_hazard"] == pytest.approx(a["survival"]["log_hazard"], abs=1e-4)


def test_mc_on_the_export_and_gradcam_refused(servers: tuple[Server, Server], png: Path) -> None:
    _, onnx_s = servers
    with onnx_s.client() as c:
        mc = c.post(
            "/predict?uncertainty=mc&samples=6", files={"file": ("a.png", png.read_bytes())}
        )
        cam = c.post("/predict?gradcam=true", files={"file": ("a.png", png.read_bytes())})
        legacy = c.post("/predict_multitask", files={"file": ("a.png", png.read_bytes())})
    assert mc.status_code == 200, mc.text
    assert mc.json()["uncertainty"]["samples"] == 6
    assert cam.status_code == 422
    assert cam.json()["code"] == "not_available"
    assert "Grad-CAM needs the PyTorch run" in cam.json()["message"]
    # the prototype's route asks for Grad-CAM by default: where there is none, it is null
    assert legacy.status_code == 200, legacy.text
    assert legacy.json()["gradcam_overlay"] is None
