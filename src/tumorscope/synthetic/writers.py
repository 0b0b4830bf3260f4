"""Write rendered patients in the real on-disk layouts (BraTS 2020, HECKTOR 2022) and CSVs.

NIfTI files go through nibabel, whose gzip writer has a fixed header time (mtime 0) and
compression level 1, so the same seed gives the same bytes and writing stays fast.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tumorscope.data.readers import save_nifti
from tumorscope.synthetic.params import PatientParams

#: CSV names of the HECKTOR 2022 training release.
HECKTOR_ENDPOINT_CSV = "hecktor2022_endpoint_training.csv"
HECKTOR_CLINICAL_CSV = "hecktor2022_clinical_info_training.csv"
HECKTOR_CLINICAL_COLUMNS: tuple[str, ...] = (
    "Age",
    "Gender",
    "Tobacco",
    "Alcohol",
    "Performance status",
    "HPV status (0=-, 1=+)",
    "Surgery",
    "Chemotherapy",
)
BRATS_SURVIVAL_CSV = "survival_info.csv"
TRUE_RISK_CSV = "true_risk.csv"


def lps_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """BraTS-style affine: voxel axes run to the left and posterior (``diag(−sx, −sy, sz)``),
    with the world origin at the volume centre.
    """
    sx, sy, sz = spacing
    aff = np.diag([-sx, -sy, sz, 1.0])
    aff[:3, 3] = [(shape[0] - 1) / 2.0 * sx, (shape[1] - 1) / 2.0 * sy, -(shape[2] - 1) / 2.0 * sz]
    return aff


def ras_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """RAS affine ``diag(sx, sy, sz)`` with the world origin at the volume centre."""
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = [-(n - 1) / 2.0 * s for n, s in zip(shape, spacing, strict=True)]
    return aff


def write_nifti(ras: np.ndarray, spacing: Sequence[float], path: Path, *, lps: bool = False) -> int:
    """Write a RAS-ordered volume as ``.nii.gz``; return the bytes written.

    Args:
        ras: ``(X, Y, Z)`` array in RAS voxel order (its dtype is kept).
        spacing: Voxel size, mm.
        path: Output file.
        lps: Store like BraTS (x and y axes flipped, affine ``diag(−sx, −sy, sz)``).
    """
    if lps:
        data, affine = ras[::-1, ::-1, :], lps_affine(ras.shape, spacing)
    else:
        data, affine = ras, ras_affine(ras.shape, spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_nifti(data, affine, path).stat().st_size


def _write_csv(path: Path, header: Sequence[str], rows: list[list[str]]) -> int:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path.stat().st_size


def _number(value: float | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return f"{value:g}"


def write_brats_csvs(root: Path, cohort: Sequence[PatientParams]) -> list[Path]:
    """Write ``survival_info.csv`` (BraTS 2020 columns) and ``true_risk.csv`` into ``root``.

    Censored patients get ``ALIVE (N days later)``; a missing resection status is ``NA``
    and a missing age an empty cell.
    """
    rows = []
    for p in cohort:
        days = f"{p.time:.0f}" if p.event else f"ALIVE ({p.time:.0f} days later)"
        eor = p.covariates.get("Extent_of_Resection")
        rows.append(
            [
                p.patient_id,
                _number(p.covariates.get("Age")),
                days,
                "NA" if eor is None else str(eor),
            ]
        )
    survival = root / BRATS_SURVIVAL_CSV
    _write_csv(survival, ("Brats20ID", "Age", "Survival_days", "Extent_of_Resection"), rows)
    return [survival, write_true_risk(root, cohort)]


def write_hecktor_csvs(root: Path, cohort: Sequence[PatientParams]) -> list[Path]:
    """Write the HECKTOR endpoint and clinical CSVs and ``true_risk.csv`` into ``root``."""
    endpoint = root / HECKTOR_ENDPOINT_CSV
    _write_csv(
        endpoint,
        ("PatientID", "Relapse", "RFS"),
        [[p.patient_id, "1" if p.event else "0", f"{p.time:.0f}"] for p in cohort],
    )
    clinical = root / HECKTOR_CLINICAL_CSV
    _write_csv(
        clinical,
        ("PatientID", *HECKTOR_CLINICAL_COLUMNS),
        [
            [p.patient_id, *(_number(p.covariates.get(c)) for c in HECKTOR_CLINICAL_COLUMNS)]
            for p in cohort
        ],
    )
    return [endpoint, clinical, write_true_risk(root, cohort)]


def write_true_risk(root: Path, cohort: Sequence[PatientParams]) -> Path:
    """Write the sidecar ``true_risk.csv`` (``patient_id,true_log_hazard,observable_log_hazard``)."""
    path = root / TRUE_RISK_CSV
    _write_csv(
        path,
        ("patient_id", "true_log_hazard", "observable_log_hazard"),
        [[p.patient_id, f"{p.log_hazard:.6f}", f"{p.observable_log_hazard:.6f}"] for p in cohort],
    )
    return path
