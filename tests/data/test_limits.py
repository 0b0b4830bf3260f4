"""The fixed bounds of ``tumorscope.data.limits``, at their edges, and where the readers ask them."""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tumorscope.data import errors as E
from tumorscope.data import limits
from tumorscope.data.inspect import validate_dataset
from tumorscope.data.layout import discover, load_case
from tumorscope.data.layouts.brats import parse_survival
from tumorscope.data.readers import read_nifti, read_nifti_header
from tumorscope.data.spec import PreprocessSpec
from tumorscope.data.types import BRAIN_CHANNELS
from tumorscope.data.walk import unreadable_entries
from tumorscope.inference.inputs import read_2d

Factory = Callable[..., Path]
W = Callable[..., Path]


def _header_only(path: Path, shape: tuple[int, ...], dtype: type) -> Path:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    with gzip.open(path, "wb") as f:  # gigabytes declared, bytes on disk
        f.write(hdr.binaryblock + b"\0" * 4 + b"\0" * 1000)
    return path


def _set_scaling(path: Path, slope: float, inter: float) -> Path:
    raw = bytearray(path.read_bytes())
    raw[112:120] = struct.pack("<ff", slope, inter)
    path.write_bytes(bytes(raw))
    return path


def test_scaling_is_applied_in_float32_as_nibabel_scales(tmp_path: Path, write_nifti: W) -> None:
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5) * 7
    path = _set_scaling(write_nifti(tmp_path / "v.nii", data), 2.5, -10.0)
    arr, _ = read_nifti(path)
    assert arr.dtype == np.float32
    np.testing.assert_allclose(arr, nib.load(path).get_fdata(), rtol=1e-6)


@pytest.mark.parametrize("slope", [np.nan, 0.0])
def test_unset_slope_leaves_values_as_stored(tmp_path: Path, write_nifti: W, slope: float) -> None:
    data = np.full((3, 4, 5), 1234, np.int16)
    path = _set_scaling(write_nifti(tmp_path / "v.nii", data), slope, 99.0)
    arr, _ = read_nifti(path)  # NaN is what nibabel itself writes for "no scaling"
    assert arr.dtype == np.int16 and np.all(arr == 1234)


def test_decoded_bytes_of_a_4d_file_are_capped_from_its_header(tmp_path: Path) -> None:
    # 256³ voxels (inside the voxel cap) × 16 channels × 4 bytes = 1 GiB
    path = _header_only(tmp_path / "v.nii.gz", (256, 256, 256, 16), np.float32)
    with pytest.raises(E.VolumeTooLargeError, match="GiB") as err:
        read_nifti_header(path, n_channels=16)
    assert err.value.path == path and "16 channels" in str(err.value)


def test_the_byte_budget_takes_512_cubed_float32_but_not_float64() -> None:
    limits.check_volume("v.nii", (512, 512, 512), itemsize=4)  # 512 MiB
    limits.check_volume("v.nii", (512, 512, 512), itemsize=2)  # int16 CT, cast to float32
    with pytest.raises(E.VolumeTooLargeError, match=r"768\.0 MiB"):
        limits.check_volume("v.nii", (512, 512, 512), itemsize=8)  # 1 GiB


def test_case_budget_is_checked_before_the_case_is_assembled(
    tmp_path: Path, make_brats: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_brats(tmp_path / "b", n_patients=1, shape=(24, 28, 20), survival=False)
    case = discover([root]).cases[0]
    one = 24 * 28 * 20 * 4
    monkeypatch.setattr(limits, "MAX_DECODED_BYTES", 2 * one)
    assert load_case(case, ["flair", "t1"]).image.shape == (2, 24, 28, 20)
    with pytest.raises(E.VolumeTooLargeError) as err:
        load_case(case, BRAIN_CHANNELS)
    assert err.value.path == case.channels["flair"].parent and "4 channels" in str(err.value)
    problems = validate_dataset([root])  # the same check, for every channel the case has
    assert [p for p in problems if isinstance(p, E.VolumeTooLargeError)], problems


@pytest.mark.parametrize(
    ("shape", "error"),
    [
        ((4096, 4096), None),
        ((256, 16), None),
        ((4097, 300), E.ImageTooLargeError),
        ((256, 15), E.DimensionError),
        ((0, 5), E.DimensionError),
    ],
)
def test_image_size_bounds(shape: tuple[int, int], error: type[E.DataError] | None) -> None:
    if error is None:
        limits.check_image_size("x.png", *shape)
    else:
        with pytest.raises(error):
            limits.check_image_size("x.png", *shape)


def test_arrays_and_2d_nifti_given_to_predict_meet_the_same_bounds(
    tmp_path: Path, write_nifti: W
) -> None:
    spec = PreprocessSpec()
    with pytest.raises(E.DimensionError, match="aspect ratio"):
        read_2d(np.zeros((20, 2000), np.float32), "strip", 0, 1, spec)
    flat = write_nifti(tmp_path / "flat.nii.gz", np.zeros((3, 300), np.float32))
    with pytest.raises(E.DimensionError, match="aspect ratio") as err:
        read_2d(flat, None, 0, 1, spec)
    assert err.value.path == flat
    # a 2D header is checked before decoding, like a 3D one
    long = _header_only(tmp_path / "long.nii.gz", (30_000, 2), np.float32)
    with pytest.raises(E.VolumeTooLargeError, match="side"):
        read_2d(long, None, 0, 1, spec)
    ok = write_nifti(tmp_path / "ok.nii.gz", np.ones((30, 40), np.float32))
    assert read_2d(ok, None, 0, 1, spec).data.shape == (30, 40)


@pytest.mark.parametrize(
    ("cell", "ok"),
    [("36525", True), ("36526", False), ("ALIVE (1e9 days later)", False), ("0", True)],
)
def test_survival_times_are_bounded_by_100_years(cell: str, ok: bool) -> None:
    assert isinstance(parse_survival(cell), tuple) is ok


@pytest.mark.parametrize(
    ("value", "ok"), [(0.0, True), (120.0, True), (-1.0, False), (121.0, False)]
)
def test_age_range(value: float, ok: bool) -> None:
    assert (limits.clinical_fault("Age", value) is None) is ok


def test_hecktor_clinical_values_out_of_range_are_problems(
    tmp_path: Path, make_hecktor: Factory
) -> None:
    root = make_hecktor(tmp_path / "h", n_patients=2)
    clinical = root / "hecktor2022_clinical_info_training.csv"
    clinical.write_text("PatientID,Age,Weight\nCHUM-001,200,70\nCHUM-002,50,inf\n")
    index = discover([root])
    faults = [str(p) for p in index.problems if isinstance(p, E.ClinicalValueError)]
    assert len(faults) == 2 and "Age '200'" in faults[0] and "Weight 'inf'" in faults[1]
    assert index.outcomes["CHUM-001"].clinical["Age"] is None  # never reaches the model


def test_label_values_must_fit_a_uint8_mask(tmp_path: Path, make_msd: Factory) -> None:
    root = make_msd(
        tmp_path / "Task01_BrainTumour", labels={"0": "background", "300": "edema"}, n_patients=1
    )
    problems = discover([root]).problems
    assert any(isinstance(p, E.DatasetJsonError) and "300" in str(p) for p in problems), problems


def test_walk_skips_hidden_entries_other_names_and_deep_levels(tmp_path: Path) -> None:
    root = tmp_path / "data"
    deep = root / "a" / "b" / "c" / "d" / "e"
    deep.mkdir(parents=True)
    os.symlink(root / "nothing", root / ".hidden.png")
    os.symlink(root / "nothing", root / "notes.txt")
    os.symlink(root / "nothing", deep / "too_deep.png")
    os.symlink(root / "nothing", root / "a" / "b" / "c" / "d" / "deepest.png")
    found = [p.path for p in unreadable_entries(root, depth=5)]
    assert found == [root / "a" / "b" / "c" / "d" / "deepest.png"]


def test_a_cache_larger_than_the_free_disk_is_refused_before_writing(tmp_path: Path) -> None:
    import shutil

    from tumorscope.data.errors import DiskSpaceError
    from tumorscope.data.limits import check_disk_space

    free = shutil.disk_usage(tmp_path).free
    check_disk_space(tmp_path / "images.npy", 1024)  # small: fine
    with pytest.raises(DiskSpaceError, match=r"images\.npy: needs up to .* free"):
        check_disk_space(tmp_path / "images.npy", free * 2)
    assert not (tmp_path / "images.npy").exists()


def _progressive_jpeg() -> bytes:
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    im = Image.fromarray((rng.random((64, 64)) * 255).astype(np.uint8))
    buf = io.BytesIO()
    im.save(buf, "JPEG", progressive=True)
    return buf.getvalue()


def test_a_jpeg_of_too_many_scans_is_refused_before_decoding(tmp_path: Path) -> None:
    from tumorscope.data.errors import ImageTooLargeError
    from tumorscope.data.images import read_image
    from tumorscope.data.limits import MAX_JPEG_SCANS

    data = _progressive_jpeg()
    ok = tmp_path / "ok.jpg"
    ok.write_bytes(data)
    arr, _ = read_image(ok)  # an ordinary progressive JPEG (6 scans) reads
    assert arr.shape == (64, 64)
    last = data.rindex(b"\xff\xda")  # repeat the last scan: a CPU bomb under the pixel cap
    bomb = data[:last] + data[last:-2] * (MAX_JPEG_SCANS + 5) + b"\xff\xd9"
    bad = tmp_path / "bomb.jpg"
    bad.write_bytes(bomb)
    with pytest.raises(ImageTooLargeError, match=r"bomb\.jpg: JPEG has \d+ scans, above the cap"):
        read_image(bad)


def test_an_image_file_past_the_byte_cap_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tumorscope.data import images
    from tumorscope.data.errors import ImageTooLargeError

    f = tmp_path / "big.png"
    f.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 4096)
    monkeypatch.setattr(images, "MAX_IMAGE_FILE_BYTES", 1024)
    with pytest.raises(ImageTooLargeError, match=r"big\.png: file of .* is above the .* cap"):
        images.read_image(f)
