"""Segmentation metrics: closed-form boxes and spheres, MONAI/scikit-learn agreement, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import HausdorffDistanceMetric
from scipy import ndimage
from sklearn.metrics import f1_score, jaccard_score

from tumorscope.metrics import segmentation as seg

# MONAI 1.6 warns about its own deprecated argument inside HausdorffDistanceMetric.
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")

SPACING_3D = (0.9, 1.2, 3.0)


def _boxes_3d() -> tuple[np.ndarray, np.ndarray]:
    """gt: 40×30×5 voxel box; pred: the same box grown by 2 voxels (6 mm) at both z ends."""
    gt = np.zeros((52, 41, 14), dtype=bool)
    gt[5:45, 6:36, 4:9] = True
    pred = np.zeros_like(gt)
    pred[5:45, 6:36, 2:11] = True
    return pred, gt


def test_box_overlap_and_volume_closed_form() -> None:
    pred, gt = _boxes_3d()
    voxel = 0.9 * 1.2 * 3.0
    assert seg.dice(pred, gt) == pytest.approx(2 * 6000 / (6000 + 10800), abs=1e-12)
    assert seg.iou(pred, gt) == pytest.approx(6000 / 10800, abs=1e-12)
    assert seg.volume_mm3(gt, SPACING_3D) == pytest.approx(6000 * voxel, rel=1e-12)
    assert seg.absolute_volume_error(pred, gt, SPACING_3D) == pytest.approx(4800 * voxel, rel=1e-12)
    assert seg.relative_volume_error(pred, gt, SPACING_3D) == pytest.approx(0.8, abs=1e-12)
    assert seg.pixel_accuracy(pred, gt) == pytest.approx(1 - 4800 / gt.size, abs=1e-12)


def test_box_hd95_closed_form_on_anisotropic_grid() -> None:
    # Every predicted top/bottom face voxel lies exactly 2 z-voxels (2 × 3.0 mm) from the gt
    # face and no surface distance exceeds that, so HD95 = HD = 6 mm.
    pred, gt = _boxes_3d()
    assert seg.hd95(pred, gt, SPACING_3D) == pytest.approx(6.0, abs=1e-12)
    assert seg.hausdorff(pred, gt, SPACING_3D) == pytest.approx(6.0, abs=1e-12)
    # Isotropic 1 mm: the same geometry is 2 mm apart.
    assert seg.hd95(pred, gt) == pytest.approx(2.0, abs=1e-12)


def test_box_boundary_f1_closed_form() -> None:
    pred, gt = _boxes_3d()
    tol = 3.5
    # pred surface: 3352 voxels; its two 40×30 faces (2400) are 6 mm away, the rest <= 3 mm.
    precision = (3352 - 2400) / 3352
    # gt surface: 2808 voxels; a gt face voxel is within 3.5 mm of the pred side walls when
    # it is <= 3 voxels (0.9 mm) from an x wall or <= 2 voxels (1.2 mm) from a y wall.
    far = 2 * (40 - 8) * (30 - 6)
    recall = (2808 - far) / 2808
    expected = 2 * precision * recall / (precision + recall)
    assert seg.boundary_f1(pred, gt, tol, SPACING_3D) == pytest.approx(expected, abs=1e-12)
    assert seg.boundary_f1(pred, gt, 6.0, SPACING_3D) == pytest.approx(1.0)


def test_rectangles_2d_closed_form() -> None:
    gt = np.zeros((41, 63), dtype=np.uint8)
    gt[10:30, 10:50] = 1
    pred = np.zeros_like(gt)
    pred[8:32, 10:50] = 1
    spacing = (0.8, 1.5)
    assert seg.dice(pred, gt) == pytest.approx(1600 / 1760, abs=1e-12)
    assert seg.hd95(pred, gt, spacing) == pytest.approx(1.6, abs=1e-12)
    assert seg.volume_mm3(gt, spacing) == pytest.approx(800 * 1.2, rel=1e-12)


def _ball(radius_mm: float, shape: tuple[int, int, int], spacing: tuple[float, ...]) -> np.ndarray:
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing, strict=True)]
    grid = np.meshgrid(*axes, indexing="ij")
    return np.asarray(sum(g**2 for g in grid) <= radius_mm**2)


def test_concentric_spheres_match_closed_form_within_discretisation() -> None:
    spacing = (0.5, 0.7, 1.1)
    shape = (52, 40, 26)
    outer, inner = _ball(10.0, shape, spacing), _ball(8.0, shape, spacing)
    assert seg.volume_mm3(outer, spacing) == pytest.approx(4 / 3 * np.pi * 10**3, rel=0.01)
    assert seg.volume_mm3(inner, spacing) == pytest.approx(4 / 3 * np.pi * 8**3, rel=0.01)
    assert seg.dice(outer, inner) == pytest.approx(2 * 8**3 / (10**3 + 8**3), abs=0.005)
    assert seg.iou(outer, inner) == pytest.approx(8**3 / 10**3, abs=0.005)
    # Surfaces are 2 mm apart; voxelisation moves each surface by at most ~half a voxel.
    assert seg.hd95(outer, inner, spacing) == pytest.approx(2.0, abs=max(spacing))


def _blobs(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = ndimage.gaussian_filter(rng.random(shape), 2) > 0.5
    b = ndimage.gaussian_filter(rng.random(shape), 2) > 0.5
    return a, b


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [((19, 23, 17), (0.9, 1.3, 2.5)), ((37, 41), (0.7, 1.9)), ((16, 21, 13), (1.0, 1.0, 1.0))],
)
def test_hd95_matches_monai(shape: tuple[int, ...], spacing: tuple[float, ...]) -> None:
    # Same definition as MONAI (max of the two directed 95th percentiles); MONAI is float32.
    for seed in range(3):
        a, b = _blobs(shape, seed)
        metric = HausdorffDistanceMetric(percentile=95)
        ref = float(
            metric(torch.tensor(a[None, None]), torch.tensor(b[None, None]), spacing=spacing)
        )
        assert seg.hd95(a, b, spacing) == pytest.approx(ref, rel=1e-6)
        full = HausdorffDistanceMetric()
        ref_max = float(
            full(torch.tensor(a[None, None]), torch.tensor(b[None, None]), spacing=spacing)
        )
        assert seg.hausdorff(a, b, spacing) == pytest.approx(ref_max, rel=1e-6)


def test_segmentation_metrics_agree_with_single_functions() -> None:
    a, b = _blobs((15, 22, 12), seed=3)
    spacing = (0.8, 1.1, 2.0)
    m = seg.segmentation_metrics(a, b, spacing, tol_mm=1.5)
    assert m["hd95"] == seg.hd95(a, b, spacing)
    assert m["boundary_f1"] == seg.boundary_f1(a, b, 1.5, spacing)
    assert m["abs_volume_error"] == seg.absolute_volume_error(a, b, spacing)
    assert m["dice"] == seg.dice(a, b) and m["pixel_accuracy"] == seg.pixel_accuracy(a, b)


def test_dice_iou_match_sklearn_on_random_masks() -> None:
    a, b = _blobs((13, 29, 11), seed=7)
    assert seg.dice(a, b) == pytest.approx(f1_score(b.ravel(), a.ravel()), abs=1e-12)
    assert seg.iou(a, b) == pytest.approx(jaccard_score(b.ravel(), a.ravel()), abs=1e-12)


def test_mask_touching_array_border_counts_border_as_surface() -> None:
    full = np.ones((8, 9, 10), dtype=bool)
    inner = np.zeros_like(full)
    inner[1:-1, 1:-1, 1:-1] = True
    # The outer shell is one voxel from the inner one everywhere except edges/corners.
    assert seg.hd95(full, inner) == pytest.approx(
        float(
            HausdorffDistanceMetric(percentile=95)(
                torch.tensor(full[None, None]), torch.tensor(inner[None, None])
            )
        ),
        rel=1e-6,
    )


@pytest.mark.parametrize(
    ("p_empty", "t_empty", "dice", "hd", "bf1"),
    [
        (True, True, 1.0, 0.0, 1.0),
        (True, False, 0.0, seg.EMPTY_HD95_MM, 0.0),
        (False, True, 0.0, seg.EMPTY_HD95_MM, 0.0),
    ],
)
def test_empty_mask_conventions(
    p_empty: bool, t_empty: bool, dice: float, hd: float, bf1: float
) -> None:
    pred, gt = _boxes_3d()
    if p_empty:
        pred = np.zeros_like(pred)
    if t_empty:
        gt = np.zeros_like(gt)
    assert seg.dice(pred, gt) == dice
    assert seg.iou(pred, gt) == dice
    assert seg.hd95(pred, gt, SPACING_3D) == hd
    assert seg.boundary_f1(pred, gt, 2.0, SPACING_3D) == bf1


def test_empty_mask_fourth_combination_and_volume_errors() -> None:
    pred, gt = _boxes_3d()
    assert seg.hd95(pred, gt, SPACING_3D) < seg.EMPTY_HD95_MM  # both non-empty: a real distance
    assert seg.dice(gt, gt) == 1.0
    empty = np.zeros_like(gt)
    assert seg.relative_volume_error(empty, empty) == 0.0
    assert np.isnan(seg.relative_volume_error(pred, empty))
    assert seg.relative_volume_error(empty, gt) == -1.0
    with pytest.raises(ValueError, match="non-empty"):
        seg.surface_distances(empty, gt)


def test_malformed_input_raises() -> None:
    with pytest.raises(ValueError, match="does not match"):
        seg.dice(np.zeros((4, 5)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="binary"):
        seg.dice(np.full((4, 5), 2), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="spacing"):
        seg.hd95(np.ones((4, 5)), np.ones((4, 5)), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="2D"):
        seg.dice(np.zeros(5), np.zeros(5))


def test_torch_tensor_input() -> None:
    pred, gt = _boxes_3d()
    assert seg.dice(torch.from_numpy(pred), torch.from_numpy(gt)) == seg.dice(pred, gt)


def test_aggregated_dice_and_accumulator() -> None:
    t1 = np.zeros((6, 6), dtype=bool)
    t1[1:3, 1:3] = True  # 4 voxels
    p1 = np.zeros_like(t1)
    p1[1:3, 1:2] = True  # 2 voxels, both inside
    t2 = np.zeros_like(t1)  # empty target ...
    p2 = np.zeros_like(t1)
    p2[0, 0] = True  # ... with one false positive
    # 2 * (2 + 0) / ((2 + 4) + (1 + 0)) = 4 / 7; per-case Dice would be (2/3 + 0) / 2.
    assert seg.aggregated_dice([p1, p2], [t1, t2]) == pytest.approx(4 / 7)
    acc = seg.SegmentationAccumulator(tol_mm=1.0)
    acc.update({"GTVp": p1, "GTVn": t1}, {"GTVp": t1, "GTVn": t1}, case_id="a")
    acc.update({"GTVp": p2, "GTVn": t1}, {"GTVp": t2, "GTVn": t1}, case_id="b")
    out = acc.compute()
    assert out["GTVp"]["aggregated_dice"] == pytest.approx(4 / 7)
    assert out["GTVp"]["dice"] == pytest.approx((2 * 2 / 6 + 0.0) / 2)
    assert out["GTVp"]["hd95"] == pytest.approx((seg.hd95(p1, t1) + seg.EMPTY_HD95_MM) / 2)
    assert out["GTVn"]["dice"] == 1.0 and out["GTVn"]["n"] == 2
    acc.reset()
    assert acc.compute() == {}
