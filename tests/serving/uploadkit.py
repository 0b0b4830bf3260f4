"""What the upload and archive tests share: a stand-in client file name, pydicom's bundled
files, zips made in memory, the one-line refusal check (the upload
folder fixture is in ``conftest.py``)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from tumorscope.serving.uploads import UploadError

CLIENT_NAME = "DOE_JOHN_1957"  # stands for a patient-identifying client file name


def bundled(name: str) -> bytes:
    """A DICOM test file shipped inside the installed pydicom (never downloaded)."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} does not ship with this pydicom"
    return Path(str(path)).read_bytes()


def zip_bytes(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


def refusal(call: Callable[..., object], *args: object, **kwargs: int) -> UploadError:
    with pytest.raises(UploadError) as caught:
        call(*args, **kwargs)
    err = caught.value
    assert str(err) == err.message and "\n" not in err.message
    return err
