"""NIfTI and PNG/JPEG readers against nibabel and Pillow, on real files."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from tumorscope.data.errors import VolumeTooLargeError
from tumorscope.data.imagefolder import load_image
from tumorscope.data.images import read_image
from tumorscope.data.readers import read_nifti, write_like

ANATOMICAL = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"


def test_read_nibabel_anatomical_matches_closest_canonical() -> None:
    arr, meta = read_nifti(ANATOMICAL)
    ref = nib.as_closest_canonical(nib.load(ANATOMICAL))
    np.testing.assert_array_equal(arr, np.asanyarray(ref.dataobj))
    np.testing.assert_allclose(meta.affine, ref.affine)
    assert meta.shape == ref.shape
    np.testing.assert_allclose(meta.spacing, ref.header.get_zooms()[:3])
    stored = nib.load(ANATOMICAL)
    assert meta.orientation == nib.aff2axcodes(stored.affine)
    assert meta.original_shape == stored.shape
    assert nib.aff2axcodes(meta.affine) == ("R", "A", "S")


def _oblique_affine(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    aff = np.eye(4)
    aff[:3, :3] = q @ np.diag(rng.uniform(0.5, 3.0, 3))
    aff[:3, 3] = rng.normal(0, 50, 3)
    return aff


@pytest.mark.parametrize("seed", range(6))
def test_write_like_round_trip_reproduces_stored_array(
    tmp_path: Path, seed: int, write_nifti: Callable[..., Path]
) -> None:
    rng = np.random.default_rng(seed)
    shape = (5, 7, 6)
    stored = rng.integers(0, 5, shape).astype(np.uint8)
    aff = _oblique_affine(rng) if seed else np.diag([-1.2, -0.9, 2.0, 1.0])  # seed 0: LPS
    src = write_nifti(tmp_path / "in.nii.gz", stored, aff)
    canon, meta = read_nifti(src)
    assert nib.aff2axcodes(meta.affine) == ("R", "A", "S")
    out = write_like(canon, meta, tmp_path / "out.nii.gz")
    back = nib.load(out)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), stored)
    np.testing.assert_allclose(back.affine, aff, atol=1e-5)


def test_volume_cap_is_checked_from_header_before_decompressing(tmp_path: Path) -> None:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((2048, 2048, 2048))
    hdr.set_data_dtype(np.float32)
    path = tmp_path / "bomb.nii.gz"
    with gzip.open(path, "wb") as f:  # 32 GiB declared, a few KB on disk
        f.write(hdr.binaryblock + b"\0" * 4 + b"\0" * 100_000)
    assert path.stat().st_size < 10_000
    with pytest.raises(VolumeTooLargeError) as err:
        read_nifti(path)
    assert str(path) in str(err.value) and "8589934592" in str(err.value)


def test_volume_cap_is_configurable(tmp_path: Path, write_nifti: Callable[..., Path]) -> None:
    path = write_nifti(tmp_path / "v.nii.gz", np.zeros((10, 10, 10), np.float32))
    with pytest.raises(VolumeTooLargeError):
        read_nifti(path, max_voxels=999)
    arr, _ = read_nifti(path, max_voxels=1000)
    assert arr.shape == (10, 10, 10)


def test_trailing_singleton_fourth_dimension_is_squeezed(
    tmp_path: Path, write_nifti: Callable[..., Path]
) -> None:
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4, 1)
    arr, meta = read_nifti(write_nifti(tmp_path / "v.nii", data))
    np.testing.assert_array_equal(arr, data[..., 0])
    assert meta.shape == (2, 3, 4)


def test_png_greyscale_values_exact(tmp_path: Path) -> None:
    pixels = np.arange(37 * 41, dtype=np.uint8).reshape(37, 41)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    arr, meta = load_image(tmp_path / "a.png")
    assert arr.dtype == np.float32 and arr.shape == (37, 41)
    np.testing.assert_array_equal(arr, pixels.astype(np.float32))
    assert meta.spacing == (1.0, 1.0) and meta.shape == (37, 41)
    np.testing.assert_array_equal(meta.affine, np.eye(4))


def test_rgb_png_converted_by_luminance(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    arr, _ = read_image(tmp_path / "c.png")
    # ITU-R 601-2 luma, the weights Pillow documents for mode "L".
    expected = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    np.testing.assert_allclose(arr, expected, atol=1.0)


def test_jpeg_rgb_reads_close_to_written(tmp_path: Path) -> None:
    grey = np.add.outer(np.arange(32), np.arange(40)).astype(np.uint8) + 60
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "x.JPG", format="JPEG", quality=98)
    arr, _ = load_image(tmp_path / "x.JPG")
    assert arr.shape == (32, 40)
    assert np.abs(arr - grey).mean() < 2.0
    assert arr.min() >= 0 and arr.max() <= 255


def test_sixteen_bit_png_keeps_range(tmp_path: Path) -> None:
    pixels = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 100).astype(np.uint16)
    Image.fromarray(pixels).save(tmp_path / "d.png")
    arr, _ = read_image(tmp_path / "d.png")
    np.testing.assert_array_equal(arr, pixels.astype(np.float32))


def test_nifti2_and_big_endian_files(tmp_path: Path) -> None:
    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    aff = np.diag([2.0, 1.5, 1.0, 1.0])
    nib.save(nib.Nifti2Image(data, aff), tmp_path / "n2.nii.gz")
    big = nib.Nifti1Image(data.astype(">f4"), aff, header=nib.Nifti1Header(endianness=">"))
    nib.save(big, tmp_path / "be.nii")
    assert (tmp_path / "be.nii").read_bytes()[:4] == (348).to_bytes(4, "big")
    for name in ("n2.nii.gz", "be.nii"):
        arr, meta = read_nifti(tmp_path / name)
        np.testing.assert_array_equal(arr, data)
        assert meta.spacing == (2.0, 1.5, 1.0)
