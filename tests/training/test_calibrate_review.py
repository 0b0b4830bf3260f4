"""The review cut-off: chosen by calibrate on the validation decisions, stored in the manifest."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from tumorscope.config import CalibrationConfig
from tumorscope.metrics.selective import decision_confidence, decision_errors
from tumorscope.runs import Calibration, RunManifest
from tumorscope.training.calibrate import calibrate
from tumorscope.training.loop import ValidationOutputs


def _validation(logits: np.ndarray, labels: np.ndarray) -> ValidationOutputs:
    val = ValidationOutputs()
    val.tumour.update(special.expit(logits), labels)
    val.tumour_logit.extend(float(z) for z in logits)
    return val


def _fixture() -> ValidationOutputs:
    """40 validation slices, 20 with tumour: two tumour slices and one tumour-free slice
    near the decision, and one confident false positive (logit 5)."""
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(20), np.zeros(20)]
    logits = np.where(labels == 1, rng.uniform(2, 6, 40), rng.uniform(-6, -2, 40))
    logits[[0, 1]] = [-0.1, -0.2]  # unsure tumour slices
    logits[[20, 21]] = [0.15, 5.0]  # an unsure and a confident tumour-free slice
    return _validation(logits, labels)


def _brute_force_cutoff(conf: np.ndarray, wrong: np.ndarray, target: float) -> float:
    """The rule by enumeration: the smallest observed confidence (0 for all) whose accepted
    set ``conf >= cut`` errs at most ``target``."""
    for cut in [0.0, *sorted(set(conf.tolist()))]:
        if wrong[conf >= cut].mean() <= target:
            return cut
    raise AssertionError("no cut-off meets the target")


def test_the_cutoff_is_the_smallest_whose_accepted_validation_decisions_meet_the_target() -> None:
    val = _fixture()
    # Sensitivity 1: the threshold is the lowest tumour slice's probability, σ(−0.2).
    cfg = CalibrationConfig(
        temperature=False, threshold="sensitivity", target_sensitivity=1.0,
        review_target_error=0.03,
    )  # fmt: skip
    cal = calibrate(cfg, val, ValidationOutputs(), None)
    assert cal.threshold == pytest.approx(special.expit(-0.2))
    assert cal.review_target_error == 0.03 and cal.review_confidence is not None
    probs = special.expit(np.asarray(val.tumour_logit))
    labels = val.tumour.arrays()[1]
    conf = decision_confidence(probs, cal.threshold)
    wrong = decision_errors(probs, labels, cal.threshold)
    assert wrong.sum() == 2  # the two false positives; 2/40 = 5 % over the target
    kept = conf >= cal.review_confidence
    # Reviewing the unsure false positive and the two less sure slices under it leaves the
    # confident one: 1 of 37 = 2.7 % <= 3 %; any smaller cut-off keeps 2 errors, >= 5.3 %.
    assert (~kept).sum() == 3 and wrong[kept].mean() == pytest.approx(1 / 37)
    assert cal.review_confidence == _brute_force_cutoff(conf, wrong, 0.03)
    youden = calibrate(CalibrationConfig(temperature=False), val, ValidationOutputs(), None)
    yc = decision_confidence(probs, youden.threshold)
    yw = decision_errors(probs, labels, youden.threshold)
    assert youden.review_confidence == _brute_force_cutoff(yc, yw, 0.02)


def test_no_target_no_data_and_a_target_nothing_meets() -> None:
    off = calibrate(
        CalibrationConfig(review_target_error=None), _fixture(), ValidationOutputs(), None
    )
    assert off.review_confidence is None and "null" in off.reasons["review_confidence"]
    empty = calibrate(CalibrationConfig(), ValidationOutputs(), ValidationOutputs(), None)
    assert empty.review_confidence is None
    assert "no labelled validation decision" in empty.reasons["review_confidence"]
    strict = calibrate(
        CalibrationConfig(temperature=False, review_target_error=0.0),
        _fixture(),
        ValidationOutputs(),
        None,
    )  # error 0: only the decisions more confident than the confident false positive pass
    assert strict.review_confidence is not None and strict.review_confidence > 0.5


def test_the_cutoff_survives_the_manifest_and_an_old_manifest_has_none() -> None:
    cal = calibrate(CalibrationConfig(), _fixture(), ValidationOutputs(), None)
    raw = {
        "format": "tumorscope-run",
        "config": {"calibration": {}},
        "preprocessing": {"profile": "brain-mri"},
        "calibration": cal.to_dict(),
    }
    back = RunManifest.from_dict(raw).calibration
    assert back is not None and back.review_confidence == cal.review_confidence
    assert back.review_target_error == CalibrationConfig().review_target_error
    old = dict(raw, schema_version=3, calibration={"temperature": 1.2, "threshold": 0.4})
    old_cal = RunManifest.from_dict(old).calibration
    assert old_cal is not None
    assert old_cal.review_confidence is None and old_cal.review_target_error is None
    with pytest.raises(ValueError, match=r"review_confidence 1\.5 is not"):
        Calibration.from_dict({"review_confidence": 1.5})
