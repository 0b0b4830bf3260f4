"""DICOM series built from pydicom's bundled CT_small.dcm, and pydicom's own test files."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from tumorscope.data.dicom import read_dicom_series
from tumorscope.data.errors import DicomSeriesError, SliceSpacingError
from tumorscope.data.layout import discover, load_case

Factory = Callable[..., Path]


def _ct_small() -> pydicom.Dataset:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    return pydicom.dcmread(path)


def test_three_slice_series_sorted_by_position_with_rescale(
    tmp_path: Path, make_dicom_series: Factory
) -> None:
    folder = make_dicom_series(tmp_path / "series", n_slices=3)
    vol, meta = read_dicom_series(folder)
    ds = _ct_small()
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    assert vol.dtype == np.float32 and vol.shape == (128, 128, 3)
    # IOP is the identity (rows along +x LPS = -x RAS, columns along +y LPS = -y RAS):
    # canonical RAS flips both in-plane axes; slice k holds pixels + 10 k.
    for k in range(3):
        hu = (ds.pixel_array.astype(np.float64) + 10 * k) * slope + intercept
        np.testing.assert_array_equal(vol[:, :, k], hu.T[::-1, ::-1])
    row_sp, col_sp = (float(v) for v in ds.PixelSpacing)
    np.testing.assert_allclose(meta.spacing, (col_sp, row_sp, 5.0))
    assert meta.orientation == ("L", "P", "S") and meta.path == folder
    ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
    corner = meta.affine @ np.array([127, 127, 0, 1.0])  # canonical voxel of the first stored pixel
    np.testing.assert_allclose(corner[:3], [-ipp[0], -ipp[1], ipp[2]], atol=1e-4)


def test_series_discovered_as_case_and_loaded(tmp_path: Path, make_dicom_series: Factory) -> None:
    make_dicom_series(tmp_path / "patients" / "P001", n_slices=3)
    make_dicom_series(tmp_path / "patients" / "P002", n_slices=2)
    index = discover([tmp_path])
    assert index.layouts == {"dicom": tmp_path / "patients"}
    assert [c.patient_id for c in index.cases] == ["P001", "P002"]
    assert index.cases[0].channels == {"ct": tmp_path / "patients" / "P001"}
    loaded = load_case(index.cases[1], ["ct"])
    assert loaded.image.shape == (1, 128, 128, 2) and loaded.mask is None


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_pydicom_bundled_single_slice(tmp_path: Path, name: str) -> None:
    src = get_testdata_file(name)
    assert src is not None
    (tmp_path / name).write_bytes(Path(src).read_bytes())
    vol, meta = read_dicom_series(tmp_path)
    ds = pydicom.dcmread(src)
    expected = ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(
        ds.get("RescaleIntercept", 0)
    )
    assert vol.shape[2] == 1
    np.testing.assert_allclose(np.sort(vol.ravel()), np.sort(expected.ravel()))
    assert meta.spacing[2] == pytest.approx(float(ds.SliceThickness))


def test_uneven_spacing_lists_the_files(tmp_path: Path, make_dicom_series: Factory) -> None:
    folder = make_dicom_series(tmp_path / "s", n_slices=4, gaps=[5.0, 5.0, 9.0])
    with pytest.raises(SliceSpacingError) as err:
        read_dicom_series(folder)
    msg = str(err.value)
    assert msg.startswith(f"{folder}: uneven slice spacing") and "IM0002.dcm→IM0001.dcm" in msg


def test_two_series_in_one_folder_lists_files(tmp_path: Path, make_dicom_series: Factory) -> None:
    folder = make_dicom_series(tmp_path / "s", n_slices=3, series_uids=["1.2.3", "1.2.3", "1.2.4"])
    with pytest.raises(DicomSeriesError) as err:
        read_dicom_series(folder)
    msg = str(err.value)
    # Files are listed by series; the UIDs themselves identify a study and are not printed.
    assert "2 series" in msg and "IM0003.dcm" in msg
    assert re.search(r"series \d: IM0001\.dcm(;|\))", msg), msg
    assert "1.2.3" not in msg and "1.2.4" not in msg


def test_duplicate_positions_are_an_error(tmp_path: Path, make_dicom_series: Factory) -> None:
    folder = make_dicom_series(tmp_path / "s", n_slices=3, gaps=[5.0, 0.0])
    with pytest.raises(SliceSpacingError, match="same position"):
        read_dicom_series(folder)


def test_missing_position_is_an_error(tmp_path: Path, make_dicom_series: Factory) -> None:
    folder = make_dicom_series(tmp_path / "s", n_slices=2)
    ds = pydicom.dcmread(folder / "IM0001.dcm")
    del ds.ImagePositionPatient
    ds.save_as(folder / "IM0001.dcm")
    with pytest.raises(SliceSpacingError, match=r"IM0001\.dcm"):
        read_dicom_series(folder)


def test_single_slice_without_thickness_has_no_spacing(
    tmp_path: Path, make_dicom_series: Factory
) -> None:
    folder = make_dicom_series(tmp_path / "s", n_slices=1)
    ds = pydicom.dcmread(folder / "IM0001.dcm")
    del ds.SliceThickness, ds.SpacingBetweenSlices
    ds.save_as(folder / "IM0001.dcm")
    with pytest.raises(SliceSpacingError) as err:
        read_dicom_series(folder)
    assert str(err.value).startswith(f"{folder}: one slice (IM0001.dcm)") and "missing" in str(
        err.value
    )


def test_slices_of_different_orientation_do_not_stack(
    tmp_path: Path, make_dicom_series: Factory
) -> None:
    folder = make_dicom_series(tmp_path / "s", n_slices=3)
    ds = pydicom.dcmread(folder / "IM0002.dcm")
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.save_as(folder / "IM0002.dcm")
    with pytest.raises(DicomSeriesError, match=r"IM0002\.dcm"):
        read_dicom_series(folder)
