"""Who a DICOM file is about — so that it never reaches an output name, a log or a report.

tumorscope carries only geometry and pixels out of a DICOM file; the identifying
attributes of the DICOM PS3.15 Annex E basic profile are never copied into results. What
can still carry identity is a *file or folder name* (``DOE^JOHN/``, ``12345678.dcm``):
:func:`identity_terms` reads the identifying attributes of a series' first file, and
:func:`carries_identity` tells whether a name contains any of them, so outputs can be named
by a pseudonym instead.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path

import pydicom

# The attributes of PS3.15 Annex E (basic profile) that name or point to a person, a visit
# or an institution and are kept as text; dates are in the list so a date-named file counts.
IDENTITY_ATTRIBUTES = (
    "PatientName", "PatientID", "OtherPatientIDs", "OtherPatientNames", "PatientBirthDate",
    "PatientBirthName", "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers",
    "AccessionNumber", "StudyID", "StudyDate", "SeriesDate", "AcquisitionDate",
    "ContentDate", "InstitutionName", "InstitutionAddress", "ReferringPhysicianName",
    "PerformingPhysicianName", "OperatorsName", "MedicalRecordLocator", "StationName",
)  # fmt: skip
# Shorter pieces ("MR", "CT", "1") say nothing about a person and would match everywhere.
MIN_TERM = 3


def _first_dicom(path: Path) -> Path | None:
    if path.is_file():
        return path
    if path.is_dir():
        return next((p for p in sorted(path.iterdir()) if p.suffix.lower() == ".dcm"), None)
    return None


def identity_terms(path: str | Path) -> frozenset[str]:
    """Lower-case identifying strings of a DICOM file or series folder (empty if none or
    unreadable); read from the header only, pixels untouched."""
    first = _first_dicom(Path(path))
    if first is None:
        return frozenset()
    try:
        with warnings.catch_warnings():  # pydicom's warnings quote the values they doubt
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(
                first, stop_before_pixels=True, specific_tags=list(IDENTITY_ATTRIBUTES)
            )
    except Exception:  # not DICOM or unreadable: its reader names the fault elsewhere
        return frozenset()
    terms: set[str] = set()
    for name in IDENTITY_ATTRIBUTES:
        value = ds.get(name)
        if value is None:
            continue
        values = value if isinstance(value, pydicom.multival.MultiValue) else [value]
        for v in values:
            text = str(v).strip().lower()
            pieces = {text, *re.split(r"[\^\s,]+", text)}
            terms |= {p for p in pieces if len(p) >= MIN_TERM}
    return frozenset(terms)


def carries_identity(name: str, terms: frozenset[str]) -> bool:
    """True when ``name`` contains one of the identifying ``terms`` (case-insensitive)."""
    low = name.lower()
    return any(t in low for t in terms)


def pseudonym(path: str | Path) -> str:
    """A stable stand-in name for an input whose name carries identity: ``dicom-<10 hex>``."""
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()
    return f"dicom-{digest[:10]}"
