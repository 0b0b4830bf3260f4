"""inspect_dataset and validate_dataset on tiny real-format datasets."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from tumorscope.data import errors as E
from tumorscope.data.inspect import inspect_dataset, validate_dataset

Factory = Callable[..., Path]


def _snapshot(root: Path) -> dict[Path, tuple[str, int]]:
    return {
        p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_inspect_reports_counts_balance_spacing_and_ranges(
    tmp_path: Path, make_brats: Factory, make_kaggle: Factory
) -> None:
    root = make_brats(tmp_path / "d" / "brats", n_patients=2, shape=(8, 9, 10))
    make_kaggle(tmp_path / "d" / "kaggle", n_yes=3, n_no=2)
    report = inspect_dataset(tmp_path)
    by_name = {s.name: s for s in report.layouts}
    brats, kaggle = by_name["brats"], by_name["kaggle"]
    assert (brats.patients, brats.slices) == (2, 2 * 10)
    masks = [np.asanyarray(nib.load(p).dataobj) for p in sorted(root.glob("*/*_seg.nii.gz"))]
    assert brats.label_balance["4 (ET)"] == sum(int((m == 4).sum()) for m in masks)
    assert brats.label_balance["0 (background)"] == sum(int((m == 0).sum()) for m in masks)
    assert brats.spacings == {(1.0, 1.0, 1.0): 8}  # 2 cases x 4 channels
    flair = [np.asanyarray(nib.load(p).dataobj) for p in sorted(root.glob("*/*_flair.nii.gz"))]
    assert brats.intensity["flair"] == (
        min(float(a.min()) for a in flair),
        max(float(a.max()) for a in flair),
    )
    assert brats.outcomes == (2, 1) and (brats.tumour_cases, brats.masked_cases) == (2, 2)
    assert dict(kaggle.label_balance) == {"tumour": 3, "no tumour": 2}
    text = report.render()
    assert f"layout brats at {root}" in text and "patients: 2" in text and "slices: 20" in text
    assert "tumour=3" in text and "1x1x1 mm (8)" in text and "intensity flair:" in text
    assert "cases with tumour: 2 of 2 with masks" in text
    assert text.rstrip().endswith("problems: 0")


def test_inspect_says_why_nothing_was_found(tmp_path: Path) -> None:
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "brain.nii.gz").write_bytes(b"x")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "loose.png")
    report = inspect_dataset(tmp_path)
    text = report.render()
    assert report.layouts == []
    assert "no known layout found" in text and "1 NIfTI file(s) without those suffixes" in text
    assert "1 loose image file(s)" in text
    problems = validate_dataset([tmp_path])
    assert len(problems) == 1 and isinstance(problems[0], E.LayoutNotFoundError)


def test_inspect_counts_cases_left_out_for_problems(tmp_path: Path, make_brats: Factory) -> None:
    root = make_brats(tmp_path / "b", n_patients=3, shape=(4, 5, 6), survival=False)
    bad = root / "BraTS20_Training_002" / "BraTS20_Training_002_t2.nii.gz"
    bad.write_bytes(b"")
    report = inspect_dataset(root)
    assert (report.layouts[0].patients, report.layouts[0].left_out) == (2, 1)
    text = report.render()
    assert "patients: 2 (+1 left out, see problems)" in text
    assert f"{bad}: file is empty (0 bytes)" in text.splitlines()


def test_inspect_lists_problems_one_per_line(tmp_path: Path, make_kaggle: Factory) -> None:
    root = make_kaggle(tmp_path / "k", n_yes=2, n_no=2)
    (root / "yes" / "Y0.jpg").write_bytes(b"")
    text = inspect_dataset(root).render()
    assert f"{root / 'yes' / 'Y0.jpg'}: file is empty (0 bytes)" in text.splitlines()


def test_validate_clean_data_has_no_problems(
    tmp_path: Path, make_brats: Factory, make_hecktor: Factory
) -> None:
    make_brats(tmp_path / "brats", n_patients=2, shape=(5, 6, 7), year=2023, survival=False)
    make_hecktor(tmp_path / "hecktor", n_patients=2, ct_shape=(6, 6, 6))
    assert validate_dataset([tmp_path / "brats", tmp_path / "hecktor"]) == []


def test_validate_lists_every_problem_and_modifies_nothing(
    tmp_path: Path, make_brats: Factory, make_kaggle: Factory, make_dicom_series: Factory
) -> None:
    brats = make_brats(tmp_path / "d" / "brats", n_patients=3, shape=(20, 20, 20))
    kaggle = make_kaggle(tmp_path / "d" / "kaggle", n_yes=2, n_no=2)
    series = make_dicom_series(tmp_path / "d" / "dicom" / "P1", n_slices=3)
    faults = {
        brats / "BraTS20_Training_001" / "BraTS20_Training_001_flair.nii.gz": b"",
        brats / "BraTS20_Training_002" / "BraTS20_Training_002_t1.nii.gz": None,  # truncated
        kaggle / "yes" / "Y1.jpg": b"\x89PNG\r\n\x1a\n" + b"\0" * 40,
        series / "IM0002.dcm": b"garbage" * 20,
    }
    for path, content in faults.items():
        data = path.read_bytes()
        path.write_bytes(content if content is not None else data[: len(data) // 2])
    csv_path = brats / "survival_info.csv"
    csv_path.write_text(csv_path.read_text() + "BraTS20_Training_003,30,-1,GTR\n")
    before = _snapshot(tmp_path)
    problems = validate_dataset([tmp_path])
    assert _snapshot(tmp_path) == before
    lines = [str(p) for p in problems]
    assert all("\n" not in line for line in lines)
    kinds = {(type(p), p.path) for p in problems}
    expected = {
        (E.EmptyFileError, next(iter(faults))),
        (E.TruncatedFileError, list(faults)[1]),
        (E.ExtensionMismatchError, kaggle / "yes" / "Y1.jpg"),
        (E.DicomPreambleError, series / "IM0002.dcm"),
        (E.DuplicatePatientError, csv_path),
    }
    assert expected <= kinds, lines
    assert len(problems) == len(set(lines)) == len(expected)


def test_cli_validate_prints_each_problem_and_exits_1(tmp_path: Path, make_kaggle: Factory) -> None:
    from typer.testing import CliRunner

    from tumorscope.cli import app

    root = make_kaggle(tmp_path / "k", n_yes=2, n_no=2)
    (root / "yes" / "Y0.jpg").write_bytes(b"")
    (root / "no" / "N1.png").write_bytes(b"junk" * 10)
    result = CliRunner().invoke(app, ["data", "validate", str(root)])
    assert result.exit_code == 1
    assert f"{root / 'yes' / 'Y0.jpg'}: file is empty (0 bytes)" in result.stdout.splitlines()
    assert any(
        line.startswith(f"{root / 'no' / 'N1.png'}: not a PNG image")
        for line in result.stdout.splitlines()
    )
