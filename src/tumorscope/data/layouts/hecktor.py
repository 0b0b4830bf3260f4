"""HECKTOR 2022 layout: ``imagesTr/<id>__CT.nii.gz``, ``<id>__PT.nii.gz``, ``labelsTr/<id>.nii.gz``.

Labels: 1 = GTVp (primary tumour), 2 = GTVn (lymph nodes). Outcomes come from an
``*endpoint*.csv`` (``PatientID,Relapse,RFS``: Relapse 1 = event, RFS in days) and
covariates from a ``*clinical*.csv`` (``PatientID`` plus numeric columns; ``Gender``
M → 1.0, F → 0.0; empty cells → None). PET is resampled onto the CT grid at load time
(:func:`tumorscope.data.layout.load_case`). A folder holding one ``<id>__CT.nii.gz`` (and its
``<id>__PT.nii.gz``) is one case, as ``Predictor.predict_volume`` takes it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from tumorscope.data.errors import (
    ClinicalValueError,
    CSVFormatError,
    DuplicatePatientError,
    MissingChannelError,
    MissingFileError,
    SurvivalValueError,
)
from tumorscope.data.layouts.base import Discovery, Layout, entries, keep_readable, region_labels
from tumorscope.data.limits import clinical_fault, survival_fault
from tumorscope.data.tables import parse_number, read_csv_table
from tumorscope.data.types import Case, DataError, Outcome

logger = logging.getLogger(__name__)

SOURCE = "hecktor"
LABELS = region_labels("HECKTOR", {1: "GTVp", 2: "GTVn"})
IMAGE_DIRS = ("imagesTr", "imagesTs")
_MODALITY_CHANNEL = {"ct": "ct", "pt": "pet"}
_FILE_RE = re.compile(r"^(?P<pid>.+)__(?P<mod>CT|PT)\.nii(\.gz)?$", re.IGNORECASE)
_GENDER = {"m": 1.0, "male": 1.0, "f": 0.0, "female": 0.0}


def _image_dirs(root: Path) -> list[Path]:
    return [root / d for d in IMAGE_DIRS if (root / d).is_dir()]


def is_hecktor_root(folder: Path) -> bool:
    """True if ``folder`` holds ``imagesTr/`` (or ``imagesTs/``) with ``*__CT.nii.gz`` files."""
    return any(
        _FILE_RE.match(p.name) and p.name.lower().split("__")[-1].startswith("ct")
        for d in _image_dirs(folder)
        for p in entries(d)
    )


def claimed_subfolders(folder: Path) -> set[Path]:
    """Subfolders that belong to a HECKTOR root (not searched for other layouts)."""
    names = (*IMAGE_DIRS, "labelsTr", "labelsTs")
    return {folder / n for n in names if (folder / n).is_dir()}


def discover_hecktor(root: str | Path) -> tuple[list[Case], dict[str, Outcome], list[DataError]]:
    """List the cases and endpoint/clinical rows of one HECKTOR root (no voxel data).

    Args:
        root: Folder holding ``imagesTr/`` (and ``labelsTr/``) plus the CSV files.

    Returns:
        ``(cases, outcomes, problems)``; a case without PET is listed (load_case decides).
    """
    root = Path(root)
    problems: list[DataError] = []
    cases: list[Case] = []
    for img_dir in _image_dirs(root):
        files: dict[str, dict[str, Path]] = {}
        for p in entries(img_dir):
            m = _FILE_RE.match(p.name)
            if not (m and p.is_file()):
                continue
            ch = _MODALITY_CHANNEL[m.group("mod").lower()]
            per = files.setdefault(m.group("pid"), {})
            if ch in per:
                problems.append(
                    DuplicatePatientError(
                        p, f"second {ch} file for {m.group('pid')} (first: {per[ch]})"
                    )
                )
                continue
            per[ch] = p
        label_dir = root / img_dir.name.replace("images", "labels")
        for pid, chans in files.items():
            if "ct" not in chans:
                problems.append(
                    MissingChannelError(
                        chans["pet"], f"PET without a CT ({pid}__CT.nii.gz missing)"
                    )
                )
                continue
            if "pet" not in chans:
                problems.append(
                    MissingChannelError(chans["ct"], f"CT without a PET ({pid}__PT.nii.gz missing)")
                )
            mask = _label_file(label_dir, pid)
            cases.append(
                Case(patient_id=pid, source=SOURCE, channels=chans, mask=mask, labels=LABELS)
            )
        if label_dir.is_dir():
            for p in entries(label_dir):
                pid = p.name.split(".nii")[0]
                if p.name.lower().endswith((".nii", ".nii.gz")) and pid not in files:
                    problems.append(
                        MissingFileError(p, f"label file without images ({pid}__CT.nii.gz missing)")
                    )
    outcomes, probs = _read_outcomes(root)
    problems.extend(probs)
    return cases, outcomes, problems


def _label_file(label_dir: Path, pid: str) -> Path | None:
    for suffix in (".nii.gz", ".nii"):
        p = label_dir / f"{pid}{suffix}"
        if p.is_file():
            return p
    return None


def _csvs(root: Path, word: str) -> list[Path]:
    return sorted(p for p in root.glob("*.csv") if word in p.name.lower() and p.is_file())


def _read_outcomes(root: Path) -> tuple[dict[str, Outcome], list[DataError]]:
    problems: list[DataError] = []
    clinical: dict[str, dict[str, float | None]] = {}
    for path in _csvs(root, "clinical"):
        rows, probs = read_csv_table(path, ("PatientID",))
        problems.extend(probs)
        for line, row in rows:
            pid = row["PatientID"]
            if pid in clinical:
                problems.append(
                    DuplicatePatientError(path, f"line {line} ({pid}): patient listed twice")
                )
                continue
            clinical[pid] = _clinical_row(path, line, row, problems)
    outcomes: dict[str, Outcome] = {}
    for path in _csvs(root, "endpoint"):
        rows, probs = read_csv_table(path, ("PatientID", "Relapse", "RFS"))
        problems.extend(probs)
        for line, row in rows:
            pid = row["PatientID"]
            where = f"line {line} ({pid})"
            if pid in outcomes:
                problems.append(DuplicatePatientError(path, f"{where}: patient listed twice"))
                continue
            fault = _endpoint_fault(row)
            if fault:
                problems.append(SurvivalValueError(path, f"{where}: {fault}"))
                continue
            outcomes[pid] = Outcome(
                patient_id=pid,
                time=float(row["RFS"]),
                event=float(row["Relapse"]) == 1.0,
                clinical=clinical.get(pid, {}),
                source_file=path,
            )
    return outcomes, problems


def _endpoint_fault(row: dict[str, str]) -> str | None:
    try:
        rfs = float(row["RFS"])
    except ValueError:
        return f"RFS {row['RFS']!r} is not a number of days"
    fault = survival_fault(rfs)
    if fault is not None:
        return f"RFS {row['RFS']!r} {fault}"
    if row["Relapse"] not in ("0", "1", "0.0", "1.0"):
        return f"Relapse {row['Relapse']!r} is not 0 or 1"
    return None


def _clinical_row(
    path: Path, line: int, row: dict[str, str], problems: list[DataError]
) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for col, text in row.items():
        if col in ("PatientID", "CenterID", "Task 1", "Task 2"):
            continue
        if col.lower() == "gender" and text.lower() in _GENDER:
            out[col] = _GENDER[text.lower()]
            continue
        try:
            value = parse_number(text)
        except ValueError:
            problems.append(
                CSVFormatError(
                    path, f"line {line} ({row['PatientID']}): {col} {text!r} is not a number"
                )
            )
            value = None
        fault = None if value is None else clinical_fault(col, value)
        if fault is not None:
            problems.append(
                ClinicalValueError(
                    path, f"line {line} ({row['PatientID']}): {col} {text!r} {fault}"
                )
            )
            value = None
        out[col] = value
    return out


def _files(folder: Path, mod: str, pid: str | None = None) -> list[Path]:
    """``<id>__<mod>.nii(.gz)`` files directly in ``folder`` (of patient ``pid`` if given)."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [
        p
        for p in entries
        if (m := _FILE_RE.match(p.name))
        and m.group("mod").lower() == mod
        and pid in (None, m.group("pid"))
        and p.is_file()
    ]


class HecktorLayout(Layout):
    """HECKTOR 2022 PET/CT: ``imagesTr/`` CT and PET files, ``labelsTr/`` masks, CSVs."""

    name = SOURCE
    labels = LABELS
    reference_channel = "ct"
    resampled_channels = frozenset({"pet"})  # PET has its own, coarser grid by design

    def detect(self, folder: Path) -> bool:
        return is_hecktor_root(folder)

    def claimed(self, folder: Path) -> set[Path]:
        return claimed_subfolders(folder)

    def discover(self, root: Path, *, max_voxels: int) -> Discovery:
        cases, outcomes, problems = discover_hecktor(root)
        kept, bad, _ = keep_readable(cases, max_voxels)
        on_disk = sum(len(_files(d, "ct")) for d in _image_dirs(root))
        return Discovery(
            cases=kept, outcomes=outcomes, problems=problems + bad, left_out=on_disk - len(kept)
        )

    def read_case(self, path: Path) -> tuple[Case | None, list[DataError]]:
        ct = _files(path, "ct") if path.is_dir() else []
        m = _FILE_RE.match(ct[0].name) if len(ct) == 1 else None
        if m is None:
            return None, []
        pid = m.group("pid")
        channels = {"ct": ct[0]}
        pet = _files(path, "pt", pid)
        if len(pet) == 1:  # a case without PET is still one; load_case names what is missing
            channels["pet"] = pet[0]
        return Case(patient_id=pid, source=SOURCE, channels=channels, labels=LABELS), []

    def explain_absent(self, folders: Sequence[Path]) -> str:
        return "no imagesTr/*__CT.nii.gz (HECKTOR)"
