"""One test per kind of bad input: the typed error, and a message that names the file."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from tumorscope.data import errors as E
from tumorscope.data.dicom import read_dicom_series
from tumorscope.data.imagefolder import load_image
from tumorscope.data.inspect import validate_dataset
from tumorscope.data.layout import discover, load_case
from tumorscope.data.readers import read_nifti
from tumorscope.data.types import DataError

Factory = Callable[..., Path]
W = Callable[..., Path]


def _names(err: DataError, path: Path) -> None:
    text = str(err)
    assert text.startswith(f"{path}: "), text
    assert "\n" not in text and err.path == path


def _found(problems: list[DataError], kind: type[DataError], path: Path) -> DataError:
    hits = [p for p in problems if isinstance(p, kind) and p.path == path]
    assert hits, f"no {kind.__name__} for {path} in {[str(p) for p in problems]}"
    _names(hits[0], path)
    return hits[0]


def _brats_file(root: Path, i: int, mod: str) -> Path:
    return root / f"BraTS20_Training_{i:03d}" / f"BraTS20_Training_{i:03d}_{mod}.nii.gz"


# --- NIfTI ---------------------------------------------------------------------------


def test_empty_nifti(tmp_path: Path, make_brats: Factory) -> None:
    root = make_brats(tmp_path / "b", n_patients=2, shape=(5, 6, 7), survival=False)
    bad = _brats_file(root, 1, "flair")
    bad.write_bytes(b"")
    index = discover([root])
    _found(index.problems, E.EmptyFileError, bad)
    assert [c.patient_id for c in index.cases] == ["BraTS20_Training_002"]  # bad case left out
    _found(validate_dataset([root]), E.EmptyFileError, bad)


def test_random_bytes_are_not_nifti(tmp_path: Path) -> None:
    bad = tmp_path / "x.nii"
    bad.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(E.NotNiftiError) as err:
        read_nifti(bad)
    _names(err.value, bad)


def test_truncated_nii_gz(tmp_path: Path, make_brats: Factory) -> None:
    root = make_brats(tmp_path / "b", n_patients=1, shape=(30, 30, 30), survival=False)
    bad = _brats_file(root, 1, "t2")
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    assert discover([root]).problems == []  # the header is intact; only a deep read sees it
    with pytest.raises(E.TruncatedFileError) as err:
        read_nifti(bad)
    _names(err.value, bad)
    _found(validate_dataset([root]), E.TruncatedFileError, bad)


def test_non_gzip_nii_gz(tmp_path: Path, write_nifti: W) -> None:
    plain = write_nifti(tmp_path / "v.nii", np.zeros((3, 3, 3), np.float32))
    bad = tmp_path / "v.nii.gz"
    bad.write_bytes(np.random.default_rng(1).bytes(500))
    with pytest.raises(E.NotGzipError) as err:
        read_nifti(bad)
    _names(err.value, bad)
    assert plain.exists()


def test_unparseable_header(tmp_path: Path, write_nifti: W) -> None:
    bad = write_nifti(tmp_path / "v.nii", np.zeros((3, 3, 3), np.float32))
    raw = bytearray(bad.read_bytes())
    raw[70:72] = struct.pack("<h", 999)  # datatype code nibabel does not know
    bad.write_bytes(bytes(raw))
    with pytest.raises(E.HeaderError) as err:
        read_nifti(bad)
    _names(err.value, bad)
    assert "999" in str(err.value)


def test_volume_too_large_from_header(tmp_path: Path, make_brats: Factory) -> None:
    root = make_brats(tmp_path / "b", n_patients=1, shape=(5, 6, 7), survival=False)
    problems = validate_dataset([root], max_voxels=200)
    err = _found(problems, E.VolumeTooLargeError, _brats_file(root, 1, "flair"))
    assert "210 voxels" in str(err) and "cap of 200" in str(err)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels(tmp_path: Path, write_nifti: W, value: float) -> None:
    data = np.ones((4, 4, 4), np.float32)
    data[1, 2, 3] = value
    bad = write_nifti(tmp_path / "v.nii.gz", data)
    with pytest.raises(E.NonFiniteVoxelError) as err:
        read_nifti(bad)
    _names(err.value, bad)
    assert "1 of 64" in str(err.value)


@pytest.mark.parametrize("value", [0.0, np.nan, np.inf])
def test_zero_or_non_finite_spacing(tmp_path: Path, write_nifti: W, value: float) -> None:
    bad = write_nifti(tmp_path / "v.nii", np.zeros((3, 3, 3), np.float32))
    raw = bytearray(bad.read_bytes())
    raw[80:84] = struct.pack("<f", value)  # pixdim[1]; nibabel would silently rewrite 0 to 1
    bad.write_bytes(bytes(raw))
    with pytest.raises(E.SpacingError) as err:
        read_nifti(bad)
    _names(err.value, bad)


def test_singular_affine(tmp_path: Path) -> None:
    aff = np.diag([1.0, 1.0, 0.0, 1.0])
    img = nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), np.eye(4))
    img.set_qform(None, code=0)
    img.set_sform(aff, code=2)
    bad = tmp_path / "v.nii.gz"
    nib.save(img, bad)
    with pytest.raises(E.SingularAffineError) as err:
        read_nifti(bad)
    _names(err.value, bad)


@pytest.mark.parametrize("shape", [(5, 6), (3, 3, 3, 2)])
def test_wrong_number_of_dimensions(tmp_path: Path, write_nifti: W, shape: tuple[int, ...]) -> None:
    bad = write_nifti(tmp_path / "v.nii.gz", np.zeros(shape, np.float32))
    with pytest.raises(E.DimensionError) as err:
        read_nifti(bad)
    _names(err.value, bad)


def test_image_mask_shape_mismatch_names_both(
    tmp_path: Path, make_brats: Factory, write_nifti: W
) -> None:
    root = make_brats(tmp_path / "b", n_patients=1, shape=(6, 7, 8), survival=False)
    seg = _brats_file(root, 1, "seg")
    write_nifti(seg, np.zeros((6, 7, 9), np.uint8))
    case = discover([root]).cases[0]
    with pytest.raises(E.GeometryMismatchError) as err:
        load_case(case, ["flair"])
    _names(err.value, seg)
    assert str(case.channels["flair"]) in str(err.value) and "(6, 7, 9)" in str(err.value)
    _found(validate_dataset([root]), E.GeometryMismatchError, seg)


def test_image_spacing_mismatch_names_both(
    tmp_path: Path, make_brats: Factory, write_nifti: W
) -> None:
    root = make_brats(tmp_path / "b", n_patients=1, shape=(6, 7, 8), survival=False)
    t1 = _brats_file(root, 1, "t1")
    write_nifti(t1, np.ones((6, 7, 8), np.float32), np.diag([1.0, 1.0, 1.5, 1.0]))
    case = discover([root]).cases[0]
    with pytest.raises(E.GeometryMismatchError) as err:
        load_case(case, ["flair", "t1"])
    _names(err.value, t1)
    assert "spacing" in str(err.value) and str(case.channels["flair"]) in str(err.value)


@pytest.mark.parametrize("label", [3.0, 7.0, 1.5])
def test_unexpected_label_values(
    tmp_path: Path, make_brats: Factory, write_nifti: W, label: float
) -> None:
    root = make_brats(tmp_path / "b", n_patients=1, shape=(6, 7, 8), survival=False)
    seg = _brats_file(root, 1, "seg")
    mask = np.zeros((6, 7, 8), np.float32)
    mask[2, 2, 2] = label  # 3 is ET only in the 2023 naming; this case uses 2020 names
    write_nifti(seg, mask)
    case = discover([root]).cases[0]
    with pytest.raises(E.LabelValueError) as err:
        load_case(case, ["flair"])
    _names(err.value, seg)
    _found(validate_dataset([root]), E.LabelValueError, seg)


# --- PNG / JPEG ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_truncated_image(tmp_path: Path, fmt: str) -> None:
    bad = tmp_path / f"a.{fmt}"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(bad)
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(E.TruncatedFileError) as err:
        load_image(bad)
    _names(err.value, bad)


def test_zero_byte_image_in_kaggle_folder(tmp_path: Path, make_kaggle: Factory) -> None:
    root = make_kaggle(tmp_path / "k", n_yes=2, n_no=2)
    bad = root / "yes" / "Y1.jpg"
    bad.write_bytes(b"")
    index = discover([root])
    _found(index.problems, E.EmptyFileError, bad)
    assert bad not in {it.path for it in index.images}
    _found(validate_dataset([root]), E.EmptyFileError, bad)


def test_unreadable_image_random_bytes(tmp_path: Path) -> None:
    bad = tmp_path / "a.png"
    bad.write_bytes(np.random.default_rng(3).bytes(300))
    with pytest.raises(E.NotImageError) as err:
        load_image(bad)
    _names(err.value, bad)


def _png_claiming(path: Path, width: int, height: int) -> Path:
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    raw = bytearray(path.read_bytes())
    raw[16:24] = struct.pack(">II", width, height)  # IHDR width/height
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("side", [10_000, 30_000])  # Pillow's warning zone, then its error zone
def test_decompression_bomb(tmp_path: Path, side: int) -> None:
    assert Image.MAX_IMAGE_PIXELS is not None  # the limit is on
    bad = _png_claiming(tmp_path / "bomb.png", side, side)
    with pytest.raises(E.DecompressionBombError) as err:
        load_image(bad)
    _names(err.value, bad)


@pytest.mark.parametrize(
    ("name", "writer"),
    [
        ("png_as.jpg", "png"),
        ("jpeg_as.png", "jpeg"),
        ("png_as.nii.gz", "png"),
        ("gzip_as.nii", "nifti_gz"),
    ],
)
def test_content_does_not_match_extension(tmp_path: Path, name: str, writer: str) -> None:
    bad = tmp_path / name
    if writer == "nifti_gz":
        nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), np.eye(4)), tmp_path / "x.nii.gz")
        bad.write_bytes((tmp_path / "x.nii.gz").read_bytes())
    else:
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(bad, format=writer.upper())
    with pytest.raises(E.ExtensionMismatchError) as err:
        (read_nifti if ".nii" in name else load_image)(bad)
    _names(err.value, bad)


# --- DICOM ---------------------------------------------------------------------------


def test_dicom_without_preamble(tmp_path: Path, make_dicom_series: Factory) -> None:
    folder = make_dicom_series(tmp_path / "s", n_slices=3)
    bad = folder / "IM0002.dcm"
    bad.write_bytes(bad.read_bytes()[132:])
    with pytest.raises(E.DicomPreambleError) as err:
        read_dicom_series(folder)
    _names(err.value, bad)


def test_dicom_truncated(tmp_path: Path, make_dicom_series: Factory) -> None:
    folder = make_dicom_series(tmp_path / "s", n_slices=3)
    bad = folder / "IM0003.dcm"
    bad.write_bytes(bad.read_bytes()[:20_000])
    with pytest.raises(E.TruncatedFileError) as err:
        read_dicom_series(folder)
    _names(err.value, bad)


def test_dicom_pixel_data_shorter_than_declared(tmp_path: Path, make_dicom_series: Factory) -> None:
    folder = make_dicom_series(tmp_path / "s", n_slices=3)
    bad = folder / "IM0001.dcm"
    ds = pydicom.dcmread(bad)
    ds.PixelData = ds.PixelData[:-256]
    ds.save_as(bad)
    with pytest.raises(E.DicomPixelDataError) as err:
        read_dicom_series(folder)
    _names(err.value, bad)
    assert "32512" in str(err.value) and "32768" in str(err.value)


def test_unparseable_dcm_files_all_listed(tmp_path: Path, make_dicom_series: Factory) -> None:
    folder = make_dicom_series(tmp_path / "p" / "s", n_slices=3)
    for name in ("IM0001.dcm", "IM0003.dcm"):
        (folder / name).write_bytes(os.urandom(400))
    with pytest.raises(E.DicomSeriesError) as err:
        read_dicom_series(folder)
    assert "IM0001.dcm" in str(err.value) and "IM0003.dcm" in str(err.value)
    problems = validate_dataset([tmp_path])
    for name in ("IM0001.dcm", "IM0003.dcm"):
        _found(problems, E.DicomPreambleError, folder / name)


# --- CSV -----------------------------------------------------------------------------


def _rewrite_survival(root: Path, cell: str) -> Path:
    csv_path = root / "survival_info.csv"
    lines = csv_path.read_text().splitlines()
    cols = lines[2].split(",")
    cols[2] = cell
    lines[2] = ",".join(cols)
    csv_path.write_text("\n".join(lines) + "\n")
    return csv_path


@pytest.mark.parametrize("cell", ["abc", "-5", "inf", "nan", "ALIVE (-3 days later)"])
def test_bad_survival_times(tmp_path: Path, make_brats: Factory, cell: str) -> None:
    root = make_brats(tmp_path / "b", n_patients=3, shape=(4, 4, 4))
    csv_path = _rewrite_survival(root, cell)
    index = discover([root])
    err = _found(index.problems, E.SurvivalValueError, csv_path)
    assert "BraTS20_Training_002" in str(err) and "line 3" in str(err)
    assert "BraTS20_Training_002" not in index.outcomes and len(index.outcomes) == 2


def test_bad_hecktor_rfs(tmp_path: Path, make_hecktor: Factory) -> None:
    root = make_hecktor(tmp_path / "h", n_patients=2, ct_shape=(6, 6, 6))
    csv_path = root / "hecktor2022_endpoint_training.csv"
    csv_path.write_text("PatientID,Relapse,RFS\nCHUM-001,1,-20\nCHUM-002,yes,100\n")
    problems = discover([root]).problems
    assert [type(p) for p in problems] == [E.SurvivalValueError, E.SurvivalValueError]
    assert all(str(p).startswith(f"{csv_path}: ") for p in problems)


def test_patient_listed_twice(tmp_path: Path, make_brats: Factory, make_hecktor: Factory) -> None:
    root = make_brats(tmp_path / "b", n_patients=2, shape=(4, 4, 4))
    csv_path = root / "survival_info.csv"
    csv_path.write_text(csv_path.read_text() + "BraTS20_Training_001,40,10,GTR\n")
    err = _found(discover([root]).problems, E.DuplicatePatientError, csv_path)
    assert "BraTS20_Training_001" in str(err) and "first on line 2" in str(err)
    hroot = make_hecktor(tmp_path / "h", n_patients=1, ct_shape=(6, 6, 6))
    endpoint = hroot / "hecktor2022_endpoint_training.csv"
    endpoint.write_text(endpoint.read_text() + "CHUM-001,0,5\n")
    _found(discover([hroot]).problems, E.DuplicatePatientError, endpoint)


def test_true_risk_non_finite(tmp_path: Path, make_brats: Factory) -> None:
    root = make_brats(tmp_path / "b", n_patients=2, shape=(4, 4, 4), true_risk=True)
    sidecar = root / "true_risk.csv"
    sidecar.write_text(
        "patient_id,true_log_hazard\nBraTS20_Training_001,nan\nBraTS20_Training_002,0.5\n"
    )
    index = discover([root])
    _found(index.problems, E.SurvivalValueError, sidecar)
    assert index.true_risk == {"BraTS20_Training_002": 0.5}


# --- never a traceback ---------------------------------------------------------------


def test_random_corruption_never_raises(
    tmp_path: Path,
    make_brats: Factory,
    make_kaggle: Factory,
    make_hecktor: Factory,
    make_dicom_series: Factory,
) -> None:
    import random
    import shutil

    base = tmp_path / "base"
    make_brats(base / "brats", n_patients=1, shape=(5, 6, 7))
    make_kaggle(base / "kaggle", n_yes=1, n_no=1)
    make_hecktor(base / "hecktor", n_patients=1, ct_shape=(6, 6, 6))
    make_dicom_series(base / "dicom" / "P1", n_slices=2)
    files = sorted(p.relative_to(base) for p in base.rglob("*") if p.is_file())
    rng = random.Random(0)
    for trial in range(25):
        work = tmp_path / f"t{trial}"
        shutil.copytree(base, work)
        victim = work / rng.choice(files)
        raw = bytearray(victim.read_bytes())
        op = trial % 3
        if op == 0:
            raw = raw[: rng.randrange(max(len(raw), 1))]
        elif op == 1:
            for _ in range(10):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
        else:
            raw = bytearray(rng.randbytes(rng.randrange(600)))
        victim.write_bytes(bytes(raw))
        problems = validate_dataset([work])  # must not raise, whatever the damage
        assert all(isinstance(p, DataError) and "\n" not in str(p) for p in problems)
        shutil.rmtree(work)
