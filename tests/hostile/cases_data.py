"""Hostile data folders: each generator writes one attack into a folder and returns its path.

Every generator takes an empty folder (the data root ``tumorscope data validate`` is pointed
at), writes a small dataset of good files plus one hostile file or folder, and returns the
path of the hostile entry — the path the one ``PATH: fault`` line must name. Files are tiny
(a few MB at most) even where they declare gigabytes. ``CASES`` maps a case name to a
:class:`DataCase`: the generator, the kind of reader that must refuse it, the name of the
``tumorscope.data.errors`` class and words of the fault. Nothing here imports tumorscope,
so other suites (the HTTP service's) can replay the same files.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

CASE_ID = "BraTS20_Training_001"
BRATS_MODS = ("flair", "t1", "t1ce", "t2", "seg")
SHAPE = (8, 9, 10)


# --------------------------------------------------------------------------- writers


def write_nifti(path: Path, data: np.ndarray) -> Path:
    """A NIfTI-1 file (gzip if the name ends in .gz) with an identity qform/sform."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, np.eye(4))
    img.set_qform(np.eye(4), code=1)
    img.set_sform(np.eye(4), code=1)
    nib.save(img, path)
    return path


def brats_case(root: Path, case: str = CASE_ID) -> dict[str, Path]:
    """One good BraTS 2020 case folder; returns modality → file."""
    rng = np.random.default_rng(0)
    files = {}
    for k, mod in enumerate(BRATS_MODS):
        data = (
            np.zeros(SHAPE, np.uint8)
            if mod == "seg"
            else (100.0 * (k + 1) + rng.normal(0, 1, SHAPE)).astype(np.float32)
        )
        files[mod] = write_nifti(root / case / f"{case}_{mod}.nii.gz", data)
    return files


def png_bytes(width: int, height: int) -> bytes:
    """An 8-bit greyscale PNG of zeros, compressed row by row (never held decoded)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    comp = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0 + pixels
    parts = [comp.compress(row) for _ in range(height)]
    idat = b"".join(parts) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def kaggle_root(root: Path) -> Path:
    """A Kaggle yes/no folder with one good PNG in each class."""
    ramp = (np.add.outer(np.arange(32), np.arange(30)) % 200).astype(np.uint8)
    for cls in ("yes", "no"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(ramp).save(root / cls / f"{cls}_good.png")
    return root


def dicom_series(folder: Path, n: int = 2) -> list[Path]:
    """A CT series of ``n`` slices built from pydicom's ``CT_small.dcm``, 5 mm apart."""
    folder.mkdir(parents=True, exist_ok=True)
    source = get_testdata_file("CT_small.dcm")
    assert source is not None
    uid = generate_uid()
    paths = []
    for k in range(n):
        ds = pydicom.dcmread(source)
        pos = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + 5.0 * k]
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = uid
        ds.InstanceNumber = k + 1
        path = folder / f"IM{k + 1:04d}.dcm"
        ds.save_as(path)
        paths.append(path)
    return paths


def _edit_dicom(path: Path, edit: Callable[[pydicom.Dataset], None]) -> Path:
    ds = pydicom.dcmread(path)
    with warnings.catch_warnings():  # pydicom warns about the invalid values we plant
        warnings.simplefilter("ignore")
        edit(ds)
        ds.save_as(path)
    return path


def _patch_nifti(path: Path, offset: int, fmt: str, *values: float | int) -> Path:
    """Overwrite header bytes at ``offset`` of a (gzipped) NIfTI-1 file."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, *values)
    path.write_bytes(gzip.compress(bytes(raw)))
    return path


def _nifti_header(shape: tuple[int, ...], dtype: type) -> bytes:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr.set_qform(np.eye(4), code=1)
    hdr.set_sform(np.eye(4), code=1)
    hdr["vox_offset"] = 352
    return hdr.binaryblock + b"\x00" * 4  # no extensions


def _gzip_zeros(n_bytes: int, head: bytes, chunk: int = 1 << 24) -> bytes:
    """``head`` then ``n_bytes`` zeros as a multi-member gzip stream (built in milliseconds:
    one compressed member of ``chunk`` zeros, repeated)."""
    member = gzip.compress(bytes(chunk), compresslevel=9)
    full, rest = divmod(n_bytes, chunk)
    return gzip.compress(head) + member * full + gzip.compress(bytes(rest))


# --------------------------------------------------------------------------- NIfTI


def _bad_flair(folder: Path, write: Callable[[Path], Path]) -> Path:
    files = brats_case(folder)
    files["flair"].unlink()
    return write(files["flair"])


def rgb_nifti(folder: Path) -> Path:
    """FLAIR stored as NIfTI RGB24 (three bytes per voxel)."""
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    return _bad_flair(folder, lambda p: write_nifti(p, rgb))


def complex_512_cubed(folder: Path) -> Path:
    """A ~2 MB ``.nii.gz`` holding 512³ complex128 voxels (2 GiB decoded), inside the voxel cap."""

    def write(p: Path) -> Path:
        p.write_bytes(_gzip_zeros(512**3 * 16, _nifti_header((512, 512, 512), np.complex128)))
        return p

    return _bad_flair(folder, write)


def voxels_2_pow_40(folder: Path) -> Path:
    """A header declaring 16384×16384×4096 = 2^40 voxels, then a few bytes."""

    def write(p: Path) -> Path:
        p.write_bytes(gzip.compress(_nifti_header((16384, 16384, 4096), np.int16) + bytes(4096)))
        return p

    return _bad_flair(folder, write)


def side_too_long(folder: Path) -> Path:
    """A 16384×2×2 volume: few voxels, but a square crop of 16384² per slice."""
    return _bad_flair(folder, lambda p: write_nifti(p, np.ones((16384, 2, 2), np.float32)))


def _int16_with_scaling(slope: float, inter: float) -> Callable[[Path], Path]:
    def write(p: Path) -> Path:
        write_nifti(p, np.full(SHAPE, 1000, np.int16))
        return _patch_nifti(p, 112, "<ff", slope, inter)  # scl_slope, scl_inter

    return write


def scl_slope_overflow(folder: Path) -> Path:
    """int16 voxels of 1000 with scl_slope 1e38: 1e41 after scaling, beyond float32."""
    return _bad_flair(folder, _int16_with_scaling(1e38, 0.0))


def scl_slope_infinite(folder: Path) -> Path:
    """scl_slope = +Inf: every scaled voxel is infinite."""
    return _bad_flair(folder, _int16_with_scaling(float("inf"), 0.0))


def scl_inter_nan(folder: Path) -> Path:
    """scl_slope = 1 with scl_inter = NaN: every scaled voxel is NaN."""
    return _bad_flair(folder, _int16_with_scaling(1.0, float("nan")))


def float64_beyond_float32(folder: Path) -> Path:
    """float64 voxels of 1e300: finite as stored, infinite once cast to float32."""
    return _bad_flair(folder, lambda p: write_nifti(p, np.full(SHAPE, 1e300)))


def truncated_gz(folder: Path) -> Path:
    """A ``.nii.gz`` cut in half: the header is intact, the voxels end early."""

    def write(p: Path) -> Path:
        write_nifti(p, np.random.default_rng(1).normal(size=(30, 30, 30)).astype(np.float32))
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
        return p

    return _bad_flair(folder, write)


def empty_nifti(folder: Path) -> Path:
    """A zero-byte ``.nii.gz``."""

    def write(p: Path) -> Path:
        p.write_bytes(b"")
        return p

    return _bad_flair(folder, write)


# --------------------------------------------------------------------------- DICOM


def dicom_rescale_overflow(folder: Path) -> Path:
    """One slice with RescaleSlope 1e38: 16-bit pixels reach 3e42 HU."""
    bad = dicom_series(folder / "series")[1]
    return _edit_dicom(bad, lambda ds: setattr(ds, "RescaleSlope", "1e38"))


def dicom_rescale_nan(folder: Path) -> Path:
    """One slice with RescaleSlope NaN."""
    bad = dicom_series(folder / "series")[1]
    return _edit_dicom(bad, lambda ds: setattr(ds, "RescaleSlope", "NaN"))


def dicom_huge_rows(folder: Path) -> Path:
    """One slice whose header declares 8000×8000 pixels over 128×128 of pixel data."""

    def edit(ds: pydicom.Dataset) -> None:
        ds.Rows = 8000
        ds.Columns = 8000

    bad = dicom_series(folder / "series")[1]
    return _edit_dicom(bad, edit)


# --------------------------------------------------------------------------- images


def png_1_by_100000(folder: Path) -> Path:
    """A 1-pixel-high, 100000-pixel-wide PNG (a few hundred bytes)."""
    bad = kaggle_root(folder) / "yes" / "strip.png"
    bad.write_bytes(png_bytes(100_000, 1))
    return bad


def png_9400_squared(folder: Path) -> Path:
    """An ~86 KB PNG of 9400×9400 pixels: under Pillow's bomb limit, 88 M pixels decoded."""
    bad = kaggle_root(folder) / "yes" / "huge.png"
    bad.write_bytes(png_bytes(9400, 9400))
    return bad


def png_extreme_aspect(folder: Path) -> Path:
    """A 2000×20 PNG: small, but 100:1 — the square crop and the plots degenerate."""
    bad = kaggle_root(folder) / "no" / "sliver.png"
    bad.write_bytes(png_bytes(2000, 20))
    return bad


def _jpeg_claiming(width: int, height: int) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")  # baseline SOF0: length, precision, height, width
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def jpeg_lying_header(folder: Path) -> Path:
    """A 16×16 JPEG whose frame header claims 8000×8000 pixels (64 M, under Pillow's limit)."""
    bad = kaggle_root(folder) / "yes" / "liar.jpg"
    bad.write_bytes(_jpeg_claiming(8000, 8000))
    return bad


def jpeg_truncated(folder: Path) -> Path:
    """A 64×64 JPEG of noise cut in half (no end-of-image marker).

    (A header that lies *within* the caps — 4000×4000 over 16×16 of data — is decoded by
    libjpeg with the missing rows filled in: bounded, and not an error.)
    """
    import io

    buf = io.BytesIO()
    noise = np.random.default_rng(2).integers(0, 255, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(buf, format="JPEG", quality=95)
    bad = kaggle_root(folder) / "yes" / "cut.jpg"
    bad.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return bad


# --------------------------------------------------------------------------- tables


def _survival(folder: Path, time: str, age: str = "60.5") -> Path:
    brats_case(folder)
    csv = folder / "survival_info.csv"
    csv.write_text(f"Brats20ID,Age,Survival_days,Extent_of_Resection\n{CASE_ID},{age},{time},GTR\n")
    return csv


def survival_1e308(folder: Path) -> Path:
    """Survival_days = 1e308 (finite, and 1e305 years)."""
    return _survival(folder, "1e308")


def survival_negative(folder: Path) -> Path:
    """Survival_days = -30."""
    return _survival(folder, "-30")


def survival_nan(folder: Path) -> Path:
    """Survival_days = NaN... spelled as a number."""
    return _survival(folder, "nan")


def age_out_of_range(folder: Path) -> Path:
    """Age = 1e308 years."""
    return _survival(folder, "400", age="1e308")


def hecktor_rfs_1e308(folder: Path) -> Path:
    """A HECKTOR endpoint CSV with RFS = 1e308 days."""
    ct = np.full((10, 11, 9), -1000.0, np.float32)
    write_nifti(folder / "imagesTr" / "CHUM-001__CT.nii.gz", ct)
    write_nifti(folder / "imagesTr" / "CHUM-001__PT.nii.gz", np.ones((10, 11, 9), np.float32))
    write_nifti(folder / "labelsTr" / "CHUM-001.nii.gz", np.zeros((10, 11, 9), np.uint8))
    csv = folder / "hecktor2022_endpoint_training.csv"
    csv.write_text("PatientID,Relapse,RFS\nCHUM-001,1,1e308\n")
    return csv


# --------------------------------------------------------------------------- folders


def brats_and_kaggle_in_one_root(folder: Path) -> Path:
    """A BraTS case folder beside ``yes/`` and ``no/``, a broken file in each layout.

    Returns the root; :data:`MIXED_BROKEN` names the two broken files in it.
    """
    files = brats_case(folder)
    files["t1"].write_bytes(b"not gzip at all")
    kaggle_root(folder)
    (folder / "yes" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return folder


MIXED_BROKEN = (f"{CASE_ID}/{CASE_ID}_t1.nii.gz", "yes/broken.png")


def unreadable_entries(folder: Path) -> Path:
    """A Kaggle folder with a dangling link, a FIFO, a folder named like an image and one
    corrupt image among good ones. (Tests run as root, so ``chmod 000`` would block nothing.)

    Returns the root; :data:`UNREADABLE` names the four entries in it.
    """
    root = kaggle_root(folder)
    os.symlink(root / "gone.png", root / "yes" / "dangling.png")
    os.mkfifo(root / "no" / "pipe.png")
    (root / "no" / "folder.png").mkdir()
    (root / "yes" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x01" * 30)
    return root


UNREADABLE = ("yes/dangling.png", "no/pipe.png", "no/folder.png", "yes/corrupt.png")


def _nnunet(folder: Path, json_bytes: bytes) -> Path:
    root = folder / "Dataset001_Brain"
    write_nifti(root / "imagesTr" / "case_0000.nii.gz", np.ones(SHAPE, np.float32))
    write_nifti(root / "labelsTr" / "case.nii.gz", np.zeros(SHAPE, np.uint8))
    (root / "dataset.json").write_bytes(json_bytes)
    return root / "dataset.json"


def nnunet_json_list(folder: Path) -> Path:
    """An nnU-Net ``dataset.json`` that is a JSON list."""
    return _nnunet(folder, json.dumps([{"channel_names": {"0": "FLAIR"}}]).encode())


def nnunet_json_deep(folder: Path) -> Path:
    """An nnU-Net ``dataset.json`` nested 100 000 levels deep."""
    return _nnunet(folder, b"[" * 100_000 + b"]" * 100_000)


def nnunet_json_not_utf8(folder: Path) -> Path:
    """An nnU-Net ``dataset.json`` in Latin-1 bytes that are not UTF-8."""
    return _nnunet(folder, b'{"channel_names": {"0": "FL\xc4IR\xff"}}')


def msd_path_escapes(folder: Path) -> Path:
    """An MSD ``dataset.json`` whose training image points outside the dataset folder."""
    root = folder / "Task01_BrainTumour"
    write_nifti(root / "imagesTr" / "BRATS_001.nii.gz", np.ones((*SHAPE, 4), np.float32))
    write_nifti(folder / "outside.nii.gz", np.ones((*SHAPE, 4), np.float32))
    meta = {
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "edema"},
        "training": [{"image": "../outside.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}],
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root / "dataset.json"


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class DataCase:
    """One hostile input and what must refuse it.

    Attributes:
        make: Writes the case into an empty folder; returns the hostile path.
        reader: What reads it: ``nifti``, ``dicom``, ``image``, ``table``, ``json`` or
            ``folder`` (a whole root; ``lines`` names the entries).
        error: Name of the ``tumorscope.data.errors`` class of the fault.
        fault: Words the fault line holds (case-insensitive).
        lines: Paths inside the root that must each have their own line (default: the
            returned path).
    """

    make: Callable[[Path], Path]
    reader: str
    error: str
    fault: str
    lines: tuple[str, ...] = ()


CASES: dict[str, DataCase] = {
    "rgb_nifti": DataCase(rgb_nifti, "nifti", "VoxelTypeError", "colour"),
    "complex_512_cubed": DataCase(complex_512_cubed, "nifti", "VoxelTypeError", "complex"),
    "voxels_2_pow_40": DataCase(voxels_2_pow_40, "nifti", "VolumeTooLargeError", "voxels"),
    "side_too_long": DataCase(side_too_long, "nifti", "VolumeTooLargeError", "side above"),
    "scl_slope_overflow": DataCase(scl_slope_overflow, "nifti", "ValueRangeError", "float32"),
    "scl_slope_infinite": DataCase(scl_slope_infinite, "nifti", "ValueRangeError", "scl_slope"),
    "scl_inter_nan": DataCase(scl_inter_nan, "nifti", "ValueRangeError", "scl_inter is nan"),
    "float64_beyond_float32": DataCase(
        float64_beyond_float32, "nifti", "ValueRangeError", "float32"
    ),
    "truncated_gz": DataCase(truncated_gz, "nifti", "TruncatedFileError", "truncated"),
    "empty_nifti": DataCase(empty_nifti, "nifti", "EmptyFileError", "empty"),
    "dicom_rescale_overflow": DataCase(
        dicom_rescale_overflow, "dicom", "ValueRangeError", "RescaleSlope"
    ),
    "dicom_rescale_nan": DataCase(dicom_rescale_nan, "dicom", "ValueRangeError", "RescaleSlope"),
    "dicom_huge_rows": DataCase(dicom_huge_rows, "dicom", "VolumeTooLargeError", "side above"),
    "png_1_by_100000": DataCase(png_1_by_100000, "image", "ImageTooLargeError", "per side"),
    "png_9400_squared": DataCase(png_9400_squared, "image", "ImageTooLargeError", "per side"),
    "png_extreme_aspect": DataCase(png_extreme_aspect, "image", "DimensionError", "aspect"),
    "jpeg_lying_header": DataCase(jpeg_lying_header, "image", "ImageTooLargeError", "8000"),
    "jpeg_truncated": DataCase(jpeg_truncated, "image", "TruncatedFileError", "truncated"),
    "survival_1e308": DataCase(survival_1e308, "table", "SurvivalValueError", "100 years"),
    "survival_negative": DataCase(survival_negative, "table", "SurvivalValueError", "negative"),
    "survival_nan": DataCase(survival_nan, "table", "SurvivalValueError", "not finite"),
    "age_out_of_range": DataCase(age_out_of_range, "table", "ClinicalValueError", "years"),
    "hecktor_rfs_1e308": DataCase(hecktor_rfs_1e308, "table", "SurvivalValueError", "100 years"),
    "brats_and_kaggle_in_one_root": DataCase(
        brats_and_kaggle_in_one_root, "folder", "DataError", "", MIXED_BROKEN
    ),
    "unreadable_entries": DataCase(unreadable_entries, "folder", "DataError", "", UNREADABLE),
    "nnunet_json_list": DataCase(nnunet_json_list, "json", "DatasetJsonError", "JSON list"),
    "nnunet_json_deep": DataCase(nnunet_json_deep, "json", "DatasetJsonError", "deeply"),
    "nnunet_json_not_utf8": DataCase(nnunet_json_not_utf8, "json", "DatasetJsonError", "UTF-8"),
    "msd_path_escapes": DataCase(msd_path_escapes, "json", "DatasetJsonError", "outside"),
}
