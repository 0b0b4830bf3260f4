"""The hostile-input suite's files replayed through the service: each is refused with a
4xx ``{code, message}`` naming the fault (never a 500), and the server answers
``/health/live`` after every one."""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from .conftest import Server

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hostile"))
from cases_data import CASES

pytestmark = pytest.mark.slow
FILE_CASES = [n for n, c in CASES.items() if c.reader in ("nifti", "dicom", "image")]
TOO_LARGE = {"VolumeTooLargeError", "ImageTooLargeError", "DecompressionBombError"}


def _route(reader: str) -> str:
    return "/predict" if reader == "image" else "/predict/volume"


@pytest.mark.parametrize("name", FILE_CASES)
def test_hostile_file_is_refused_in_one_json_line(
    server: Server, name: str, tmp_path: Path
) -> None:
    case = CASES[name]
    path = case.make(tmp_path)
    data = path.read_bytes()
    routes = [_route(case.reader), "/predict/batch"]
    with server.client() as c:
        for route in routes:
            if route == "/predict/batch":
                if case.reader != "image":
                    continue
                r = c.post(route, files=[("files", ("x", data))])
                assert r.status_code == 200, (name, r.text[:300])
                item = r.json()["items"][0]
                assert not item["ok"], name
                body = item["error"]
            else:
                r = c.post(route, files={"file": ("x", data)})
                assert 400 <= r.status_code < 500, (name, r.status_code, r.text[:300])
                body = r.json()
                if case.error in TOO_LARGE:
                    assert r.status_code == 413, (name, body)
            assert set(body) == {"code", "message"}, (name, body)
            assert case.fault.lower() in body["message"].lower(), (name, body)
            assert str(tmp_path) not in body["message"]
        assert c.get("/health/live").status_code == 200


def test_hostile_case_folder_zipped_is_refused(server: Server, tmp_path: Path) -> None:
    """A BraTS case whose FLAIR is a 2**40-voxel header, sent as a zipped case folder."""
    path = CASES["voxels_2_pow_40"].make(tmp_path / "made")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.write(path, f"BraTS20_Training_001/BraTS20_Training_001_flair{_suffix(path)}")
    with server.client() as c:
        r = c.post("/predict/volume", files={"file": ("case.zip", buf.getvalue())})
        assert r.status_code in (413, 422), r.text[:300]
        assert set(r.json()) == {"code", "message"}
        assert httpx.get(f"{server.url}/health/live").status_code == 200


def _suffix(path: Path) -> str:
    return ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
