"""Tumour features against values computed by hand on tiny phantoms."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from tumorscope.survival.features import PET_FEATURES, feature_names, tumour_features

ISO = (1.0, 1.0, 1.0)


def box(shape: tuple[int, int, int], *slices: slice) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[slices] = True
    return m


def ball(radius: int) -> np.ndarray:
    n = 2 * radius + 5
    grid = np.indices((n, n, n)) - (n - 1) / 2
    return (grid**2).sum(axis=0) <= radius**2


# --- volume ------------------------------------------------------------------------------


def test_volume_of_a_box_in_ml_and_its_log() -> None:
    m = box((8, 9, 10), slice(1, 5), slice(2, 7), slice(3, 9))  # 4 × 5 × 6 = 120 voxels
    f = tumour_features({"WT": m}, (1.0, 2.0, 0.5))
    assert f["wt_ml"] == 0.12  # 120 voxels × 1 mm³ = 120 mm³ = 0.12 mL
    assert f["log_wt_ml"] == math.log1p(0.12)


def test_0_1_integer_masks_equal_bool_masks() -> None:
    m = box((6, 6, 6), slice(1, 4), slice(1, 4), slice(1, 3))
    assert tumour_features({"WT": m.astype(np.uint8)}, ISO) == tumour_features({"WT": m}, ISO)


# --- components --------------------------------------------------------------------------


def test_two_separated_cubes_are_two_components() -> None:
    m = box((12, 6, 6), slice(1, 4), slice(1, 4), slice(1, 4))
    m[7:10, 1:4, 1:4] = True
    assert tumour_features({"WT": m}, ISO, min_component_ml=0)["wt_components"] == 2.0


def test_cubes_touching_at_one_corner_are_one_component() -> None:
    m = box((8, 8, 8), slice(1, 3), slice(1, 3), slice(1, 3))
    m[3:5, 3:5, 3:5] = True  # shares only the corner (2.5, 2.5, 2.5): 26- but not 18-connected
    assert tumour_features({"WT": m}, ISO, min_component_ml=0)["wt_components"] == 1.0


def test_components_below_min_component_ml_are_not_counted() -> None:
    m = box((14, 6, 6), slice(1, 5), slice(1, 5), slice(1, 5))  # 64 voxels × 8 mm³ = 0.512 mL
    m[8:10, 1:3, 1:3] = True  # 8 voxels × 8 mm³ = 0.064 mL, below the default 0.1 mL
    f = tumour_features({"WT": m}, (2.0, 2.0, 2.0))
    assert f["wt_components"] == 1.0
    assert f["wt_ml"] == 72 * 8 / 1000  # the small one still counts in the volume
    assert tumour_features({"WT": m}, (2.0, 2.0, 2.0), min_component_ml=0.05)["wt_components"] == 2


def test_a_component_of_exactly_min_component_ml_counts() -> None:
    m = box((4, 4, 4), slice(1, 3), slice(1, 3), slice(1, 3))  # 8 voxels = 0.008 mL
    assert tumour_features({"WT": m}, ISO, min_component_ml=0.008)["wt_components"] == 1.0
    assert tumour_features({"WT": m}, ISO, min_component_ml=0.009)["wt_components"] == 0.0


# --- sphericity --------------------------------------------------------------------------


def test_sphericity_of_one_voxel_is_that_of_its_octahedron_by_hand() -> None:
    # Marching cubes (level 0.5) around one voxel: the octahedron of the 6 edge midpoints,
    # semi-axes a, b, c = spacing / 2; volume 4abc/3, 8 faces of area |(−a,b,0)×(−a,0,c)|/2.
    m = box((3, 3, 3), slice(1, 2), slice(1, 2), slice(1, 2))
    for spacing in (ISO, (1.0, 2.0, 0.5)):
        a, b, c = (s / 2 for s in spacing)
        area = 8 * 0.5 * math.sqrt((b * c) ** 2 + (a * c) ** 2 + (a * b) ** 2)
        volume = 4 * a * b * c / 3
        expected = math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area
        got = tumour_features({"WT": m}, spacing)["wt_sphericity"]
        assert got == pytest.approx(expected, rel=1e-6)  # skimage's vertices are float32
    assert expected != pytest.approx(math.pi ** (1 / 3) / math.sqrt(3))  # anisotropy matters
    assert tumour_features({"WT": m}, ISO)["wt_sphericity"] == pytest.approx(0.84558, abs=1e-5)


def test_sphericity_of_a_voxelised_ball_is_near_1_and_of_a_slab_much_lower() -> None:
    from skimage import measure

    radius = 10
    b = ball(radius)
    verts, faces, _, _ = measure.marching_cubes(np.pad(b, 1).astype(float), 0.5)
    # Marching cubes on a binary mask has facets in a few orientations only (a fine
    # staircase), so its area is ~9 % above the smooth sphere's 4πr²: 3 % would fail.
    assert 1.0 < measure.mesh_surface_area(verts, faces) / (4 * math.pi * radius**2) < 1.12
    s_ball = tumour_features({"WT": b}, ISO)["wt_sphericity"]
    assert 0.88 < s_ball < 0.95  # ~0.91 for the reason above; a sphere would be 1
    # Scale-free: the same ball at 2 mm is the same shape.
    assert tumour_features({"WT": b}, (2.0, 2.0, 2.0))["wt_sphericity"] == pytest.approx(s_ball)
    slab = box((24, 24, 6), slice(2, 22), slice(2, 22), slice(2, 4))  # 20 × 20 × 2
    assert tumour_features({"WT": slab}, ISO)["wt_sphericity"] < 0.5


# --- midline -----------------------------------------------------------------------------


@pytest.mark.parametrize("x0", [16, 2])  # centred at 17 (7 right of 10) and at 3 (7 left)
def test_midline_distance_of_a_cube_7_voxels_off_centre(x0: int) -> None:
    m = box((21, 5, 5), slice(x0, x0 + 3), slice(1, 4), slice(1, 4))
    assert tumour_features({"WT": m}, (1.5, 1.0, 1.0))["wt_midline_mm"] == 10.5


def test_midline_of_an_even_axis_is_between_the_two_middle_voxels() -> None:
    m = box((20, 3, 3), slice(9, 10), slice(1, 2), slice(1, 2))  # centre of axis 0 is 9.5
    assert tumour_features({"WT": m}, (2.0, 1.0, 1.0))["wt_midline_mm"] == 1.0


# --- fractions ---------------------------------------------------------------------------


def test_fractions_of_nested_boxes() -> None:
    shape = (12, 12, 12)
    wt = box(shape, slice(1, 11), slice(1, 11), slice(1, 11))  # 1000 voxels
    tc = box(shape, slice(2, 7), slice(2, 7), slice(2, 10))  # 200
    et = box(shape, slice(3, 5), slice(2, 7), slice(2, 7))  # 50
    f = tumour_features({"WT": wt, "TC": tc, "ET": et}, (0.9, 1.1, 3.0))
    assert f["tc_fraction"] == 0.2
    assert f["et_fraction"] == 0.05


def test_fractions_only_with_their_regions() -> None:
    assert "tc_fraction" not in feature_names(["TC", "ET"])
    assert feature_names(["WT", "ET"])[-1] == "et_fraction"
    assert not any(n.endswith("_fraction") for n in feature_names(["GTVp", "GTVn"]))


# --- PET ---------------------------------------------------------------------------------


def test_pet_features_by_hand() -> None:
    shape = (4, 4, 4)
    region = box(shape, slice(1, 3), slice(1, 3), slice(1, 2))  # 4 voxels
    suv = np.full(shape, 100.0)  # outside the region: must not count
    suv[1:3, 1:3, 1] = [[1.0, 3.0], [5.0, 2.5]]
    other = box(shape, slice(0, 1), slice(0, 1), slice(0, 1))  # SUV 100 there
    masks = {"GTVp": region, "GTVn": other}
    f = tumour_features(masks, (2.0, 2.0, 2.0), pet=suv)  # the first region by default
    assert f["suvmax"] == 5.0
    assert f["suvmean"] == pytest.approx((1 + 3 + 5 + 2.5) / 4)
    assert f["mtv_ml"] == pytest.approx(3 * 8 / 1000)  # 3, 5 and 2.5 are >= 2.5
    assert f["tlg"] == pytest.approx((3 + 5 + 2.5) / 3 * 0.024)
    g = tumour_features(masks, (2.0, 2.0, 2.0), pet=suv, pet_region="gtvn", suv_threshold=4)
    assert (g["suvmax"], g["suvmean"], g["mtv_ml"]) == (100.0, 100.0, 0.008)
    assert g["tlg"] == pytest.approx(0.8)


def test_pet_with_no_voxel_above_the_threshold() -> None:
    m = box((3, 3, 3), slice(1, 2), slice(1, 2), slice(1, 2))
    f = tumour_features({"GTVp": m}, ISO, pet=np.ones((3, 3, 3)))
    assert (f["suvmax"], f["mtv_ml"], f["tlg"]) == (1.0, 0.0, 0.0)


# --- empty patients and key order ----------------------------------------------------------


def test_empty_masks_give_zeros_for_every_key_in_feature_names_order() -> None:
    shape = (6, 7, 8)
    masks = {r: np.zeros(shape, dtype=bool) for r in ("WT", "TC", "ET")}
    pet = np.random.default_rng(0).uniform(0, 10, shape)
    f = tumour_features(masks, ISO, pet=pet)
    assert tuple(f) == feature_names(["WT", "TC", "ET"], pet=True)
    assert tuple(f)[-4:] == PET_FEATURES
    assert all(type(v) is float and v == 0.0 for v in f.values())


def test_key_order_and_value_types_of_a_nonempty_patient() -> None:
    shape = (8, 8, 8)
    masks = {
        "GTVp": box(shape, slice(1, 4), slice(1, 4), slice(1, 4)),
        "GTVn": np.zeros(shape, dtype=bool),
    }
    f = tumour_features(masks, ISO)
    assert tuple(f) == feature_names(["GTVp", "GTVn"])
    assert tuple(f)[:5] == (
        "gtvp_ml",
        "log_gtvp_ml",
        "gtvp_components",
        "gtvp_sphericity",
        "gtvp_midline_mm",
    )
    assert all(type(v) is float and math.isfinite(v) for v in f.values())


# --- validation --------------------------------------------------------------------------

S = (4, 4, 4)
M = np.zeros(S, dtype=bool)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"masks": {}}, "no regions"),
        ({"masks": {"WT": M, "TC": np.zeros((4, 4, 5))}}, r"'TC'.*\(4, 4, 5\).*'WT'.*\(4, 4, 4\)"),
        ({"masks": {"WT": np.zeros((4, 4))}}, "'WT': expected a 3D"),
        ({"masks": {"WT": np.full(S, 0.5)}}, "'WT': expected bool or 0/1"),
        ({"masks": {"WT": M, "wt": M}}, "repeat once lower-cased"),
        ({"masks": {"a": M, "log_a": M}}, "collide"),
        ({"spacing": (1.0, 1.0)}, "spacing"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing"),
        ({"spacing": (1.0, -1.0, 1.0)}, "spacing"),
        ({"spacing": (1.0, math.nan, 1.0)}, "spacing"),
        ({"spacing": (1.0, math.inf, 1.0)}, "spacing"),
        ({"spacing": "abc"}, "spacing"),
        ({"pet": np.zeros((4, 4, 3))}, r"pet has shape \(4, 4, 3\).*\(4, 4, 4\)"),
        ({"pet": np.full(S, math.nan)}, "pet: 64 non-finite"),
        ({"pet": np.full(S, math.inf)}, "pet: 64 non-finite"),
        ({"pet": np.zeros(S), "pet_region": "GTVn"}, r"'GTVn': expected one of \['WT', 'TC'\]"),
        ({"min_component_ml": -1.0}, "min_component_ml"),
        ({"suv_threshold": math.nan}, "suv_threshold"),
    ],
)
def test_validation_errors_name_the_fault(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"masks": {"WT": M, "TC": M}, "spacing": ISO} | kwargs
    with pytest.raises(ValueError, match=match):
        tumour_features(args.pop("masks"), args.pop("spacing"), **args)


def test_feature_names_rejects_a_bare_string() -> None:
    with pytest.raises(ValueError, match="not a str"):
        feature_names("WT")


def test_large_boxes_are_measured_on_a_pooled_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the voxel limits a mask is max-pooled: the figures stay close, memory bounded."""
    import tumorscope.survival.features as features

    zz, yy, xx = np.mgrid[:40, :40, :40]
    ball = (xx - 19.5) ** 2 + (yy - 19.5) ** 2 + (zz - 19.5) ** 2 <= 14**2
    two = np.zeros((40, 40, 90), dtype=bool)
    two[:, :, :40], two[:, :, 50:] = ball, ball
    full = features.tumour_features({"WT": two}, (1.0, 1.0, 1.0), min_component_ml=1.0)
    monkeypatch.setattr(features, "MAX_LABEL_VOXELS", 40 * 40 * 90 // 8)
    monkeypatch.setattr(features, "MAX_MESH_VOXELS", 40 * 40 * 90 // 8)
    pooled = features.tumour_features({"WT": two}, (1.0, 1.0, 1.0), min_component_ml=1.0)
    assert full["wt_components"] == pooled["wt_components"] == 2.0
    assert full["wt_ml"] == pooled["wt_ml"]  # the volume is always counted at full resolution
    assert pooled["wt_sphericity"] == pytest.approx(full["wt_sphericity"], abs=0.05)
    assert pooled["wt_sphericity"] != full["wt_sphericity"]  # it did pool
