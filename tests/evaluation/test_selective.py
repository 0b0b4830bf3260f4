"""The ``selective`` section, its schema, its report table and its plot on hand-made outputs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from tumorscope.evaluation import plots
from tumorscope.evaluation.collect import HeldOut
from tumorscope.evaluation.report import selective_table
from tumorscope.evaluation.schema import MetricsSchemaError, validate_metrics
from tumorscope.evaluation.sections import compute_metrics
from tumorscope.evaluation.selective import case_confidence, selective_section

T = 0.4


def _held(dice: list[float]) -> HeldOut:
    """Volumes with 6 slices each (slice ``z`` has tumour for z >= 3) and 30 images."""
    rng = np.random.default_rng(0)
    h = HeldOut(regions=["WT"], temperature=1.0, threshold=T)
    for i, d in enumerate(dice):
        pid = f"P{i}"
        h.case_ids.append(pid)
        h.case_source.append("brats")
        h.dice.append(d)
        for z in range(6):
            label = int(z >= 3)
            # Sure and right, except slice 2 (unsure, wrong) of the cases with low Dice.
            p = 0.45 if (z == 2 and d < 0.7) else (0.95 if label else 0.02)
            h.slice_patient.append(pid)
            h.slice_index.append(z)
            h.slice_source.append("brats")
            h.slice_label.append(label)
            h.slice_boundary.append(z in (2, 3))
            h.slice_prob.append(p)
            h.slice_logit.append(float(np.log(p / (1 - p))))
    for k in range(30):
        label = int(k % 2)
        p = float(np.clip(rng.normal(0.7 if label else 0.2, 0.25), 0.001, 0.999))
        h.image_ids.append(f"img{k}")
        h.image_source.append("kaggle")
        h.image_label.append(label)
        h.image_prob.append(p)
        h.image_logit.append(float(np.log(p / (1 - p))))
        h.image_strata.append(None)
    return h


DICE = [0.9, 0.85, 0.4, 0.95, 0.5, 0.88, 0.3, 0.92]


def test_slice_and_image_figures_match_scikit_learn_and_hand_counts() -> None:
    held = _held(DICE)
    sel = selective_section(held, {"threshold": T}, n_boot=50, seed=0)
    s = sel["slices"]
    # Three wrong slices (the low-Dice cases' slice 2), each the least confident of all.
    assert (s["n_decisions"], s["n_wrong"]) == (48, 3)
    assert s["uncertainty_auroc"]["value"] == 1.0
    assert s["error_full"]["value"] == pytest.approx(3 / 48)
    assert s["error_at_90"]["value"] == 0.0  # 44 most confident: the errors are the last 3
    assert s["error_ratio_at_90"]["value"] == 0.0
    assert s["risk_coverage"]["risk"][-1] == pytest.approx(3 / 48)
    assert s["uncertainty_auroc"]["n"] == len(DICE)  # patients resampled, not slices
    img = sel["images"]
    prob, label = np.asarray(held.image_prob), np.asarray(held.image_label)
    wrong = (prob >= T) != label
    auroc = roc_auc_score(wrong, -np.abs(prob - T))
    assert img["uncertainty_auroc"]["value"] == pytest.approx(auroc, abs=1e-12)
    assert sel["by_source"]["kaggle"]["uncertainty_auroc"]["value"] == pytest.approx(auroc)
    assert sel["by_source"]["brats"]["n_wrong"] == 3
    lo, hi = img["uncertainty_auroc"]["ci95"]
    assert lo <= auroc <= hi
    for group in (s, img):  # no cut-off in this calibration: null with a reason
        assert group["review_rate"]["value"] is None
        assert "no review_confidence" in group["review_rate"]["reason"]


def test_review_rate_and_accepted_error_at_the_runs_cutoff() -> None:
    held = _held(DICE)
    sel = selective_section(held, {"threshold": T, "review_confidence": 0.1}, n_boot=20, seed=0)
    s = sel["slices"]
    # Only the three unsure slices (|0.45 − 0.4| = 0.05) are under the cut-off.
    assert s["review_rate"]["value"] == pytest.approx(3 / 48)
    assert s["accepted_error"]["value"] == 0.0
    assert sel["review_confidence"] == 0.1


def test_volume_uncertainty_detects_low_dice_and_needs_enough_of_them() -> None:
    held = _held(DICE)
    conf = case_confidence(held)
    # Called slices (p >= 0.4): z = 3..5 at 0.95 and, for low Dice, z = 2 at 0.45.
    np.testing.assert_allclose(conf[[0, 2]], [0.55, (3 * 0.55 + 0.05) / 4])
    vol = selective_section(held, {"threshold": T}, n_boot=20, seed=0)["volumes"]
    assert (vol["n_volumes"], vol["n_low_dice"]) == (8, 3)
    assert vol["low_dice_auroc"]["value"] == 1.0
    assert vol["dice_coverage"]["mean_dice"][-1] == pytest.approx(np.mean(DICE))
    few = selective_section(_held([0.9, 0.8, 0.4, 0.95]), {"threshold": T}, n_boot=5, seed=0)
    assert few["volumes"]["low_dice_auroc"]["value"] is None
    assert "1 of 4 volumes have Dice < 0.7" in few["volumes"]["low_dice_auroc"]["reason"]


def test_a_random_score_gives_an_auroc_near_one_half() -> None:
    rng = np.random.default_rng(5)
    h = HeldOut(regions=["WT"], threshold=0.5)
    for k in range(4000):  # the label ignores the probability: errors are random
        p = float(rng.uniform(0.01, 0.99))
        h.image_ids.append(f"i{k}")
        h.image_source.append("kaggle")
        h.image_label.append(int(rng.random() < 0.5))
        h.image_prob.append(p)
        h.image_logit.append(float(np.log(p / (1 - p))))
        h.image_strata.append(None)
    img = selective_section(h, {}, n_boot=2, seed=0)["images"]
    assert img["uncertainty_auroc"]["value"] == pytest.approx(0.5, abs=0.03)


def test_empty_groups_are_null_with_reasons() -> None:
    sel = selective_section(HeldOut(regions=["WT"]), {}, n_boot=5, seed=0)
    assert sel["slices"]["uncertainty_auroc"]["reason"] == "no decision in this group"
    assert sel["volumes"]["low_dice_auroc"]["value"] is None
    assert sel["slices"]["risk_coverage"] == {"coverage": [], "risk": []}


@pytest.fixture(scope="module")
def metrics() -> dict[str, Any]:
    return compute_metrics(_held(DICE), {"threshold": T, "review_confidence": 0.1}, n_boot=10)


def test_the_schema_takes_the_section_and_old_reports_without_it(metrics: dict[str, Any]) -> None:
    validate_metrics(metrics)
    old = copy.deepcopy(metrics)
    del old["selective"]
    validate_metrics(old)
    bad = copy.deepcopy(metrics)
    del bad["selective"]["slices"]["uncertainty_auroc"]
    with pytest.raises(MetricsSchemaError, match=r"selective\.slices"):
        validate_metrics(bad)


def test_report_table(metrics: dict[str, Any]) -> None:
    lines = selective_table(metrics)
    assert lines[0] == "## selective prediction"
    assert any(line.startswith("| slices | 48 | 3 | 1.000") for line in lines)
    assert any(line.startswith("| source kaggle | 30 |") for line in lines)
    assert "Review cut-off: confidence < 0.100" in "\n".join(lines)
    slices = next(line for line in lines if line.startswith("| slices"))
    assert "–" not in slices  # with a cut-off the review rate and accepted error are shown
    assert selective_table({k: v for k, v in metrics.items() if k != "selective"}) == []


def test_risk_coverage_plot(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    conf = rng.random(300)
    wrong = rng.random(300) < 0.3 * (1 - conf)
    path = plots.plot_risk_coverage(
        {"slices": (conf, wrong), "images": (conf[:50], wrong[:50])},
        tmp_path / "rc.png",
        review_confidence=0.2,
    )
    with Image.open(path) as im:
        img = np.asarray(im.convert("RGB"), dtype=float)
    assert float((img.max(axis=2) - img.min(axis=2) > 60).mean()) > 0.002  # coloured curves
    empty = plots.plot_risk_coverage({"slices": (np.zeros(0), np.zeros(0))}, tmp_path / "e.png")
    assert empty.is_file()
