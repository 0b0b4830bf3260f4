"""The metrics.json schema: complete reports pass, every kind of fault is named."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from tumorscope.evaluation.collect import HeldOut
from tumorscope.evaluation.schema import MetricsSchemaError, validate_metrics
from tumorscope.evaluation.sections import compute_metrics


def _held() -> HeldOut:
    rng = np.random.default_rng(0)
    h = HeldOut(regions=["WT", "TC"], temperature=1.3, threshold=0.4)
    for i in range(6):
        pid = f"P{i}"
        h.case_ids.append(pid)
        h.case_source.append("brats")
        h.dice.append(float(rng.random()))
        h.dice_ungated.append(float(rng.random()))
        h.hd95.append(float(rng.random() * 10))
        h.lesion_dice.append(float(rng.random()))
        h.lesion_hd95.append(float(rng.random() * 374))
        h.gated.append(False)
        for r in h.regions:
            h.dice_by_region.setdefault(r, []).append(float(rng.random()))
            h.hd95_by_region.setdefault(r, []).append(float(rng.random()))
            h.lesion_dice_by_region.setdefault(r, []).append(float(rng.random()))
            h.lesion_hd95_by_region.setdefault(r, []).append(float(rng.random()))
        for z in range(5):
            h.slice_patient.append(pid)
            h.slice_index.append(z)
            h.slice_source.append("brats")
            h.slice_label.append(int(1 <= z <= 3))
            h.slice_boundary.append(z in (0, 1, 3, 4))
            lg = float(rng.normal() + h.slice_label[-1])
            h.slice_logit.append(lg)
            h.slice_prob.append(float(1 / (1 + np.exp(-lg / h.temperature))))
        h.risk[pid] = float(rng.normal())
        h.outcomes[pid] = (float(rng.uniform(10, 500)), bool(i % 3))
    return h


CALIBRATION: dict[str, Any] = {
    "train_survival": {"time": [20.0, 100.0, 200.0, 400.0, 600.0], "event": [1, 0, 1, 1, 0]},
    "tau": 450.0,
    "baseline_hazard": {"times": [20.0, 200.0, 400.0], "cumulative": [0.1, 0.4, 0.9]},
}


@pytest.fixture(scope="module")
def metrics() -> dict[str, Any]:
    return compute_metrics(_held(), CALIBRATION, n_boot=20)


def test_computed_metrics_validate(metrics: dict[str, Any]) -> None:
    validate_metrics(metrics)
    assert metrics["segmentation"]["by_region"]["TC"]["dice"]["value"] is not None
    held = _held()
    seg = metrics["segmentation"]
    assert seg["lesion_dice"]["value"] == pytest.approx(np.mean(held.lesion_dice))
    assert seg["lesion_hd95"]["value"] == pytest.approx(np.mean(held.lesion_hd95))
    assert (seg["lesion_dice"]["unit"], seg["lesion_hd95"]["unit"]) == ("", "mm")
    assert seg["lesion_dice"]["n"] == len(held.case_ids)
    lo, hi = seg["lesion_hd95"]["ci95"]
    assert lo <= seg["lesion_hd95"]["value"] <= hi
    tc = seg["by_region"]["TC"]
    assert tc["lesion_dice"]["value"] == pytest.approx(np.mean(held.lesion_dice_by_region["TC"]))
    assert tc["lesion_hd95"]["value"] == pytest.approx(np.mean(held.lesion_hd95_by_region["TC"]))
    assert metrics["survival"]["c_index_oracle"]["value"] is None
    assert metrics["survival"]["c_index_oracle"]["reason"] == "the data has no true-risk sidecar"


def test_empty_data_validates_with_reasons() -> None:
    m = compute_metrics(HeldOut(regions=["WT"]), {}, n_boot=5)
    validate_metrics(m)
    assert m["segmentation"]["by_region"]["WT"]["dice"]["reason"]
    for key in ("lesion_dice", "lesion_hd95"):
        assert m["segmentation"][key]["value"] is None and m["segmentation"][key]["reason"]
        assert m["segmentation"]["by_region"]["WT"][key]["value"] is None
    assert m["classification"]["roc_auc"]["value"] is None
    assert m["classification"]["by_source"] == {}
    assert all(m["survival"][k]["value"] is None for k in ("c_index", "ibs", "td_auc"))


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda m: m["segmentation"].pop("dice_ungated"), "segmentation"),
        (lambda m: m["survival"].pop("ibs"), "survival"),
        (lambda m: m["classification"]["roc_auc"].update(value=None), "classification.roc_auc"),
        (lambda m: m["calibration"]["ece"].update(ci95=[0.1]), "calibration.ece.ci95"),
        (lambda m: m["segmentation"]["hd95_mm"].update(n=-1), "segmentation.hd95_mm.n"),
        (lambda m: m["segmentation"]["by_region"]["WT"].pop("dice"), "segmentation.by_region.WT"),
        (lambda m: m.update(schema_version=2), "schema_version"),
        (lambda m: m["calibration"]["ece"].update(value="0.1"), "calibration.ece.value"),
    ],
)
def test_faults_are_named(metrics: dict[str, Any], edit: Any, where: str) -> None:
    broken = copy.deepcopy(metrics)
    edit(broken)
    with pytest.raises(MetricsSchemaError, match=f"metrics.json: {where}"):
        validate_metrics(broken)


def test_reliability_bins_are_scikit_learns_and_give_the_ece(metrics: dict[str, Any]) -> None:
    from sklearn.calibration import calibration_curve

    held = _held()
    logit, label = np.asarray(held.slice_logit), np.asarray(held.slice_label)
    cal = metrics["calibration"]
    after = ("after_temperature", held.temperature, "ece_after_temperature")
    for key, t, ece_key in (("before_temperature", 1.0, "ece"), after):
        bins = cal["reliability"][key]
        observed, predicted = calibration_curve(
            label, 1 / (1 + np.exp(-logit / t)), n_bins=10, strategy="quantile"
        )
        np.testing.assert_allclose(bins["predicted"], predicted, rtol=1e-12)
        np.testing.assert_allclose(bins["observed"], observed, rtol=1e-12)
        n = np.asarray(bins["count"])
        assert n.sum() == label.size and (n > 0).all()
        gap = np.abs(np.asarray(bins["observed"]) - np.asarray(bins["predicted"]))
        assert float(np.sum(n / n.sum() * gap)) == pytest.approx(cal[ece_key]["value"])
    assert cal["by_source"]["brats"]["reliability"] == cal["reliability"]  # the only source


def test_a_report_without_reliability_bins_still_validates(metrics: dict[str, Any]) -> None:
    older = copy.deepcopy(metrics)
    del older["calibration"]["reliability"]
    validate_metrics(older)
    older["calibration"]["reliability"] = {"after_temperature": {"predicted": [0.5]}}
    with pytest.raises(MetricsSchemaError, match=r"calibration\.reliability"):
        validate_metrics(older)
