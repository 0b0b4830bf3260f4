"""The confidence-based review flag: the band around the threshold, its reason, old runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tumorscope.config import load_config
from tumorscope.inference.predictor import Predictor
from tumorscope.inference.review import NO_CUTOFF, review_decision
from tumorscope.runs import Calibration

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CAL = Calibration(threshold=0.4, review_confidence=0.12, review_target_error=0.02)


def test_a_decision_inside_the_band_needs_review_and_says_why() -> None:
    inside = review_decision(0.46, 0.4, CAL)
    assert inside.needs_review is True and inside.confidence == pytest.approx(0.06)
    assert inside.reason.startswith("tumour probability 0.460 is within the review band")
    assert "0.400 ± 0.120" in inside.reason and "error ≤ 2 %" in inside.reason
    below = review_decision(0.29, 0.4, CAL)  # under the threshold, 0.11 away: still inside
    assert below.needs_review is True
    outside = review_decision(0.9, 0.4, CAL, what="patient tumour")
    assert outside.needs_review is False
    assert outside.reason.startswith("patient tumour probability 0.900 is outside")
    edge = review_decision(0.52, 0.4, CAL)  # confidence 0.12 is not under 0.12
    assert edge.needs_review is False
    assert json.loads(json.dumps(inside.to_json()))["review_confidence"] == 0.12


def test_an_old_run_without_a_cutoff_flags_nothing_and_a_zero_cutoff_neither() -> None:
    old = review_decision(0.41, 0.4, Calibration(threshold=0.4))
    assert old.needs_review is None and old.reason == NO_CUTOFF
    assert old.confidence == pytest.approx(0.01)
    zero = review_decision(0.41, 0.4, CAL.replace(review_confidence=0.0))
    assert zero.needs_review is False and zero.reason.startswith("no review band")
    everything = CAL.replace(
        review_confidence=1.0, reasons={"review_confidence": "no cut-off keeps the error"}
    )
    flagged = review_decision(0.99, 0.4, everything)
    assert flagged.needs_review is True and flagged.reason.endswith("no cut-off keeps the error")
    broken = review_decision(float("nan"), 0.4, Calibration(threshold=0.4))
    assert broken.needs_review is True and broken.confidence is None


def test_predictions_carry_the_flag_in_their_json() -> None:
    cfg = load_config(CONFIGS / "tiny.yaml")
    image = np.random.default_rng(0).random((37, 41)).astype(np.float32)
    flag_all = {"threshold": 0.4, "review_confidence": 1.0, "review_target_error": 0.02}
    result = Predictor.from_config(cfg, calibration=flag_all).predict(image)
    review = result.to_json()["review"]
    assert review["needs_review"] is True and review["target_error"] == 0.02
    assert review["confidence"] == pytest.approx(abs(result.tumour_probability - 0.4))
    plain = Predictor.from_config(cfg, calibration={"threshold": 0.4}).predict(image)
    assert plain.review.needs_review is None and plain.to_json()["review"]["reason"] == NO_CUTOFF
    volume = np.random.default_rng(1).random((24, 20, 6)).astype(np.float32) * 100
    vol = Predictor.from_config(cfg, calibration=flag_all).predict_volume(volume)
    assert vol.to_json()["review"]["needs_review"] is True
    assert vol.review.reason.startswith("patient tumour probability")
