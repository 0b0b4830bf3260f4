"""BraTS lesion-wise and whole-volume figures against the challenge's own code.

References, independent of tumorscope:

- ``brats-evaluation`` 0.0.10 (the BraTS package on PyPI, on ``panoptica`` 2.1.7), run here
  on NIfTI files written to ``tmp_path`` with its bundled glioma (``gli``) and metastasis
  (``mets``) configs and its two leaderboard parsers;
- the BraTS 2023 code (``rachitsaluja/BraTS-2023-Metrics`` at 43c9052, not on PyPI),
  ``get_LesionWiseResults(pred, gt, "BraTS-GLI")``, run on these same masks; its WT row is
  stored in :data:`BRATS_2023` (numpy 2 / pandas 2 shims only, no change to the metric code).

Dice agrees to 1e-6 and HD95 to 0.01 mm where the definitions match; every difference is
asserted as documented in :mod:`tumorscope.metrics.lesionwise`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tumorscope.metrics import segmentation as seg
from tumorscope.metrics.lesionwise import (
    LESION_HD95_PENALTY_MM,
    LesionWiseParams,
    brats2023_params,
    lesion_wise,
)

panoptica = pytest.importorskip("panoptica")
brats_evaluation = pytest.importorskip("brats_evaluation")
from brats_evaluation import (  # noqa: E402
    config_path,
    evaluate_single_exam,
    parse_mets_results,
    parse_seg_results,
)
from panoptica.metrics._surface_distances import _surface_distance_pair  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:panoptica")

ISO = (1.0, 1.0, 1.0)
ANISO = (0.9, 1.2, 2.5)
PANOPTICA_EMPTY_HD95 = 373.0  # the parsers' stand-in for panoptica's infinite HD95
MIN_VOLUME = brats2023_params("BraTS-GLI").min_volume_mm3


@dataclass
class Case:
    """A mask pair; ``parts`` are its (lesion, matched prediction) pairs when one-to-one."""

    pred: np.ndarray
    gt: np.ndarray
    spacing: tuple[float, float, float] = ISO
    parts: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


def _ball(shape: tuple[int, int, int], center: tuple[int, int, int], r: float) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    return np.asarray(sum((grid[i] - center[i]) ** 2 for i in range(3)) <= r**2)


def several_lesions(spacing: tuple[float, float, float] = ISO) -> Case:
    """Lesion A overlapped by a shifted copy, B by a smaller ball, C missed, D small (27
    voxels) with a prediction, and a false-positive island far from every lesion."""
    shape = (52, 47, 39)
    parts = []
    for gt_box, pred_box in [
        ((slice(4, 14), slice(4, 14), slice(4, 10)), (slice(5, 15), slice(4, 14), slice(4, 10))),
        ((slice(4, 7), slice(36, 39), slice(30, 33)), (slice(5, 8), slice(36, 39), slice(31, 34))),
    ]:
        g, p = np.zeros(shape, bool), np.zeros(shape, bool)
        g[gt_box], p[pred_box] = True, True
        parts.append((g, p))
    parts.append((_ball(shape, (32, 30, 24), 6.0), _ball(shape, (33, 30, 23), 5.0)))
    gt = np.logical_or.reduce([g for g, _ in parts])
    pred = np.logical_or.reduce([p for _, p in parts])
    gt[38:45, 4:10, 4:9] = True  # C, 210 voxels, missed
    pred[44:49, 40:45, 30:35] = True  # false positive
    return Case(pred, gt, spacing, parts)


def shifted_box() -> Case:
    """One box and its copy one voxel along x: every definition gives the same figures."""
    gt = np.zeros((23, 19, 17), bool)
    gt[6:16, 6:14, 5:11] = True
    pred = np.roll(gt, 1, axis=0)
    return Case(pred, gt, ISO, [(gt, pred)])


def near_miss() -> Case:
    """A prediction two voxels beside a lesion, not touching it."""
    gt, pred = np.zeros((30, 25, 21), bool), np.zeros((30, 25, 21), bool)
    gt[5:13, 5:13, 5:12] = True
    pred[15:21, 5:13, 5:12] = True
    return Case(pred, gt)


def split_prediction() -> Case:
    """One lesion covered by two predicted components."""
    gt, pred = np.zeros((30, 25, 21), bool), np.zeros((30, 25, 21), bool)
    gt[5:21, 5:13, 5:12] = True
    pred[5:12, 5:13, 5:12] = True
    pred[14:21, 5:13, 5:12] = True
    return Case(pred, gt)


def merged_lesions() -> Case:
    """Two ground-truth components 3 voxels apart (one lesion after dilation), one found."""
    gt, pred = np.zeros((34, 25, 21), bool), np.zeros((34, 25, 21), bool)
    gt[4:12, 5:13, 5:12] = True
    gt[15:23, 5:13, 5:12] = True
    pred[4:12, 5:13, 5:12] = True
    return Case(pred, gt)


def both_empty() -> Case:
    return Case(np.zeros((20, 18, 16), bool), np.zeros((20, 18, 16), bool))


def pred_only() -> Case:
    pred = np.zeros((20, 18, 16), bool)
    pred[4:10, 4:10, 4:9] = True
    return Case(pred, np.zeros_like(pred))


def gt_only() -> Case:
    c = pred_only()
    return Case(c.gt, c.pred)


CASES: dict[str, Callable[[], Case]] = {
    "several_lesions": several_lesions,
    "several_lesions_aniso": lambda: several_lesions(ANISO),
    "shifted_box": shifted_box,
    "near_miss": near_miss,
    "split_prediction": split_prediction,
    "merged_lesions": merged_lesions,
    "both_empty": both_empty,
    "pred_only": pred_only,
    "gt_only": gt_only,
}

# BraTS 2023 code, WT row: (TP, FP, FN, Legacy_Dice, Legacy_HD95, LesionWise Dice, HD95).
BRATS_2023: dict[str, tuple[int, int, int, float, float, float, float]] = {
    "several_lesions": (2, 1, 1, 0.6992406734896005, 25.25866188063018, 0.4010416666666667, 187.80901699437493),
    "several_lesions_aniso": (3, 1, 1, 0.6992406734896005, 26.09999930858612, 0.4097222222222222, 150.89611686168922),
    "shifted_box": (1, 0, 0, 0.9, 1.0, 0.9, 1.0),
    "near_miss": (1, 0, 0, 0.0, 10.0, 0.0, 10.0),
    "split_prediction": (1, 0, 0, 0.9333333333333333, 2.0, 0.9333333333333333, 2.0),
    "merged_lesions": (1, 0, 0, 0.6666666666666666, 11.0, 0.6666666666666666, 11.0),
    "both_empty": (0, 0, 0, 1.0, 0.0, 1.0, 0.0),
    "pred_only": (0, 1, 0, 0.0, 374.0, 0.0, 374.0),
    "gt_only": (0, 0, 1, 0.0, 374.0, 0.0, 374.0),
}  # fmt: skip


@dataclass
class Official:
    """``brats-evaluation`` on one case, region WT.

    Attributes:
        glioma: panoptica's result dict of the ``gli`` config.
        glioma_row: ``parse_seg_results`` row (the glioma leaderboard figures).
        mets_row: ``parse_mets_results`` row with lesions above :data:`MIN_VOLUME` mm³.
    """

    glioma: dict[str, Any]
    glioma_row: dict[str, float]
    mets_row: dict[str, float]


def _run_official(folder: Path, case: Case) -> Official:
    folder.mkdir(parents=True)
    affine = np.diag([*case.spacing, 1.0])
    for name, mask in (("ref", case.gt), ("pred", case.pred)):
        # label 2 (oedema) is whole tumour only
        nib.save(nib.Nifti1Image(mask.astype(np.uint8) * 2, affine), folder / f"{name}.nii.gz")
    rows = []
    results = {}
    for config in ("gli", "mets"):
        evaluator = panoptica.Panoptica_Evaluator.load_from_config(str(config_path(config)))
        results[config] = evaluate_single_exam(
            str(folder / "pred.nii.gz"), str(folder / "ref.nii.gz"), "00001", evaluator
        )
        assert "error" not in results[config], results[config]
        summary = folder / f"{config}.json"
        summary.write_text(
            json.dumps({"metrics": [results[config]], "missings": []}, default=float)
        )
    # mets parser: lesions of volume >= threshold are scored (BraTS 2023 keeps those > 50 mm³),
    # a matched lesion counts as detected when its Dice >= 0 (always, as in BraTS 2023)
    parse_mets_results(str(folder / "mets.json"), MIN_VOLUME + 1e-3, 0.0, str(folder / "m.csv"))
    parse_seg_results(str(folder / "gli.json"), str(folder / "g.csv"))
    for csv in ("g.csv", "m.csv"):
        rows.append(pd.read_csv(folder / csv).iloc[0].to_dict())
    return Official(results["gli"]["wt"], rows[0], rows[1])


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Official]:
    panoptica.disable_citation_reminder()
    root = tmp_path_factory.mktemp("brats-evaluation")
    cache: dict[str, Official] = {}

    def get(name: str) -> Official:
        if name not in cache:
            cache[name] = _run_official(root / name, CASES[name]())
        return cache[name]

    return get


def _p95(x: np.ndarray) -> float:
    return float(np.percentile(x, 95))


NON_EMPTY = ["several_lesions", "several_lesions_aniso", "shifted_box", "near_miss",
             "split_prediction", "merged_lesions"]  # fmt: skip


# ---------------------------------------------------------------- whole-volume Dice, HD95
@pytest.mark.parametrize("name", [*NON_EMPTY, "pred_only", "gt_only"])
def test_whole_volume_dice_matches_official(name: str, official: Any) -> None:
    c = CASES[name]()
    ref = official(name)
    assert seg.dice(c.pred, c.gt) == pytest.approx(ref.glioma["global_bin_dsc"], abs=1e-6)
    assert seg.dice(c.pred, c.gt) == pytest.approx(ref.glioma_row["global_dsc_wt"], abs=1e-6)
    assert seg.dice(c.pred, c.gt) == pytest.approx(BRATS_2023[name][3], abs=1e-6)


def test_whole_volume_hd95_matches_where_definitions_do(official: Any) -> None:
    c = shifted_box()
    assert seg.hd95(c.pred, c.gt, c.spacing) == pytest.approx(1.0, abs=1e-12)
    assert official("shifted_box").glioma_row["global_hd95_wt"] == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("name", ["several_lesions", "several_lesions_aniso", "split_prediction"])
def test_whole_volume_hd95_differences(name: str, official: Any) -> None:
    """Same surfaces; ours is the larger directed P95 in mm, panoptica's global HD95 the P95
    of both sets pooled, in voxels (it does not pass the spacing to global metrics)."""
    c = CASES[name]()
    ref = official(name).glioma["global_bin_hd95"]
    sd_ref, sd_pred = _surface_distance_pair(c.gt, c.pred, c.spacing)
    ours = seg.hd95(c.pred, c.gt, c.spacing)
    assert ours == pytest.approx(max(_p95(sd_ref), _p95(sd_pred)), abs=0.01)
    unit_ref, unit_pred = _surface_distance_pair(c.gt, c.pred, None)
    assert ref == pytest.approx(_p95(np.concatenate([unit_ref, unit_pred])), abs=0.01)
    ours_pt, ours_tp = seg.surface_distances(c.pred, c.gt)  # our surfaces, 1 mm grid
    assert ref == pytest.approx(_p95(np.concatenate([ours_pt, ours_tp])), abs=0.01)
    if c.spacing != ISO:
        assert ref == pytest.approx(official("several_lesions").glioma["global_bin_hd95"])
        assert abs(ours - ref) > 0.5


def test_whole_volume_hd95_without_overlap_and_empty(official: Any) -> None:
    # panoptica: no overlap at all → infinite HD95 (373 in the parsers), even when both masks
    # hold voxels; ours (and BraTS 2023) measure the distance.
    c = near_miss()
    assert seg.hd95(c.pred, c.gt, c.spacing) == pytest.approx(10.0)
    assert official("near_miss").glioma["global_bin_hd95"] == np.inf
    assert official("near_miss").glioma_row["global_hd95_wt"] == PANOPTICA_EMPTY_HD95
    for name in ("pred_only", "gt_only"):  # one empty: 373.13 here, 373 there, 374 in 2023
        c = CASES[name]()
        assert seg.hd95(c.pred, c.gt) == seg.EMPTY_HD95_MM == 373.13
        assert official(name).glioma_row["global_hd95_wt"] == PANOPTICA_EMPTY_HD95
        assert BRATS_2023[name][4] == LESION_HD95_PENALTY_MM
    # both empty: Dice 1, HD95 0 here and in 2023; undefined (NaN) in panoptica
    c = both_empty()
    assert (seg.dice(c.pred, c.gt), seg.hd95(c.pred, c.gt)) == (1.0, 0.0)
    assert BRATS_2023["both_empty"][3:5] == (1.0, 0.0)
    assert np.isnan(official("both_empty").glioma["global_bin_dsc"])
    assert np.isnan(official("both_empty").glioma["global_bin_hd95"])


# ------------------------------------------------------------------------- lesion-wise
@pytest.mark.parametrize("name", list(CASES))
def test_lesion_wise_matches_brats_2023(name: str) -> None:
    c = CASES[name]()
    r = lesion_wise(c.pred, c.gt, c.spacing)
    tp, fp, fn, _, legacy_hd95, ref_dice, ref_hd95 = BRATS_2023[name]
    assert (r.n_tp, r.n_fp, r.n_fn) == (tp, fp, fn)
    assert r.dice == pytest.approx(ref_dice, abs=1e-6)
    # HD95 surfaces differ (MONAI's vs DeepMind's surface elements): within a voxel.
    assert r.hd95 == pytest.approx(ref_hd95, abs=max(c.spacing))
    if c.pred.any() and c.gt.any():  # whole-volume ("legacy") HD95 likewise
        assert seg.hd95(c.pred, c.gt, c.spacing) == pytest.approx(legacy_hd95, abs=max(c.spacing))


@pytest.mark.parametrize(
    "name", ["several_lesions", "several_lesions_aniso", "shifted_box", "gt_only"]
)
def test_lesion_dice_matches_official_metastasis_parser(name: str, official: Any) -> None:
    # One-to-one matches, no prediction near a lesion without touching it, lesions far
    # apart: BraTS 2023's matching and panoptica's bipartite matching coincide here.
    c = CASES[name]()
    r = lesion_wise(c.pred, c.gt, c.spacing)
    row = official(name).mets_row
    assert r.dice == pytest.approx(row["lesionwise_dsc_mean_wt"], abs=1e-6)
    assert (r.n_tp, r.n_fn, r.n_fp) == (
        row["large_instance_tp_wt"],
        row["large_instance_fn_wt"],
        row["large_instance_fp_wt"],
    )


@pytest.mark.parametrize("name", ["several_lesions", "several_lesions_aniso", "shifted_box"])
def test_lesion_hd95_differs_from_official_only_as_documented(name: str, official: Any) -> None:
    c = CASES[name]()
    r = lesion_wise(c.pred, c.gt, c.spacing)
    ref = official(name)
    theirs = {round(i["volume"], 2): i for i in ref.glioma["reference_instances"]}
    ours = {round(s.volume_mm3, 2): s for s in r.lesions}
    assert set(theirs) == set(ours)
    # Per lesion, the same surfaces: ours is the larger directed P95, theirs the pooled P95.
    for g, p in c.parts:
        vol = round(float(g.sum()) * float(np.prod(c.spacing)), 2)
        sd_ref, sd_pred = _surface_distance_pair(g, p, c.spacing)
        assert ours[vol].hd95 == pytest.approx(max(_p95(sd_ref), _p95(sd_pred)), abs=0.01)
        pooled = _p95(np.concatenate([sd_ref, sd_pred]))
        assert theirs[vol]["sq_hd95"] == pytest.approx(pooled, abs=0.01)
    # The score: the same average, with 374 mm (ours, as BraTS 2023) or 373 mm per miss / FP.
    kept = [v for v in ours if ours[v].counted]
    gap = sum(ours[v].hd95 - theirs[v].get("sq_hd95", PANOPTICA_EMPTY_HD95) for v in kept)
    gap += (LESION_HD95_PENALTY_MM - PANOPTICA_EMPTY_HD95) * r.n_fp
    assert r.hd95 - ref.mets_row["lesionwise_hd95_mean_wt"] == pytest.approx(
        gap / (len(kept) + r.n_fp), abs=0.01
    )
    if name == "shifted_box":  # no miss, no FP, tied directed P95s: the same figure
        assert r.hd95 == pytest.approx(ref.mets_row["lesionwise_hd95_mean_wt"], abs=0.01)


@pytest.mark.parametrize("name", ["several_lesions", "several_lesions_aniso"])
def test_official_glioma_lesion_dice_averages_matched_lesions_only(
    name: str, official: Any
) -> None:
    # brats-evaluation's glioma leaderboard "lesion-wise Dice" (panoptica's sq_dsc) leaves out
    # missed lesions and false positives, and keeps lesions of every size.
    c = CASES[name]()
    ref = official(name)
    matched = [i["sq_dsc"] for i in ref.glioma["reference_instances"] if i["is_matched"]]
    assert len(matched) == 3
    assert ref.glioma_row["lesionwise_dsc_mean_wt"] == pytest.approx(np.mean(matched), abs=1e-6)
    ours = [s.dice for s in lesion_wise(c.pred, c.gt, c.spacing).lesions if s.n_matched]
    assert sorted(ours) == pytest.approx(sorted(matched), abs=1e-6)


def test_brats_2023_matching_differs_from_bipartite_matching(official: Any) -> None:
    # near miss: a prediction inside the 3-voxel dilation is matched (Dice 0, HD95 measured);
    # panoptica counts a missed lesion and a false positive.
    c = near_miss()
    r = lesion_wise(c.pred, c.gt, c.spacing)
    m = official("near_miss").mets_row
    assert (r.n_tp, r.n_fp, r.dice, r.hd95) == (1, 0, 0.0, pytest.approx(10.0))
    assert (m["large_instance_fn_wt"], m["large_instance_fp_wt"]) == (1, 1)
    assert m["lesionwise_hd95_mean_wt"] == PANOPTICA_EMPTY_HD95
    # split prediction: both components are matched and scored as their union; panoptica
    # matches one and counts the other as a false positive.
    c = split_prediction()
    r = lesion_wise(c.pred, c.gt, c.spacing)
    m = official("split_prediction").mets_row
    assert r.n_fp == 0 and r.dice == pytest.approx(seg.dice(c.pred, c.gt), abs=1e-12)
    assert m["large_instance_fp_wt"] == 1
    assert m["lesionwise_dsc_mean_wt"] == pytest.approx(2 * 7 / 23 / 2, abs=1e-6)
    # merged lesions: components within the dilation are one lesion; panoptica has two.
    c = merged_lesions()
    r = lesion_wise(c.pred, c.gt, c.spacing)
    g = official("merged_lesions").glioma
    assert len(r.lesions) == 1 and r.dice == pytest.approx(2 * 448 / (896 + 448))
    assert g["n_ref_instances"] == 2 and g["fn"] == 1


def test_empty_conventions_against_official(official: Any) -> None:
    expected = {"both_empty": (1.0, 0.0), "pred_only": (0.0, 374.0), "gt_only": (0.0, 374.0)}
    for name, (d, h) in expected.items():
        c = CASES[name]()
        r = lesion_wise(c.pred, c.gt, c.spacing)
        assert (r.dice, r.hd95) == (d, h)
    # brats-evaluation: without ground truth the metastasis score is undefined, the glioma
    # one undefined (both empty) or 0 (false positives only); a missed lesion gets 373 mm.
    for name in ("both_empty", "pred_only"):
        assert np.isnan(official(name).mets_row["lesionwise_dsc_mean_wt"])
    assert np.isnan(official("both_empty").glioma_row["lesionwise_dsc_mean_wt"])
    assert official("pred_only").glioma_row["lesionwise_dsc_mean_wt"] == 0.0
    assert official("gt_only").mets_row["lesionwise_hd95_mean_wt"] == PANOPTICA_EMPTY_HD95


# ------------------------------------------------------------ closed forms and edge cases
def test_closed_form_score() -> None:
    # Two 5×5×4 lesions (100 voxels): one found exactly, one missed; one FP; one small lesion.
    gt, pred = np.zeros((40, 30, 20), bool), np.zeros((40, 30, 20), bool)
    gt[2:7, 2:7, 2:6] = pred[2:7, 2:7, 2:6] = True
    gt[20:25, 2:7, 2:6] = True
    gt[2:4, 20:23, 12:15] = True  # 18 voxels: left out, and so is its prediction
    pred[2:4, 20:22, 12:15] = True
    pred[32:36, 22:26, 14:18] = True  # FP
    r = lesion_wise(pred, gt)
    assert (r.n_tp, r.n_fn, r.n_fp, len(r.lesions)) == (1, 1, 1, 3)
    assert r.dice == pytest.approx((1.0 + 0.0) / 3)
    assert r.hd95 == pytest.approx((0.0 + 374.0 + 374.0) / 3)
    small = next(s for s in r.lesions if not s.counted)
    assert small.volume_mm3 == 18.0 and small.dice == pytest.approx(2 * 12 / 30)
    # anisotropic voxels of 3 mm³: the small lesion (54 mm³) now counts
    r = lesion_wise(pred, gt, (1.0, 1.0, 3.0))
    assert (r.n_tp, len([s for s in r.lesions if s.counted])) == (2, 3)


def test_only_small_lesions_score_as_empty() -> None:
    gt = np.zeros((12, 12, 12), bool)
    gt[3:6, 3:6, 3:6] = True  # 27 voxels <= 50 mm³
    assert (lesion_wise(np.zeros_like(gt), gt).dice, lesion_wise(np.zeros_like(gt), gt).hd95) == (
        1.0,
        0.0,
    )
    pred = np.zeros_like(gt)
    pred[9:11, 9:11, 9:11] = True  # far away: a false positive
    assert lesion_wise(pred, gt).dice == 0.0
    assert lesion_wise(pred, gt).hd95 == LESION_HD95_PENALTY_MM
    # exactly 50 mm³ is still left out (the challenge keeps lesions > 50 mm³); 51 counts
    gt = np.zeros((12, 12, 12), bool)
    gt[3:8, 3:8, 3:5] = True
    missed = lesion_wise(np.zeros_like(gt), gt)
    assert (missed.dice, missed.hd95, missed.lesions[0].volume_mm3) == (1.0, 0.0, 50.0)
    gt[8, 8, 3] = True  # one voxel more, touching the lesion diagonally
    assert lesion_wise(np.zeros_like(gt), gt).n_fn == 1


def test_parameters() -> None:
    c = near_miss()
    none = lesion_wise(c.pred, c.gt, params=LesionWiseParams(dilation_iterations=0))
    assert (none.n_fn, none.n_fp) == (1, 1)  # no dilation: the near miss is a miss + FP
    one = lesion_wise(c.pred, c.gt, params=brats2023_params("BraTS-MET"))
    assert (one.n_fn, one.n_fp) == (1, 1)  # 2 voxels away, one dilation does not reach
    assert brats2023_params("BraTS-MEN") == LesionWiseParams(1, 50.0)
    with pytest.raises(KeyError, match="BraTS-GLI"):
        brats2023_params("BraTS-XYZ")
    with pytest.raises(ValueError, match="dilation_iterations"):
        LesionWiseParams(dilation_iterations=-1)


def test_inputs_are_validated() -> None:
    with pytest.raises(ValueError, match="3D"):
        lesion_wise(np.zeros((5, 6), bool), np.zeros((5, 6), bool))
    with pytest.raises(ValueError, match="does not match"):
        lesion_wise(np.zeros((5, 6, 7), bool), np.zeros((5, 6, 8), bool))
    with pytest.raises(ValueError, match="binary"):
        lesion_wise(np.full((5, 6, 7), 2), np.zeros((5, 6, 7)))


def test_lesion_touching_the_array_border() -> None:
    # Crops are clipped at the array edge: a lesion in the corner and a prediction there.
    gt = np.zeros((9, 10, 11), bool)
    gt[:4, :4, :5] = True
    pred = np.zeros_like(gt)
    pred[:3, :4, :5] = True
    r = lesion_wise(pred, gt)
    assert r.dice == pytest.approx(seg.dice(pred, gt))
    assert r.hd95 == pytest.approx(seg.hd95(pred, gt))
