"""BraTS 2018–2021 and 2023 layouts written as real NIfTI files and read back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tumorscope.data.errors import MissingChannelError, MissingFileError
from tumorscope.data.layout import discover, load_case, region_masks
from tumorscope.data.layouts.brats import discover_brats, parse_survival

Factory = Callable[..., Path]


def _nib(path: Path) -> np.ndarray:
    return np.asanyarray(nib.as_closest_canonical(nib.load(path)).dataobj)


@pytest.mark.parametrize("year", [2018, 2019, 2020, 2021, 2023])
def test_every_year_is_recognised_by_suffix(tmp_path: Path, make_brats: Factory, year: int) -> None:
    root = make_brats(tmp_path / f"MICCAI_BraTS_{year}", n_patients=2, shape=(9, 10, 7), year=year)
    cases, outcomes, problems = discover_brats(root)
    assert problems == []
    assert len(cases) == 2
    assert all(set(c.channels) == {"flair", "t1", "t1ce", "t2"} for c in cases)
    et = 3 if year == 2023 else 4
    assert cases[0].label_map == {1: "NCR", 2: "ED", et: "ET"}
    assert cases[0].mask is not None and cases[0].mask.name.startswith(cases[0].patient_id)
    if year != 2023:
        assert len(outcomes) == 2


def test_load_case_channel_order_values_and_mask(tmp_path: Path, make_brats: Factory) -> None:
    root = make_brats(tmp_path / "b", n_patients=2, shape=(11, 13, 9), year=2020)
    index = discover([root])
    case = next(c for c in index.cases if c.patient_id == "BraTS20_Training_002")
    loaded = load_case(case, ["t2", "flair"])
    assert loaded.image.shape == (2, 11, 13, 9) and loaded.image.dtype == np.float32
    np.testing.assert_array_equal(loaded.image[0], _nib(case.channels["t2"]))
    np.testing.assert_array_equal(loaded.image[1], _nib(case.channels["flair"]))
    # channel k of patient i has mean 100 (k + 1) + i (see conftest).
    assert abs(loaded.image[0].mean() - 402.0) < 0.3 and abs(loaded.image[1].mean() - 102.0) < 0.3
    assert case.mask is not None
    assert loaded.mask is not None and loaded.mask.dtype == np.uint8
    np.testing.assert_array_equal(loaded.mask, _nib(case.mask))
    assert set(np.unique(loaded.mask)) == {0, 1, 2, 4}
    assert loaded.channel_present == (True, True)
    assert loaded.meta.spacing == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("year", [2020, 2023])
def test_region_masks_follow_label_conventions(
    tmp_path: Path, make_brats: Factory, year: int
) -> None:
    root = make_brats(tmp_path / "b", n_patients=1, shape=(12, 12, 10), year=year, survival=False)
    case = discover([root]).cases[0]
    mask = load_case(case, ["flair"]).mask
    assert mask is not None
    regions = region_masks(mask, "brats", ["WT", "TC", "ET"])
    et = 3 if year == 2023 else 4
    assert regions.shape == (3, 12, 12, 10) and regions.dtype == np.uint8
    np.testing.assert_array_equal(regions[0], (mask > 0).astype(np.uint8))
    np.testing.assert_array_equal(regions[1], ((mask == 1) | (mask == et)).astype(np.uint8))
    np.testing.assert_array_equal(regions[2], (mask == et).astype(np.uint8))
    assert regions[2].sum() == 4 * 4 * 4 - 2 * 2 * 2  # ET cube minus the necrotic core


def test_region_masks_reject_unknown_region() -> None:
    with pytest.raises(ValueError, match="GTVp"):
        region_masks(np.zeros((2, 2), np.uint8), "brats", ["GTVp"])


def test_survival_csv_events_censoring_and_covariates(tmp_path: Path, make_brats: Factory) -> None:
    root = make_brats(tmp_path / "b", n_patients=3, shape=(6, 6, 6), year=2020)
    outcomes = discover([root]).outcomes
    o1, o2, o3 = (outcomes[f"BraTS20_Training_00{i}"] for i in (1, 2, 3))
    assert (o1.time, o1.event) == (100.0, True)
    assert (o2.time, o2.event) == (200.0, False)  # "ALIVE (200 days later)"
    assert (o3.time, o3.event) == (300.0, True)
    assert o1.clinical == {"Age": 51.5, "Extent_of_Resection": 0.0}  # STR
    assert o2.clinical["Extent_of_Resection"] is None  # NA stays missing
    assert o3.clinical["Extent_of_Resection"] == 1.0  # GTR
    assert o1.source_file == root / "survival_info.csv"


def test_hgg_lgg_roots_find_survival_csv_in_parent(tmp_path: Path, make_brats: Factory) -> None:
    top = tmp_path / "MICCAI_BraTS_2018_Data_Training"
    make_brats(top / "HGG", n_patients=2, shape=(6, 6, 6), year=2018, survival=False)
    make_brats(top, n_patients=0, year=2018, survival=True)  # CSV only, beside HGG/
    index = discover([top])
    assert set(index.layouts) == {"brats"} and index.layouts["brats"] == top / "HGG"
    assert len(index.cases) == 2
    assert index.outcomes == {}  # the CSV above lists no patients
    assert index.problems == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("361", (361.0, True)),
        ("ALIVE (361 days later)", (361.0, False)),
        ("alive (12.5 days later)", (12.5, False)),
        ("-3", "is negative"),
        ("inf", "is not finite"),
        ("abc", "is not a number of days"),
        ("", "is empty"),
    ],
)
def test_parse_survival(text: str, expected: object) -> None:
    assert parse_survival(text) == expected


def test_missing_channel_zero_fill_or_error(tmp_path: Path, make_brats: Factory) -> None:
    root = make_brats(tmp_path / "b", n_patients=1, shape=(7, 8, 9), year=2020, survival=False)
    folder = root / "BraTS20_Training_001"
    (folder / "BraTS20_Training_001_t1ce.nii.gz").unlink()
    index = discover([root])
    assert [type(p) for p in index.problems] == [MissingChannelError]
    case = index.cases[0]
    filled = load_case(case, ["flair", "t1ce"], missing="zero_fill")
    assert filled.channel_present == (True, False)
    assert np.all(filled.image[1] == 0) and filled.image[0].mean() > 90
    with pytest.raises(MissingChannelError) as err:
        load_case(case, ["flair", "t1ce"])
    assert str(err.value).startswith(f"{folder}: ") and "t1ce" in str(err.value)


def test_lps_stored_volume_is_returned_in_ras(tmp_path: Path, make_brats: Factory) -> None:
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    root = make_brats(
        tmp_path / "b", n_patients=1, shape=(5, 6, 7), year=2021, survival=False, affine=lps
    )
    case = discover([root]).cases[0]
    loaded = load_case(case, ["flair"])
    stored = np.asanyarray(nib.load(case.channels["flair"]).dataobj)
    np.testing.assert_array_equal(loaded.image[0], stored[::-1, ::-1, :])
    assert loaded.meta.orientation == ("L", "P", "S")
    assert nib.aff2axcodes(loaded.meta.affine) == ("R", "A", "S")


def test_case_without_seg_among_segmented_cases_is_a_problem(
    tmp_path: Path, make_brats: Factory
) -> None:
    root = make_brats(tmp_path / "b", n_patients=2, shape=(4, 5, 6), survival=False)
    folder = root / "BraTS20_Training_002"
    (folder / "BraTS20_Training_002_seg.nii.gz").rename(folder / "W39_1998.09.19_Segm.nii")
    cases, _, problems = discover_brats(root)
    assert [c.mask is None for c in cases] == [False, True]
    assert [type(p) for p in problems] == [MissingFileError]
    assert str(problems[0]).startswith(f"{folder}: no _seg.nii.gz file")


def test_validation_set_without_any_seg_is_fine(tmp_path: Path, make_brats: Factory) -> None:
    root = make_brats(tmp_path / "b", n_patients=2, shape=(4, 5, 6), survival=False, with_seg=False)
    cases, _, problems = discover_brats(root)
    assert problems == [] and all(c.mask is None for c in cases)
