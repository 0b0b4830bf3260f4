"""Factories that write tiny real-format datasets (NIfTI, JPEG/PNG, DICOM) into a folder.

Each factory is a plain function (importable) and also a pytest fixture of the same name
that returns it, e.g. ``make_brats(tmp_path / "brats", n_patients=3, year=2020)``. Voxel
values are deterministic so tests can check them: channel ``k`` of a BraTS case holds
``100 * (k + 1) + patient + noise`` and the mask is a cube of labels.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

BRATS_MODS_LEGACY = ("flair", "t1", "t1ce", "t2")
BRATS_MODS_2023 = ("t2f", "t1n", "t1c", "t2w")


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write ``data`` as NIfTI-1 (gzip if the name ends in .gz) with qform and sform set."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aff = np.diag([1.0, 1.0, 1.0, 1.0]) if affine is None else affine
    img = nib.Nifti1Image(data, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    nib.save(img, path)
    return path


def brats_case_name(year: int, i: int) -> str:
    """Case folder name as each BraTS year spells it (``i`` is 1-based)."""
    return {
        2018: f"Brats18_TCIA01_{i}_1",
        2019: f"BraTS19_TCIA01_{i}_1",
        2020: f"BraTS20_Training_{i:03d}",
        2021: f"BraTS2021_{i:05d}",
        2023: f"BraTS-GLI-{i:05d}-000",
    }[year]


def brats_channel_value(k: int, patient: int) -> float:
    """Mean intensity of channel ``k`` (canonical order flair, t1, t1ce, t2) of patient ``patient``."""
    return 100.0 * (k + 1) + patient


def brats_mask(shape: tuple[int, int, int], year: int) -> np.ndarray:
    """Nested cubes: oedema (2) around necrosis (1) and enhancing tumour (4, or 3 in 2023)."""
    m = np.zeros(shape, dtype=np.uint8)
    c = [s // 2 for s in shape]
    m[c[0] - 4 : c[0] + 4, c[1] - 4 : c[1] + 4, c[2] - 3 : c[2] + 3] = 2
    m[c[0] - 2 : c[0] + 2, c[1] - 2 : c[1] + 2, c[2] - 2 : c[2] + 2] = 3 if year == 2023 else 4
    m[c[0] - 1 : c[0] + 1, c[1] - 1 : c[1] + 1, c[2] - 1 : c[2] + 1] = 1
    return m


def make_brats(
    root: Path,
    *,
    n_patients: int = 3,
    shape: tuple[int, int, int] = (24, 28, 20),
    year: int = 2020,
    survival: bool = True,
    true_risk: bool = False,
    with_seg: bool = True,
    affine: np.ndarray | None = None,
    seed: int = 0,
) -> Path:
    """Write a BraTS root (``year`` 2018–2021 or 2023 naming) with ``n_patients`` cases.

    Survival rows alternate event (``"400"``-like) and censored (``"ALIVE (N days later)"``);
    ``true_risk`` adds a ``true_risk.csv`` sidecar with ``true_log_hazard = 0.1 * i``.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    mods = BRATS_MODS_2023 if year == 2023 else BRATS_MODS_LEGACY
    sep = "-" if year == 2023 else "_"
    ids = []
    for i in range(1, n_patients + 1):
        name = brats_case_name(year, i)
        ids.append(name)
        for k, mod in enumerate(mods):
            data = (brats_channel_value(k, i) + rng.normal(0, 1, shape)).astype(np.float32)
            write_nifti(root / name / f"{name}{sep}{mod}.nii.gz", data, affine)
        if with_seg:
            write_nifti(root / name / f"{name}{sep}seg.nii.gz", brats_mask(shape, year), affine)
    if survival:
        id_col = {2018: "BraTS18ID", 2019: "BraTS19ID"}.get(year, f"Brats{year % 100}ID")
        time_col = "Survival" if year in (2018, 2019) else "Survival_days"
        res_col = "ResectionStatus" if year == 2019 else "Extent_of_Resection"
        rows = []
        for i, pid in enumerate(ids, start=1):
            surv = f"{100 * i}" if i % 2 else f"ALIVE ({100 * i} days later)"
            rows.append([pid, f"{50 + i}.5", surv, ("GTR", "STR", "NA")[i % 3]])
        header = [id_col, "Age", time_col] + ([] if year == 2018 else [res_col])
        write_csv(root / "survival_info.csv", header, [r[: len(header)] for r in rows])
    if true_risk:
        write_csv(
            root / "true_risk.csv",
            ["patient_id", "true_log_hazard"],
            [[p, f"{0.1 * i}"] for i, p in enumerate(ids)],
        )
    return root


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    """Write a CSV with a header row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def kaggle_pixels(h: int, w: int, value: int) -> np.ndarray:
    """A smooth ``(H, W)`` uint8 ramp plus ``value`` (JPEG-friendly)."""
    ramp = np.add.outer(np.arange(h), np.arange(w)) % 64
    return np.clip(ramp + value, 0, 255).astype(np.uint8)


def make_kaggle(
    root: Path,
    *,
    n_yes: int = 3,
    n_no: int = 2,
    sizes: Sequence[tuple[int, int]] = ((40, 36), (52, 48)),
) -> Path:
    """Write a Kaggle yes/no folder: ``yes/Y<i>.jpg`` RGB JPEGs, ``no/N<i>.png`` greyscale PNGs
    (plus one ``no/<i> no.JPG``), mixed sizes."""
    for i in range(n_yes):
        h, w = sizes[i % len(sizes)]
        grey = kaggle_pixels(h, w, 100)
        (root / "yes").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.stack([grey] * 3, axis=-1)).save(root / "yes" / f"Y{i}.jpg", quality=95)
    for i in range(n_no):
        h, w = sizes[(i + 1) % len(sizes)]
        (root / "no").mkdir(parents=True, exist_ok=True)
        name = f"N{i}.png" if i else f"{i} no.JPG"
        fmt = "PNG" if name.endswith(".png") else "JPEG"
        Image.fromarray(kaggle_pixels(h, w, 20)).save(root / "no" / name, format=fmt)
    (root / "no" / "Thumbs.db").write_bytes(b"not an image")  # ignored: not an image extension
    return root


def make_kaggle4(
    root: Path,
    *,
    n_per_class: int = 2,
    splits: Sequence[str] = ("Training", "Testing"),
    size: tuple[int, int] = (30, 34),
) -> Path:
    """Write a Kaggle 4-class folder: ``<split>/<class>/<prefix>_<i>.jpg`` greyscale JPEGs."""
    for split in splits:
        for t, cls in enumerate(("glioma", "meningioma", "notumor", "pituitary")):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n_per_class):
                Image.fromarray(kaggle_pixels(*size, 30 * t)).save(
                    folder / f"{split[:2]}-{cls[:2]}_{i:04d}.jpg"
                )
    return root


def pet_linear(world: np.ndarray) -> np.ndarray:
    """PET phantom: a linear function of world position (mm), so trilinear resampling is exact."""
    return 2.0 * world[..., 0] + 3.0 * world[..., 1] + 1.0 * world[..., 2] + 500.0


def make_hecktor(
    root: Path,
    *,
    n_patients: int = 3,
    ct_shape: tuple[int, int, int] = (20, 22, 16),
    pet_factor: int = 2,
    endpoint: bool = True,
    clinical: bool = True,
    true_risk: bool = False,
) -> Path:
    """Write a HECKTOR 2022 root. CT is 1 mm isotropic; PET has ``pet_factor`` mm voxels over
    the same field of view (a different grid unless ``pet_factor == 1``) and holds
    :func:`pet_linear` of world position. Masks: a GTVp cube (1) and a GTVn cube (2)."""
    ids = [f"CHUM-{i:03d}" for i in range(1, n_patients + 1)]
    ct_aff = np.diag([1.0, 1.0, 1.0, 1.0])
    ct_aff[:3, 3] = (-10.0, -12.0, 5.0)
    pet_aff = ct_aff.copy()
    pet_aff[:3, :3] *= pet_factor
    pet_aff[:3, 3] += (pet_factor - 1) / 2.0  # voxel centres of the same field of view
    pet_shape = tuple(s // pet_factor for s in ct_shape)
    for n, pid in enumerate(ids):
        ct = np.full(ct_shape, -1000.0 + n, dtype=np.float32)
        ct[4:-4, 4:-4, 3:-3] = 40.0
        write_nifti(root / "imagesTr" / f"{pid}__CT.nii.gz", ct, ct_aff)
        ijk = np.stack(np.meshgrid(*[np.arange(s) for s in pet_shape], indexing="ij"), axis=-1)
        world = ijk @ pet_aff[:3, :3].T + pet_aff[:3, 3]
        write_nifti(
            root / "imagesTr" / f"{pid}__PT.nii.gz", pet_linear(world).astype(np.float32), pet_aff
        )
        mask = np.zeros(ct_shape, dtype=np.uint8)
        mask[6:10, 6:10, 5:8] = 1
        mask[12:14, 12:15, 8:10] = 2
        write_nifti(root / "labelsTr" / f"{pid}.nii.gz", mask, ct_aff)
    if endpoint:
        write_csv(
            root / "hecktor2022_endpoint_training.csv",
            ["PatientID", "Relapse", "RFS"],
            [[pid, i % 2, 300 + 10 * i] for i, pid in enumerate(ids)],
        )
    if clinical:
        header = [
            "PatientID",
            "Age",
            "Gender",
            "Tobacco",
            "Alcohol",
            "Performance status",
            "HPV status (0=-, 1=+)",
            "Surgery",
            "Chemotherapy",
        ]
        rows = [
            [pid, 60 + i, "MF"[i % 2], "" if i == 0 else 1, 0, 1, 1, "", 1]
            for i, pid in enumerate(ids)
        ]
        write_csv(root / "hecktor2022_clinical_info_training.csv", header, rows)
    if true_risk:
        write_csv(
            root / "true_risk.csv",
            ["patient_id", "true_log_hazard"],
            [[p, f"{-0.2 * i}"] for i, p in enumerate(ids)],
        )
    return root


MSD_MODALITY = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
MSD_LABELS = {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}
NNUNET_CHANNELS = {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}
NNUNET_LABELS: dict[str, Any] = {
    "background": 0,
    "edema": 1,
    "non-enhancing tumor": 2,
    "enhancing tumour": 3,
}


def msd_mask(shape: tuple[int, int, int]) -> np.ndarray:
    """MSD Task01 labels as nested cubes: edema (1) around non-enhancing (2) around enhancing (3)."""
    m = np.zeros(shape, dtype=np.uint8)
    c = [s // 2 for s in shape]
    m[c[0] - 4 : c[0] + 4, c[1] - 4 : c[1] + 4, c[2] - 3 : c[2] + 3] = 1
    m[c[0] - 2 : c[0] + 2, c[1] - 2 : c[1] + 2, c[2] - 2 : c[2] + 2] = 2
    m[c[0] - 1 : c[0] + 1, c[1] - 1 : c[1] + 1, c[2] - 1 : c[2] + 1] = 3
    return m


def file_channel_value(k: int, patient: int) -> float:
    """Mean intensity of channel ``k`` *in file order* (index in dataset.json) of ``patient``."""
    return 100.0 * (k + 1) + patient


def make_msd(
    root: Path,
    *,
    n_patients: int = 3,
    n_test: int = 0,
    shape: tuple[int, int, int] = (12, 13, 10),
    modality: Mapping[str, str] = MSD_MODALITY,
    labels: Mapping[str, str] = MSD_LABELS,
    seed: int = 0,
) -> Path:
    """Write an MSD ``Task01_BrainTumour``-style root: ``imagesTr/BRATS_NNN.nii.gz`` 4-D
    ``(X, Y, Z, len(modality))`` with channel k = :func:`file_channel_value` + noise,
    ``labelsTr/BRATS_NNN.nii.gz`` = :func:`msd_mask`, ``imagesTs/`` test images, ``dataset.json``."""
    rng = np.random.default_rng(seed)
    training, test = [], []
    for i in range(1, n_patients + n_test + 1):
        name = f"BRATS_{i:03d}.nii.gz"
        data = np.stack(
            [file_channel_value(k, i) + rng.normal(0, 1, shape) for k in range(len(modality))],
            axis=-1,
        ).astype(np.float32)
        folder = "imagesTr" if i <= n_patients else "imagesTs"
        write_nifti(root / folder / name, data)
        if i <= n_patients:
            write_nifti(root / "labelsTr" / name, msd_mask(shape))
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            test.append(f"./imagesTs/{name}")
    meta = {
        "name": "BRATS",
        "tensorImageSize": "4D",
        "modality": dict(modality),
        "labels": dict(labels),
        "numTraining": n_patients,
        "numTest": n_test,
        "training": training,
        "test": test,
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return root


def make_nnunet(
    root: Path,
    *,
    n_patients: int = 3,
    shape: tuple[int, int, int] = (12, 13, 10),
    channel_names: Mapping[str, str] = NNUNET_CHANNELS,
    labels: Mapping[str, Any] = NNUNET_LABELS,
    seed: int = 0,
) -> Path:
    """Write an nnU-Net v2 raw dataset ``DatasetXXX_Name``: ``imagesTr/<case>_000k.nii.gz``
    (channel k = :func:`file_channel_value` + noise), ``labelsTr/<case>.nii.gz`` =
    :func:`msd_mask` (edema 1, non-enhancing 2, enhancing 3) and ``dataset.json``."""
    rng = np.random.default_rng(seed)
    for i in range(1, n_patients + 1):
        case = f"BraTS_{i:03d}"
        for k in range(len(channel_names)):
            data = (file_channel_value(k, i) + rng.normal(0, 1, shape)).astype(np.float32)
            write_nifti(root / "imagesTr" / f"{case}_{k:04d}.nii.gz", data)
        write_nifti(root / "labelsTr" / f"{case}.nii.gz", msd_mask(shape))
    meta = {
        "channel_names": dict(channel_names),
        "labels": dict(labels),
        "numTraining": n_patients,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return root


def ct_small() -> pydicom.Dataset:
    """pydicom's bundled ``CT_small.dcm`` (128×128 CT slice)."""
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    return pydicom.dcmread(path)


def make_dicom_series(
    folder: Path,
    *,
    n_slices: int = 3,
    gaps: Sequence[float] | None = None,
    series_uids: Sequence[str] | None = None,
) -> Path:
    """Write a CT series built from ``CT_small.dcm``: slice ``k`` holds the original pixels
    plus ``10 * k`` and sits ``gaps`` mm (default 5 mm each) above the previous one. Files are
    named in reverse position order so that sorting by name would be wrong."""
    folder.mkdir(parents=True, exist_ok=True)
    base = ct_small()
    gaps = list(gaps) if gaps is not None else [5.0] * (n_slices - 1)
    uid = generate_uid()
    z = float(base.ImagePositionPatient[2])
    for k in range(n_slices):
        ds = ct_small()
        ds.ImagePositionPatient = [base.ImagePositionPatient[0], base.ImagePositionPatient[1], z]
        ds.InstanceNumber = k + 1
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = series_uids[k] if series_uids is not None else uid
        ds.PixelData = (base.pixel_array + 10 * k).astype(base.pixel_array.dtype).tobytes()
        ds.save_as(folder / f"IM{n_slices - k:04d}.dcm")
        if k < n_slices - 1:
            z += gaps[k]
    (folder / "README.txt").write_text("not DICOM; ignored")
    return folder


Factory = Callable[..., Path]


@pytest.fixture(name="make_brats")
def _make_brats_fixture() -> Factory:
    return make_brats


@pytest.fixture(name="make_kaggle")
def _make_kaggle_fixture() -> Factory:
    return make_kaggle


@pytest.fixture(name="make_kaggle4")
def _make_kaggle4_fixture() -> Factory:
    return make_kaggle4


@pytest.fixture(name="make_hecktor")
def _make_hecktor_fixture() -> Factory:
    return make_hecktor


@pytest.fixture(name="make_dicom_series")
def _make_dicom_series_fixture() -> Factory:
    return make_dicom_series


@pytest.fixture(name="make_msd")
def _make_msd_fixture() -> Factory:
    return make_msd


@pytest.fixture(name="make_nnunet")
def _make_nnunet_fixture() -> Factory:
    return make_nnunet


@pytest.fixture(name="write_nifti")
def _write_nifti_fixture() -> Callable[..., Path]:
    return write_nifti
