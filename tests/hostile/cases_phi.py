"""A DICOM series carrying a planted identity, to search every output and log for it.

``canary_series(folder)`` writes a 4-slice CT series (from pydicom's own ``CT_small.dcm``)
whose identifying attributes (PS3.15 Annex E basic profile) all hold canary values;
:data:`CANARIES` are the strings that must never appear in anything tumorscope writes.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

SERIES_UID = "1.2.826.0.1.3680043.8.498.31415926535897932384"
CANARIES = (
    "CANARY", "canary", "Canary", "7731", "19010203", "19020304", "31415926535897932384",
)  # fmt: skip


def canary_series(folder: Path, n_slices: int = 4, name: str = "series") -> Path:
    """Write the series into ``folder/<name>`` and return that folder."""
    out = folder / name
    out.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    z = float(base.ImagePositionPatient[2])
    for k in range(n_slices):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.PatientName = "CANARY^PATIENT^Q"
        ds.PatientID = "CANARY-7731"
        ds.OtherPatientIDs = "CANARYOTHER7731"
        ds.PatientBirthDate = "19010203"
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "19020304"
        ds.InstitutionName = "Canary General Hospital"
        ds.InstitutionAddress = "1 Canary Wharf"
        ds.ReferringPhysicianName = "CANARY^DOCTOR"
        ds.AccessionNumber = "CANARYACC7731"
        ds.StudyID = "CANARYSTUDY"
        ds.StationName = "CANARYSTATION"
        ds.SeriesDescription = "canary series"
        ds.SeriesInstanceUID = SERIES_UID
        ds.StudyInstanceUID = SERIES_UID + ".1"
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImagePositionPatient = [base.ImagePositionPatient[0], base.ImagePositionPatient[1], z]
        ds.InstanceNumber = k + 1
        ds.save_as(out / f"IM{k + 1:04d}.dcm")
        z += 5.0
    return out


def named_after_the_patient(folder: Path) -> Path:
    """The same series in a folder named after the patient (as PACS exports often are)."""
    return canary_series(folder, name="CANARY^PATIENT")
