"""The service as a client meets it: a real uvicorn process on a loopback port, over HTTP.

Every answer is compared with what ``Predictor`` computes directly on the same file, and
every safety rule is exercised on the wire (raw sockets where the rule is about what the
server does *before* it reads a body)."""

from __future__ import annotations

import base64
import gzip
import io
import json
import socket
import threading
import zipfile
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from tumorscope import DISCLAIMER
from tumorscope.inference.predictor import Predictor

from .conftest import KEY, Server, start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def predictor(tiny_run: Path) -> Predictor:
    return Predictor.from_run(tiny_run)


@pytest.fixture(scope="module")
def png(synth_brain: Path) -> Path:
    return sorted((synth_brain / "kaggle" / "yes").iterdir())[0]


@pytest.fixture(scope="module")
def case(synth_brain: Path) -> Path:
    return sorted(p for p in (synth_brain / "brats").iterdir() if p.is_dir())[0]


def raw_request(server: Server, head: str, body: bytes = b"", timeout: float = 30.0) -> bytes:
    """Send raw HTTP/1.1 bytes and read the answer's head (the server may not wait for
    a body it was promised)."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(head.encode() + body)
        data = b""
        while True:  # the head, then as many body bytes as its Content-Length says
            if b"\r\n\r\n" in data:
                top, rest = data.split(b"\r\n\r\n", 1)
                lengths = [
                    int(line.split(b":", 1)[1])
                    for line in top.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if len(rest) >= (lengths[0] if lengths else 0):
                    return data
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk


# ---------------------------------------------------------------- health, auth, card
def test_health_needs_no_key_and_everything_else_does(server: Server) -> None:
    with server.client(key=None) as c:
        assert c.get("/health/live").json() == {"status": "live"}
        assert c.get("/health/ready").json() == {"status": "ready"}
        for path in ("/model/info", "/metrics", "/openapi.json"):
            r = c.get(path)
            assert r.status_code == 401, path
            assert r.json() == {
                "code": "unauthorized",
                "message": "the X-API-Key header is missing",
            }
    with server.client(key="wrong-key-wrong-key-0000") as c:
        r = c.get("/model/info")
        assert r.status_code == 401 and "wrong" in r.json()["message"]


def test_the_key_is_checked_before_the_body_is_read(server: Server) -> None:
    # 100 MB promised, none sent: a server that read the body first would wait forever.
    head = (
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        "Content-Length: 100000000\r\nX-API-Key: nope-nope-nope-nope\r\n\r\n"
    )
    answer = raw_request(server, head)
    assert answer.startswith(b"HTTP/1.1 401")


def test_a_declared_length_over_the_cap_is_refused_before_reading(server: Server) -> None:
    head = (
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {3 * 2**20}\r\nX-API-Key: {KEY}\r\n\r\n"
    )
    answer = raw_request(server, head)
    assert answer.startswith(b"HTTP/1.1 413")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["code"] == "too_large"


def test_a_chunked_body_without_length_is_cut_at_the_cap(server: Server, png: Path) -> None:
    def chunks():  # a valid multipart start, then 3 MiB of file content, no Content-Length
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
        yield png.read_bytes()
        for _ in range(48):
            yield b"\0" * 65536
        yield b"\r\n--b--\r\n"

    with server.client() as c:
        r = c.post(
            "/predict",
            content=chunks(),
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
        assert "content-length" not in r.request.headers
        assert r.status_code == 413
        assert r.json()["code"] == "too_large"
        assert c.get("/health/live").status_code == 200


def test_model_info_is_the_runs_card(server: Server, predictor: Predictor, tiny_run: Path) -> None:
    with server.client() as c:
        info = c.get("/model/info").json()
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    assert info["parameters"]["total"] == sum(p.numel() for p in predictor.model.parameters())
    assert info["files_sha256"] == manifest["files"]
    assert info["calibration"]["temperature"] == pytest.approx(predictor.temperature)
    assert info["calibration"]["threshold"] == pytest.approx(predictor.threshold)
    assert info["regions"] == list(predictor.regions)
    assert info["input"] == manifest["preprocessing"]
    assert info["domain_check"] is True
    assert info["disclaimer"] == DISCLAIMER
    assert info["limits"]["/predict"] == 2 * 2**20


# ---------------------------------------------------------------- predictions
def test_predict_equals_the_predictor_on_the_same_file(
    server: Server, predictor: Predictor, png: Path
) -> None:
    direct = predictor.predict(png, gate_threshold=0.0)
    with server.client() as c:
        r = c.post("/predict?gate=0", files={"file": ("scan.png", png.read_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["classification"]["tumour_probability"] == pytest.approx(
        direct.tumour_probability, abs=1e-9
    )
    assert j["classification"]["threshold"] == pytest.approx(direct.threshold)
    seg = j["segmentation"]
    assert seg["mask_available"] is True and direct.mask is not None
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(seg["mask_png_base64"]))))
    assert mask.shape == direct.mask.shape[1:]
    np.testing.assert_array_equal(mask == 1, direct.mask[0] == 1)
    assert seg["area_pixels"] == {"WT": int(direct.mask[0].sum())}
    assert seg["percentage"]["WT"] == pytest.approx(100 * direct.mask[0].mean())
    assert seg["area_mm2"] is None  # a PNG has no pixel spacing
    assert j["domain"]["score"] == pytest.approx(direct.domain.score)
    assert j["disclaimer"] == DISCLAIMER and "not medical advice" in j["recommendation"]


def test_the_gate_withholds_the_mask(server: Server, png: Path) -> None:
    with server.client() as c:
        j = c.post("/predict?gate=1", files={"file": ("a.png", png.read_bytes())}).json()
    seg = j["segmentation"]
    assert seg["mask_available"] is False and seg["mask_png_base64"] is None
    assert "under the gate threshold 1.00" in seg["mask_reason"]


def test_dicom_gets_mm2_and_no_identifier_reaches_the_log(
    server: Server, predictor: Predictor, tmp_path: Path
) -> None:
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.PatientName = "Zyxwvut^Qponml"
    ds.PatientID = "PID-998877"
    path = tmp_path / "Zyxwvut_Qponml.dcm"
    ds.save_as(path)
    with server.client() as c:
        r = c.post("/predict?gate=0", files={"file": (path.name, path.read_bytes())})
    assert r.status_code == 200, r.text
    j = r.json()
    sy, sx = (float(v) for v in ds.PixelSpacing)
    area = j["segmentation"]["area_pixels"]["WT"]
    assert j["segmentation"]["area_mm2"]["WT"] == pytest.approx(area * sy * sx)
    direct = predictor.predict(path, gate_threshold=0.0)
    assert j["classification"]["tumour_probability"] == pytest.approx(direct.tumour_probability)
    text = json.dumps(j) + server.log_text()
    for secret in ("Zyxwvut", "Qponml", "PID-998877"):
        assert secret not in text


def test_uncertainty_and_gradcam_on_request(
    server: Server, predictor: Predictor, png: Path
) -> None:
    with server.client() as c:
        r = c.post(
            "/predict?uncertainty=mc&samples=5&gradcam=true",
            files={"file": ("a.png", png.read_bytes())},
        )
    assert r.status_code == 200, r.text
    j = r.json()
    full = predictor.predict_full(png, mc_samples=5, gradcam=True)
    assert j["uncertainty"]["samples"] == 5
    assert j["uncertainty"]["score"] == pytest.approx(full.uncertainty_score, rel=1e-6)
    cam = np.asarray(Image.open(io.BytesIO(base64.b64decode(j["gradcam"]["png_base64"]))))
    assert cam.shape == (*Image.open(png).size[::-1], 3)


def test_test_time_augmentation_on_request(server: Server, predictor: Predictor, png: Path) -> None:
    with server.client() as c:
        r = c.post(
            "/predict?uncertainty=tta&samples=4", files={"file": ("a.png", png.read_bytes())}
        )
        too_many = c.post(
            "/predict?uncertainty=tta&samples=9", files={"file": ("a.png", png.read_bytes())}
        )
    assert r.status_code == 200, r.text
    u = r.json()["uncertainty"]
    full = predictor.predict_full(png, mc_samples=0, tta_views=4, gradcam=False)
    assert u["views"] == ["identity", "flip_lr", "flip_ud", "flip_both"] and u["samples"] == 4
    assert u["score"] == pytest.approx(full.uncertainty_score, rel=1e-6, abs=1e-12)
    assert u["tumour_entropy"] == pytest.approx(
        u["tumour_aleatoric"] + u["tumour_mutual_information"]
    )
    assert too_many.status_code == 422 and "1 to 8 views" in too_many.json()["message"]


def test_predict_multitask_keeps_the_prototype_fields(server: Server, png: Path) -> None:
    with server.client() as c:
        j = c.post("/predict_multitask?gate=0", files={"file": ("a.png", png.read_bytes())}).json()
    c_ = j["classification"]
    assert set(c_) == {"predicted_class", "predicted_label", "confidence", "tumor_probability"}
    assert c_["tumor_probability"] == j["tumorscope"]["classification"]["tumour_probability"]
    seg = j["segmentation"]
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(seg["mask_base64"]))))
    assert set(np.unique(mask)) <= {0, 255}
    assert seg["tumor_area_pixels"] == int((mask == 255).sum())
    assert j["gradcam_overlay"] is not None and j["disclaimer"] == DISCLAIMER


def test_batch_reports_a_bad_item_alone(server: Server, predictor: Predictor, png: Path) -> None:
    files = [
        ("files", ("a.png", png.read_bytes())),
        ("files", ("b.bin", b"not an image at all")),
        ("files", ("c.png", png.read_bytes()[:200])),  # a truncated PNG
        ("files", ("d.png", png.read_bytes())),
    ]
    with server.client() as c:
        r = c.post("/predict/batch", files=files)
    assert r.status_code == 200, r.text
    j = r.json()
    assert [i["ok"] for i in j["items"]] == [True, False, False, True]
    assert j["items"][1]["error"]["code"] == "unsupported_type"
    assert j["items"][2]["error"]["code"] == "invalid_input"
    p = predictor.predict(png).tumour_probability
    for i in (0, 3):
        prob = j["items"][i]["prediction"]["classification"]["tumour_probability"]
        assert prob == pytest.approx(p, abs=1e-6)
    assert (j["succeeded"], j["failed"]) == (2, 2)


def test_volume_from_a_zipped_case_and_its_mask_download(
    server: Server, predictor: Predictor, case: Path, tmp_path: Path
) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in sorted(case.iterdir()):
            if "_seg" not in f.name:
                z.write(f, f"{case.name}/{f.name}")
    with server.client() as c:
        r = c.post("/predict/volume?gate=0", files={"file": ("case.zip", buf.getvalue())})
        assert r.status_code == 200, r.text
        j = r.json()
        direct = predictor.predict_volume(case, gate_threshold=0.0)
        assert j["classification"]["tumour_probability"] == pytest.approx(direct.tumour_probability)
        assert j["volumes_ml"]["WT"] == pytest.approx(direct.volumes_ml["WT"])
        assert j["survival"]["log_hazard"] == pytest.approx(direct.risk.log_hazard, rel=1e-6)
        m = c.get(j["mask_url"])
        assert m.status_code == 200
    path = tmp_path / "mask.nii.gz"
    path.write_bytes(m.content)
    mask = nib.load(path)
    flair = nib.load(next(case.glob("*_flair.nii.gz")))
    np.testing.assert_allclose(mask.affine, flair.affine, atol=1e-5)
    assert mask.shape == flair.shape
    voxel_ml = abs(np.linalg.det(flair.affine[:3, :3])) / 1000
    assert (np.asarray(mask.dataobj) == 1).sum() * voxel_ml == pytest.approx(j["volumes_ml"]["WT"])


def test_volume_refusals(server: Server, tmp_path: Path) -> None:
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../../escape.txt", "x")
    with server.client() as c:
        r = c.post("/predict/volume", files={"file": ("a.zip", evil.getvalue())})
        assert r.status_code == 422 and r.json()["code"] == "unsafe_archive"
        r = c.post("/predict/volume", files={"file": ("a.png", b"\x89PNG\r\n\x1a\n" + b"0" * 600)})
        assert r.status_code == 415
        r = c.post("/predict/volume", files={"file": ("a.nii.gz", gzip.compress(b"x" * 400))})
        assert r.status_code == 422 and r.json()["message"].startswith("upload.nii.gz: ")
        assert c.get("/results/nope/mask.nii.gz").json()["code"] == "not_found"


def test_errors_are_json_and_never_echo_the_upload(server: Server) -> None:
    with server.client() as c:
        r = c.post("/predict", files={"file": ("Secret_Name.txt", b"SECRET-BYTES " * 50)})
        assert r.status_code == 415 and r.json()["code"] == "unsupported_type"
        assert "SECRET" not in r.text and "Secret_Name" not in r.text
        r = c.post("/predict?gate=7", files={"file": ("a.png", b"x")})
        assert r.status_code == 422 and set(r.json()) == {"code", "message"}
        assert c.get("/nowhere").json()["code"] == "not_found"
        assert c.delete("/predict").json()["code"] == "method_not_allowed"


def test_metrics_count_requests_by_route_and_status(server: Server) -> None:
    with server.client() as c:
        c.get("/health/live")
        text = c.get("/metrics").text
    assert 'tumorscope_requests_total{route="/health/live",status="200"}' in text
    assert 'tumorscope_rejected_total{reason="unauthorized"}' in text
    assert "tumorscope_model_load_seconds" in text
    assert 'tumorscope_request_seconds_bucket{le="0.005",route="/health/live"}' in text


# ---------------------------------------------------------------- load
def test_a_full_queue_answers_503_at_once_and_health_still_answers(
    server: Server, png: Path
) -> None:
    data = png.read_bytes()
    answers: dict[str, int] = {}

    def send(name: str) -> None:
        with server.client() as c:
            answers[name] = c.post("/predict", files={"file": ("a.png", data)}).status_code

    with server.client() as c:
        c.post("/_test/hold")
        try:
            first = threading.Thread(target=send, args=("first",))
            first.start()
            _wait_state(c, running=1, waiting=0)
            second = threading.Thread(target=send, args=("second",))
            second.start()
            _wait_state(c, running=1, waiting=1)
            r = c.post("/predict", files={"file": ("a.png", data)})
            assert r.status_code == 503 and r.json()["code"] == "busy"
            assert r.headers["Retry-After"] == "2"
            assert r.elapsed.total_seconds() < 5.0  # refused, not queued
            assert c.get("/health/live").status_code == 200
            assert c.get("/health/ready").status_code == 200
        finally:
            c.post("/_test/release")
        first.join(60)
        second.join(60)
    assert answers == {"first": 200, "second": 200}


def _wait_state(c: httpx.Client, *, running: int, waiting: int) -> None:
    """Until the server reports this many running and waiting predictions (an event seen
    through the test hook; each poll is one request, no timing is asserted)."""
    for _ in range(2000):
        if c.get("/_test/state").json() == {"running": running, "waiting": waiting}:
            return
    raise AssertionError(f"server never reached running={running} waiting={waiting}")


def test_a_request_past_its_deadline_gets_504(tiny_run: Path, png: Path, tmp_path: Path) -> None:
    s = start_server(tiny_run, tmp_path / "log", deadline_s="1")
    try:
        with s.client() as c:
            c.post("/_test/hold")
            r = c.post("/predict", files={"file": ("a.png", png.read_bytes())})
            assert r.status_code == 504 and r.json()["code"] == "deadline"
            c.post("/_test/release")
            assert c.get("/health/live").status_code == 200
    finally:
        assert s.stop() == 0


def test_sigterm_drains_in_flight_requests(tiny_run: Path, png: Path, tmp_path: Path) -> None:
    s = start_server(tiny_run, tmp_path / "log")
    answer: dict[str, int] = {}

    def send() -> None:
        with s.client() as c:
            answer["status"] = c.post(
                "/predict", files={"file": ("a.png", png.read_bytes())}
            ).status_code

    with s.client() as c:
        c.post("/_test/hold")
        t = threading.Thread(target=send)
        t.start()
        _wait_state(c, running=1, waiting=0)
    assert s.stop() == 0  # SIGTERM: readiness off, the held request finishes, exit 0
    t.join(60)
    assert answer == {"status": 200}
    log = s.log_text()
    assert "draining" in log
    assert log.index("draining") < log.rindex("/predict 200")


def test_two_worker_processes_answer_and_stop(tiny_run: Path, png: Path, tmp_path: Path) -> None:
    s = start_server(tiny_run, tmp_path / "log", "--workers", "2")
    try:
        with s.client() as c:
            ok = [c.post("/predict", files={"file": ("a.png", png.read_bytes())}) for _ in range(4)]
            assert [r.status_code for r in ok] == [200] * 4
            probs = {r.json()["classification"]["tumour_probability"] for r in ok}
            assert len(probs) == 1  # every worker loaded the same model
    finally:
        assert s.stop() == 0
    assert s.log_text().count("Waiting for child process") == 2
