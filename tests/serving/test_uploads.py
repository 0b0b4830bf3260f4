"""Uploads to files the predictor reads: the kind from the bytes, never the client's name.

Zip uploads (checked and extracted by ``tumorscope.serving.archive``) are tested in
test_archive.py.
"""

from __future__ import annotations

import errno
import gzip
import io
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from tumorscope.serving import archive, uploads
from tumorscope.serving.uploads import (
    IMAGE_KINDS,
    VOLUME_KINDS,
    UploadError,
    save_image,
    save_volume,
    sniff,
)

from .uploadkit import CLIENT_NAME, bundled, refusal, zip_bytes


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.arange(37 * 41, dtype=np.uint8).reshape(37, 41)).save(out, "PNG")
    return out.getvalue()


def jpeg_bytes() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((37, 41), 90, dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


def nifti_bytes(*, gz: bool = False, version: int = 1, endianness: str = "<") -> bytes:
    data = np.arange(37 * 41, dtype=np.int16).reshape(37, 41)
    if version == 2:
        image: nib.Nifti1Image = nib.Nifti2Image(data, np.eye(4))
    else:
        image = nib.Nifti1Image(data, np.eye(4), header=nib.Nifti1Header(endianness=endianness))
    raw = image.to_bytes()
    return gzip.compress(raw, mtime=0) if gz else raw


class Trickle(io.RawIOBase):
    """A stream that answers every read with at most 7 bytes (a socket-like short read)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self._data.read(7 if n < 0 else min(n, 7))


# --- sniff -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (png_bytes, "png"),
        (jpeg_bytes, "jpeg"),
        (lambda: bundled("MR_small.dcm"), "dicom"),
        (lambda: bundled("rtdose.dcm"), "dicom"),
        (nifti_bytes, "nifti"),
        (lambda: nifti_bytes(endianness=">"), "nifti"),
        (lambda: nifti_bytes(version=2), "nifti"),
        (lambda: nifti_bytes(gz=True), "nifti-gz"),
        (lambda: zip_bytes({"a.txt": b"a"}), "zip"),
        (lambda: zip_bytes({}), "zip"),
    ],
)
def test_sniff_tells_each_kind_from_its_first_bytes(make: Callable[[], bytes], kind: str) -> None:
    assert sniff(make()[: uploads.HEAD_BYTES]) == kind


def test_sniff_refuses_random_bytes_text_and_short_heads() -> None:
    rng = np.random.default_rng(0)
    assert sniff(rng.integers(0, 256, 512, dtype=np.uint8).tobytes()) is None
    assert sniff(b"patient,age\nA,63\n" * 40) is None
    assert sniff(b"") is None
    assert sniff(b"\x5c\x01\x00\x00" + bytes(340)) is None  # sizeof_hdr 348 without a magic
    assert sniff(nifti_bytes()[:300]) is None  # the magic at 344 not given


def test_the_kind_lists() -> None:
    assert IMAGE_KINDS == ("png", "jpeg", "dicom", "nifti", "nifti-gz")
    assert VOLUME_KINDS == ("nifti", "nifti-gz", "dicom", "zip")


# --- save_image ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (png_bytes, "upload.png"),
        (jpeg_bytes, "upload.jpg"),
        (lambda: bundled("MR_small.dcm"), "upload.dcm"),
        (nifti_bytes, "upload.nii"),
        (lambda: nifti_bytes(gz=True), "upload.nii.gz"),
    ],
)
def test_save_image_writes_the_bytes_under_the_sniffed_name(
    make: Callable[[], bytes], name: str, folder: Path
) -> None:
    data = make()
    path = save_image(io.BytesIO(data), folder)
    assert path == folder / name
    assert path.read_bytes() == data
    assert [p.name for p in folder.iterdir()] == [name]


def test_save_image_never_uses_the_client_file_name(tmp_path: Path, folder: Path) -> None:
    client = tmp_path / f"{CLIENT_NAME}.jpg"  # a PNG named .jpg: the bytes decide
    client.write_bytes(png_bytes())
    with client.open("rb") as fh:
        path = save_image(fh, folder)
    assert path.name == "upload.png"
    assert all(CLIENT_NAME not in p.as_posix() for p in folder.rglob("*"))
    text = tmp_path / f"{CLIENT_NAME}.png"
    text.write_text("not an image")
    with text.open("rb") as fh:
        err = refusal(save_image, fh, folder)
    assert CLIENT_NAME not in err.message


def test_save_image_reads_past_short_reads(folder: Path) -> None:
    data = png_bytes()
    path = save_image(cast(BinaryIO, Trickle(data)), folder)
    assert path.name == "upload.png" and path.read_bytes() == data


@pytest.mark.parametrize("data", [zip_bytes({"a.png": b"x"}), b"hello, this is text\n" * 30])
def test_save_image_refuses_other_kinds_with_415(data: bytes, folder: Path) -> None:
    err = refusal(save_image, io.BytesIO(data), folder)
    assert (err.status, err.code) == (415, "unsupported_type")
    for accepted in ("PNG", "JPEG", "DICOM", "2D NIfTI"):
        assert accepted in err.message
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("save", [save_image, save_volume])
def test_an_empty_upload_is_422(save: Callable[[BinaryIO, Path], Path], folder: Path) -> None:
    err = refusal(save, io.BytesIO(b""), folder)
    assert (err.status, err.code) == (422, "empty_file")
    assert list(folder.iterdir()) == []


def test_a_full_disk_is_507(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(uploads.shutil, "copyfileobj", full)
    err = refusal(save_image, io.BytesIO(png_bytes()), folder)
    assert (err.status, err.code) == (507, "insufficient_storage")


# --- save_volume: single files ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: nifti_bytes(gz=True), "upload.nii.gz"),
        (nifti_bytes, "upload.nii"),
        (lambda: bundled("rtdose.dcm"), "upload.dcm"),  # 15 frames
    ],
)
def test_save_volume_copies_a_volume_file(
    make: Callable[[], bytes], name: str, folder: Path
) -> None:
    data = make()
    path = save_volume(io.BytesIO(data), folder)
    assert path == folder / name and path.read_bytes() == data


@pytest.mark.parametrize("data", [png_bytes(), jpeg_bytes(), b"plain text\n" * 60])
def test_save_volume_refuses_2d_images_and_text_with_415(data: bytes, folder: Path) -> None:
    err = refusal(save_volume, io.BytesIO(data), folder)
    assert (err.status, err.code) == (415, "unsupported_type")
    for accepted in ("NIfTI volume", "BraTS/HECKTOR case folder", "DICOM series", "multi-frame"):
        assert accepted in err.message


def test_upload_error_is_the_one_archive_raises() -> None:
    assert UploadError is archive.UploadError
    assert "UploadError" in uploads.__all__
