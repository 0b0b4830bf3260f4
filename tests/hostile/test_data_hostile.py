"""Hostile data: ``data validate`` names each attack on its own line, the loaders (training's,
``predict``'s) refuse it with the same fault, memory stays bounded and no file changes."""

from __future__ import annotations

import hashlib
import os
import pathlib
import stat
from pathlib import Path

import numpy as np
import pytest
from cases_data import CASE_ID, CASES, DataCase
from runner import PEAK_RSS_BOUND_MB, TRACEBACK, CliRun, run_cli

from tumorscope.data import errors as E
from tumorscope.data.dicom import read_dicom_series
from tumorscope.data.imagefolder import load_image
from tumorscope.data.inspect import validate_dataset
from tumorscope.data.layout import discover, load_case, read_case
from tumorscope.data.readers import read_nifti
from tumorscope.data.spec import PreprocessSpec
from tumorscope.data.types import BRAIN_CHANNELS, DataError
from tumorscope.inference.inputs import load_volume, read_2d

SPEC = PreprocessSpec()  # one FLAIR channel, as the demo's model takes
INSPECTED = (
    "complex_512_cubed",
    "png_9400_squared",
    "scl_slope_overflow",
    "dicom_rescale_overflow",
    "survival_1e308",
    "nnunet_json_deep",
    "brats_and_kaggle_in_one_root",
    "unreadable_entries",
)
PREDICTED = (
    "png_9400_squared",
    "png_1_by_100000",
    "jpeg_lying_header",
    "rgb_nifti",
    "complex_512_cubed",
    "scl_slope_overflow",
)


def _digests(folder: Path) -> dict[str, str]:
    """sha256 of every regular file (links and FIFOs are not opened)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if stat.S_ISREG(os.lstat(p).st_mode)
    }


def _make(name: str, tmp_path: Path) -> tuple[DataCase, Path, Path, list[Path]]:
    case = CASES[name]
    root = tmp_path / "data"
    root.mkdir()
    hostile = case.make(root)
    named = [root / p for p in case.lines] or [hostile]
    return case, root, hostile, named


def _line_for(run: CliRun, path: Path) -> str:
    hits = [line for line in run.output.splitlines() if line.startswith(f"{path}: ")]
    assert len(hits) == 1, f"want one line for {path}:\n{run.output}"
    return hits[0]


def _bounded(run: CliRun) -> None:
    assert TRACEBACK not in run.output, run.output
    assert run.peak_rss_mb < PEAK_RSS_BOUND_MB, run.peak_rss_mb


def _refused(case: DataCase, call: object, path: Path) -> DataError:
    assert callable(call)
    with pytest.raises(getattr(E, case.error)) as info:
        call()
    err = info.value
    assert err.path == path, str(err)
    assert case.fault.lower() in str(err).lower(), str(err)
    return err


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 15


# --------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("name", sorted(CASES))
def test_validate_names_the_file_in_one_line(name: str, tmp_path: Path) -> None:
    case, root, _, named = _make(name, tmp_path)
    before = _digests(root)
    run = run_cli(["data", "validate", str(root)], timeout=300)
    assert run.returncode == 1, run.output
    _bounded(run)
    for path in named:
        assert case.fault.lower() in _line_for(run, path).lower()
    assert _digests(root) == before  # validation modifies nothing


@pytest.mark.parametrize("name", INSPECTED)
def test_inspect_lists_the_file_among_its_problems(name: str, tmp_path: Path) -> None:
    _, root, _, named = _make(name, tmp_path)
    before = _digests(root)
    run = run_cli(["data", "inspect", str(root)], timeout=300)
    assert run.returncode == 0, run.output
    _bounded(run)
    for path in named:
        _line_for(run, path)
    assert _digests(root) == before


def test_inspect_reports_both_layouts_of_one_root(tmp_path: Path) -> None:
    _, root, _, _ = _make("brats_and_kaggle_in_one_root", tmp_path)
    run = run_cli(["data", "inspect", str(root)], timeout=300)
    assert f"layout brats at {root}" in run.output, run.output
    assert f"layout kaggle at {root}" in run.output, run.output


@pytest.mark.parametrize("name", PREDICTED)
def test_predict_gives_the_same_one_line_fault(name: str, tiny_run: Path, tmp_path: Path) -> None:
    case, root, hostile, _ = _make(name, tmp_path)
    before = _digests(root)
    out = tmp_path / "out"
    run = run_cli(["predict", "--run", str(tiny_run), str(hostile), "--out", str(out)], timeout=300)
    assert run.returncode == 2, run.output
    _bounded(run)
    hits = [line for line in run.output.splitlines() if f"{hostile}: " in line]
    assert hits and case.fault.lower() in hits[0].lower(), run.output
    assert _digests(root) == before


# --------------------------------------------------------------------------- the library


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.reader == "nifti"])
def test_nifti_loaders_refuse_with_the_same_fault(name: str, tmp_path: Path) -> None:
    case, root, hostile, _ = _make(name, tmp_path)
    _refused(case, lambda: read_nifti(hostile), hostile)
    found, _ = read_case(hostile.parent)
    assert found is not None
    _refused(case, lambda: load_case(found, BRAIN_CHANNELS, with_mask=False), hostile)
    # predict on the file and on its case folder
    _refused(case, lambda: load_volume(hostile, SPEC, source=None, affine=None), hostile)
    _refused(case, lambda: load_volume(hostile.parent, SPEC, source=None, affine=None), hostile)
    _refused(case, lambda: _first(validate_dataset([root]), hostile), hostile)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.reader == "dicom"])
def test_dicom_loaders_refuse_with_the_same_fault(name: str, tmp_path: Path) -> None:
    case, root, hostile, _ = _make(name, tmp_path)
    _refused(case, lambda: read_dicom_series(hostile.parent), hostile)
    _refused(case, lambda: load_volume(hostile.parent, SPEC, source=None, affine=None), hostile)
    _refused(case, lambda: _first(validate_dataset([root]), hostile), hostile)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.reader == "image"])
def test_image_loaders_refuse_with_the_same_fault(name: str, tmp_path: Path) -> None:
    case, root, hostile, _ = _make(name, tmp_path)
    _refused(case, lambda: load_image(hostile), hostile)
    _refused(case, lambda: read_2d(hostile, None, 0, 1, SPEC), hostile)
    _refused(case, lambda: _first(validate_dataset([root]), hostile), hostile)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.reader == "table"])
def test_table_values_never_reach_the_loader(name: str, tmp_path: Path) -> None:
    case, root, hostile, _ = _make(name, tmp_path)
    index = discover([root])  # what training's cache is built from
    _refused(case, lambda: _first(index.problems, hostile), hostile)
    pid = next(iter({CASE_ID, "CHUM-001"} & {c.patient_id for c in index.cases}))
    if case.error == "SurvivalValueError":
        assert pid not in index.outcomes
    else:
        assert index.outcomes[pid].clinical["Age"] is None


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.reader == "json"])
def test_dataset_json_faults_are_one_problem(name: str, tmp_path: Path) -> None:
    case, root, hostile, _ = _make(name, tmp_path)
    index = discover([root])
    _refused(case, lambda: _first(index.problems, hostile), hostile)
    assert not index.cases


def _first(problems: list[DataError], path: Path) -> None:
    """Raise the first problem that names ``path`` (so ``_refused`` can check it)."""
    for p in problems:
        if p.path == path:
            raise p
    raise AssertionError(f"no problem names {path}: {[str(p) for p in problems]}")


def test_every_layout_of_one_root_is_read(tmp_path: Path) -> None:
    _, root, _, named = _make("brats_and_kaggle_in_one_root", tmp_path)
    index = discover([root])
    assert index.layouts == {"brats": root, "kaggle": root}
    assert not index.cases and index.left_out["brats"] == 1  # its t1 is broken
    assert len(index.images) == 3
    problems = validate_dataset([root])
    for path in named:
        assert [p for p in problems if p.path == path], [str(p) for p in problems]


def test_unreadable_entries_are_each_named_and_refused(tmp_path: Path) -> None:
    _, root, _, named = _make("unreadable_entries", tmp_path)
    problems = discover([root]).problems
    for path in named[:3]:
        hits = [p for p in problems if p.path == path]
        assert len(hits) == 1 and isinstance(hits[0], E.UnreadableFileError), hits
    dangling, pipe, folder = named[:3]
    assert "does not exist" in str(next(p for p in problems if p.path == dangling))
    assert "FIFO" in str(next(p for p in problems if p.path == pipe))
    for path in (dangling, pipe):  # predict never opens (and blocks on) them
        with pytest.raises(E.UnreadableFileError):
            read_2d(path, None, 0, 1, SPEC)
        with pytest.raises(E.UnreadableFileError):
            load_image(path)
    with pytest.raises(DataError, match="is a folder"):
        read_2d(folder, None, 0, 1, SPEC)


def test_a_folder_that_cannot_be_listed_hides_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests run as root, where chmod blocks nothing: refuse the listing itself.
    _, root, _, named = _make("brats_and_kaggle_in_one_root", tmp_path)
    blocked = root / "no"
    real_scandir, real_iterdir = os.scandir, pathlib.Path.iterdir

    def scandir(path: object = ".") -> object:
        if Path(str(path)) == blocked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    def iterdir(self: pathlib.Path) -> object:
        if self == blocked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(pathlib.Path, "iterdir", iterdir)
    problems = validate_dataset([root])
    lines = [str(p) for p in problems]
    assert any(p.path == blocked and "cannot be listed" in str(p) for p in problems), lines
    for path in named:  # the faults beside it are still each listed
        assert [p for p in problems if p.path == path], lines


@pytest.mark.slow
def test_predicting_a_volume_at_the_voxel_cap_stays_under_the_memory_bound(
    tiny_run: Path, tmp_path: Path
) -> None:
    """The largest volume the readers accept (2^27 voxels, 512³) is predicted within the bound."""
    import nibabel as nib

    from tumorscope.data.limits import MAX_VOXELS

    side = round(MAX_VOXELS ** (1 / 3))
    assert side**3 == MAX_VOXELS
    vol = np.zeros((side, side, side), np.int16)
    rng = np.random.default_rng(0)
    q = side // 8
    vol[q:-q, q:-q, q:-q] = rng.integers(100, 1000, size=(side - 2 * q,) * 3, dtype=np.int16)
    path = tmp_path / "big.nii"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), path)
    del vol
    run = run_cli(["predict", "--run", str(tiny_run), str(path), "--out", str(tmp_path / "out")])
    assert run.returncode == 0, run.output
    assert (tmp_path / "out" / "big_mask.nii.gz").is_file()
    assert run.peak_rss_mb < PEAK_RSS_BOUND_MB, run.peak_rss_mb


@pytest.mark.slow
def test_predicting_a_two_channel_case_at_the_byte_budget_stays_under_the_bound(
    tmp_path: Path,
) -> None:
    """A HECKTOR-style CT+PET case just under the decoded-bytes budget (2×512×512×360
    float32 = 755 MB of the 768 MiB allowed), predicted by a PET/CT model."""
    import nibabel as nib

    from tumorscope.config import load_config
    from tumorscope.data.limits import MAX_DECODED_BYTES
    from tumorscope.inference.predictor import Predictor

    shape = (512, 512, 360)
    assert 2 * 4 * np.prod(shape) <= MAX_DECODED_BYTES
    configs = Path(__file__).resolve().parents[2] / "configs"
    cfg = load_config(
        configs / "petct.yaml",
        ["model.base_channels=8", "model.depth=3", "model.clinical_features=0"],
    )
    run = Predictor.from_config(cfg, calibration={"gate_threshold": 0.0}).save(tmp_path / "run")
    case = tmp_path / "case"
    case.mkdir()
    rng = np.random.default_rng(0)
    ct = np.full(shape, -1000, np.int16)
    ct[64:448, 64:448, :] = rng.integers(-100, 200, size=(384, 384, 360), dtype=np.int16)
    aff = np.diag([0.98, 0.98, 2.0, 1.0])
    nib.save(nib.Nifti1Image(ct, aff), case / "HK-001__CT.nii")
    del ct
    nib.save(
        nib.Nifti1Image(rng.gamma(1.5, 1.0, size=shape).astype(np.float32), aff),
        case / "HK-001__PT.nii",
    )
    run_ = run_cli(["predict", "--run", str(run), str(case), "--out", str(tmp_path / "out")])
    assert run_.returncode == 0, run_.output
    assert (tmp_path / "out" / "case_mask.nii.gz").is_file()
    assert run_.peak_rss_mb < PEAK_RSS_BOUND_MB, run_.peak_rss_mb
