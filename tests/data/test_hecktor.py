"""HECKTOR 2022 layout: CT/PET/label NIfTI files, endpoint and clinical CSVs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from tumorscope.data.errors import MissingChannelError
from tumorscope.data.layout import discover, load_case, region_masks

Factory = Callable[..., Path]


def _world(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def test_discover_cases_outcomes_and_clinical(tmp_path: Path, make_hecktor: Factory) -> None:
    root = make_hecktor(tmp_path / "hecktor2022", n_patients=3, true_risk=True)
    index = discover([root])
    assert index.layouts == {"hecktor": root} and index.problems == []
    assert [c.patient_id for c in index.cases] == ["CHUM-001", "CHUM-002", "CHUM-003"]
    case = index.cases[0]
    assert case.channels == {
        "ct": root / "imagesTr" / "CHUM-001__CT.nii.gz",
        "pet": root / "imagesTr" / "CHUM-001__PT.nii.gz",
    }
    assert case.mask == root / "labelsTr" / "CHUM-001.nii.gz"
    o = index.outcomes["CHUM-002"]
    assert (o.time, o.event) == (310.0, True)
    assert (index.outcomes["CHUM-001"].time, index.outcomes["CHUM-001"].event) == (300.0, False)
    assert o.clinical["Age"] == 61.0 and o.clinical["Gender"] == 0.0  # F
    assert index.outcomes["CHUM-001"].clinical["Gender"] == 1.0  # M
    assert index.outcomes["CHUM-001"].clinical["Tobacco"] is None  # empty cell = missing
    assert o.clinical["Surgery"] is None and o.clinical["HPV status (0=-, 1=+)"] == 1.0
    assert index.true_risk == {"CHUM-001": 0.0, "CHUM-002": -0.2, "CHUM-003": -0.4}


def test_pet_resampled_onto_ct_grid(tmp_path: Path, make_hecktor: Factory) -> None:
    root = make_hecktor(tmp_path / "h", n_patients=1, ct_shape=(20, 22, 16), pet_factor=2)
    case = discover([root]).cases[0]
    loaded = load_case(case, ["ct", "pet"])
    assert loaded.image.shape == (2, 20, 22, 16)
    ct_img = nib.load(case.channels["ct"])
    np.testing.assert_array_equal(loaded.image[0], np.asanyarray(ct_img.dataobj))
    np.testing.assert_allclose(loaded.meta.affine, ct_img.affine)
    # PET is linear in world mm, so trilinear resampling is exact inside the PET voxel hull.
    world = _world(ct_img.affine, (20, 22, 16))
    truth = 2.0 * world[..., 0] + 3.0 * world[..., 1] + world[..., 2] + 500.0
    inner = (slice(1, -1), slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(loaded.image[1][inner], truth[inner], rtol=1e-5)
    assert loaded.mask is not None
    regions = region_masks(loaded.mask, "hecktor", ["GTVp", "GTVn"])
    assert regions[0].sum() == 4 * 4 * 3 and regions[1].sum() == 2 * 3 * 2


def test_same_grid_pet_is_not_resampled(tmp_path: Path, make_hecktor: Factory) -> None:
    root = make_hecktor(tmp_path / "h", n_patients=1, ct_shape=(8, 9, 10), pet_factor=1)
    case = discover([root]).cases[0]
    loaded = load_case(case, ["pet"], with_mask=False)
    np.testing.assert_array_equal(
        loaded.image[0], np.asanyarray(nib.load(case.channels["pet"]).dataobj)
    )
    assert loaded.mask is None


def test_missing_pet_is_a_problem_and_load_error(tmp_path: Path, make_hecktor: Factory) -> None:
    root = make_hecktor(tmp_path / "h", n_patients=2, ct_shape=(8, 8, 8))
    (root / "imagesTr" / "CHUM-002__PT.nii.gz").unlink()
    index = discover([root])
    assert [type(p) for p in index.problems] == [MissingChannelError]
    case = next(c for c in index.cases if c.patient_id == "CHUM-002")
    try:
        load_case(case, ["ct", "pet"])
    except MissingChannelError as e:
        assert str(e).startswith(f"{root / 'imagesTr'}: ") and "pet" in str(e)
    else:
        raise AssertionError("expected MissingChannelError")
    filled = load_case(case, ["ct", "pet"], missing="zero_fill")
    assert filled.channel_present == (True, False) and not filled.image[1].any()
