"""Nothing leaks: a canary identity planted in a DICOM series never reaches any output or
log of ``data inspect``, ``data validate`` or ``predict`` (DICOM PS3.15 Annex E)."""

from __future__ import annotations

from pathlib import Path

import pydicom
from cases_phi import CANARIES, canary_series, named_after_the_patient
from runner import TRACEBACK, run_cli

from tumorscope.data.identity import carries_identity, identity_terms, pseudonym


def _leaks(text: str) -> list[str]:
    return [c for c in CANARIES if c in text]


def _file_leaks(folder: Path) -> dict[str, list[str]]:
    found = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            hits = [c for c in CANARIES if c.encode() in p.read_bytes() or c in p.name]
            if hits:
                found[str(p.relative_to(folder))] = hits
    return found


def test_the_canary_is_really_in_the_fixture(tmp_path: Path) -> None:
    series = canary_series(tmp_path)
    ds = pydicom.dcmread(next(series.glob("*.dcm")))
    assert str(ds.PatientName) == "CANARY^PATIENT^Q" and ds.PatientID == "CANARY-7731"
    assert any(c.encode() in (series / "IM0001.dcm").read_bytes() for c in CANARIES)


def test_inspect_and_validate_never_print_the_identity(tmp_path: Path) -> None:
    data = tmp_path / "data"
    canary_series(data)
    canary_series(data, name="second")  # two series: the listing names files, not UIDs
    for argv in (
        ["data", "inspect", str(data)],
        ["data", "validate", str(data)],
        ["-v", "data", "inspect", str(data)],
    ):
        run = run_cli(argv)
        assert TRACEBACK not in run.output
        assert _leaks(run.output) == [], (argv, run.output)


def test_predict_outputs_and_logs_never_carry_the_identity(tiny_run: Path, tmp_path: Path) -> None:
    series = canary_series(tmp_path / "in")
    out = tmp_path / "out"
    run = run_cli(["-v", "predict", "--run", str(tiny_run), str(series), "--out", str(out)])
    assert run.returncode == 0, run.output
    assert _leaks(run.output) == [], run.output
    assert sorted(p.name for p in out.iterdir())  # it did write its outputs
    assert _file_leaks(out) == {}


def test_an_input_named_after_the_patient_gets_a_pseudonym(tiny_run: Path, tmp_path: Path) -> None:
    series = named_after_the_patient(tmp_path / "in")
    terms = identity_terms(series)
    assert {"canary", "patient", "canary-7731", "19010203"} <= terms
    assert carries_identity(series.name, terms) and not carries_identity("series", terms)
    out = tmp_path / "out"
    run = run_cli(["predict", "--run", str(tiny_run), str(series), "--out", str(out)])
    assert run.returncode == 0, run.output
    assert _file_leaks(out) == {}
    names = {p.name for p in out.iterdir()}
    assert any(n.startswith(pseudonym(series)) for n in names), names
    # The printed summary may show the path the user typed, but no output file is named by it.
    assert not any("CANARY" in n for n in names)


def test_evaluate_outputs_and_logs_never_carry_the_identity(tiny_run: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    canary_series(data)
    out = tmp_path / "report"
    run = run_cli(
        ["-v", "evaluate", "--run", str(tiny_run), "--data", str(data), "--out", str(out)]
    )
    assert run.returncode == 0, run.output
    assert _leaks(run.output) == [], run.output
    assert (out / "metrics.json").is_file() and (out / "predictions.json").is_file()
    assert _file_leaks(out) == {}
