"""Layout detection: dataset roots at up to two levels below DIR, side by side, or none."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tumorscope.data.errors import CaseLayoutError, DuplicatePatientError, MissingFileError
from tumorscope.data.inspect import explain_no_layout
from tumorscope.data.layout import discover, find_layouts, load_case

Factory = Callable[..., Path]


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_root_found_up_to_two_levels_below(tmp_path: Path, make_brats: Factory, depth: int) -> None:
    top = tmp_path / "top"
    root = top.joinpath(*["lvl"] * (depth - 1), "brats") if depth else top
    make_brats(root, n_patients=1, shape=(4, 4, 4))
    assert find_layouts(top) == [("brats", root)]


def test_root_three_levels_below_is_not_found_and_explained(
    tmp_path: Path, make_brats: Factory
) -> None:
    root = tmp_path / "a" / "b" / "c" / "brats"
    make_brats(root, n_patients=1, shape=(4, 4, 4), survival=False)
    index = discover([tmp_path / "a"])  # brats root is 3 levels below "a"
    assert index.layouts == {} and index.cases == []
    why = explain_no_layout(tmp_path / "a")
    assert "down to 2 levels" in why and "no BraTS case folders" in why


def test_all_layouts_side_by_side(
    tmp_path: Path,
    make_brats: Factory,
    make_kaggle: Factory,
    make_hecktor: Factory,
    make_dicom_series: Factory,
    make_kaggle4: Factory,
) -> None:
    make_brats(tmp_path / "d" / "brats", n_patients=2, shape=(4, 5, 6), true_risk=True)
    make_brats(tmp_path / "d" / "brats23", n_patients=1, shape=(4, 5, 6), year=2023, survival=False)
    make_kaggle(tmp_path / "d" / "kaggle", n_yes=2, n_no=1)
    make_kaggle4(tmp_path / "d" / "kaggle4", n_per_class=1, splits=("Training",))
    make_hecktor(tmp_path / "d" / "hecktor", n_patients=2, ct_shape=(6, 6, 6), true_risk=True)
    make_dicom_series(tmp_path / "d" / "ct" / "P1", n_slices=2)
    index = discover([tmp_path])
    assert index.problems == []
    assert index.layouts == {
        "brats": tmp_path / "d" / "brats",
        "brats#2": tmp_path / "d" / "brats23",
        "dicom": tmp_path / "d" / "ct",
        "hecktor": tmp_path / "d" / "hecktor",
        "kaggle": tmp_path / "d" / "kaggle",
        "kaggle4": tmp_path / "d" / "kaggle4",
    }
    sources = sorted(c.source for c in index.cases)
    assert sources == ["brats", "brats", "brats", "dicom", "hecktor", "hecktor"]
    assert (
        sorted({i.source for i in index.images}) == ["kaggle", "kaggle4"] and len(index.images) == 7
    )
    assert index.true_risk == pytest.approx(
        {
            "BraTS20_Training_001": 0.0,
            "BraTS20_Training_002": 0.1,
            "CHUM-001": 0.0,
            "CHUM-002": -0.2,
        }
    )
    assert set(index.outcomes) == {
        "BraTS20_Training_001",
        "BraTS20_Training_002",
        "CHUM-001",
        "CHUM-002",
    }


def test_any_folder_prefix_is_recognised_by_suffix(
    tmp_path: Path, write_nifti: Callable[..., Path]
) -> None:
    for mod in ("flair", "t1", "t1ce", "t2", "seg"):
        write_nifti(
            tmp_path / "mydata" / "patient7" / f"patient7_{mod}.nii.gz",
            np.zeros((3, 4, 5), np.uint8),
        )
    index = discover([tmp_path])
    assert index.layouts == {"brats": tmp_path / "mydata"}
    assert index.cases[0].patient_id == "patient7"
    assert load_case(index.cases[0], ["t1ce"]).image.shape == (1, 3, 4, 5)


def test_mixed_naming_in_a_case_is_a_problem(
    tmp_path: Path, write_nifti: Callable[..., Path]
) -> None:
    case = tmp_path / "root" / "c1"
    write_nifti(case / "c1_flair.nii.gz", np.zeros((3, 3, 3), np.float32))
    write_nifti(case / "c1-t1n.nii.gz", np.zeros((3, 3, 3), np.float32))
    index = discover([tmp_path / "root"])
    assert [type(p) for p in index.problems] == [CaseLayoutError]
    assert str(index.problems[0]).startswith(f"{case}: ") and index.cases == []


def test_same_patient_in_two_roots(tmp_path: Path, make_brats: Factory) -> None:
    make_brats(tmp_path / "a", n_patients=1, shape=(4, 4, 4), survival=False)
    make_brats(tmp_path / "b", n_patients=1, shape=(4, 4, 4), survival=False)
    index = discover([tmp_path / "a", tmp_path / "b"])
    dup = [p for p in index.problems if isinstance(p, DuplicatePatientError)]
    assert len(dup) == 1 and dup[0].path == tmp_path / "b" / "BraTS20_Training_001"
    assert str(tmp_path / "a" / "BraTS20_Training_001") in str(dup[0])


def test_missing_root_raises(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError) as err:
        discover([tmp_path / "nope"])
    assert str(err.value).startswith(f"{tmp_path / 'nope'}: ")


def test_load_case_rejects_unknown_missing_policy(tmp_path: Path, make_brats: Factory) -> None:
    make_brats(tmp_path / "b", n_patients=1, shape=(4, 4, 4), survival=False)
    case = discover([tmp_path / "b"]).cases[0]
    with pytest.raises(ValueError, match="zero_fill"):
        load_case(case, ["flair"], missing="ignore")
