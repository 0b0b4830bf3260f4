"""Identity terms of a DICOM header, and names that carry them."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

from tumorscope.data.identity import carries_identity, identity_terms, pseudonym


def test_terms_come_from_the_identifying_attributes(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = "Doe^Jane^M"
    ds.PatientID = "AB12345"
    ds.InstitutionName = "St Elsewhere"
    ds.Modality = "CT"  # not identifying: never a term
    ds.save_as(tmp_path / "IM1.dcm")
    terms = identity_terms(tmp_path)
    assert {"doe", "jane", "ab12345", "elsewhere", "st elsewhere", "doe^jane^m"} <= terms
    assert "ct" not in terms and "m" not in terms  # too short to mean anyone
    assert carries_identity("DOE_JANE_2019", terms)
    assert carries_identity("export-ab12345", terms)
    assert not carries_identity("case_001", terms)


def test_no_dicom_no_terms_and_a_stable_pseudonym(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    assert identity_terms(tmp_path) == frozenset()
    assert identity_terms(tmp_path / "absent") == frozenset()
    (tmp_path / "bad.dcm").write_bytes(b"not dicom")
    assert identity_terms(tmp_path / "bad.dcm") == frozenset()
    a, b = pseudonym(tmp_path / "x"), pseudonym(tmp_path / "x")
    assert a == b and a.startswith("dicom-") and len(a) == 16 and a != pseudonym(tmp_path / "y")
