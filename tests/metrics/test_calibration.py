"""Calibration: hand-computed ECE, calibrated sampler, scikit-learn bins, temperature recovery."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import expit, softmax
from sklearn.calibration import calibration_curve

from tumorscope.metrics import calibration as cal


def test_ece_hand_computed() -> None:
    prob = np.array([0.05, 0.15, 0.15, 0.95])
    label = np.array([0, 0, 1, 1])
    # bin 0: |0 − .05|·¼; bin 1: |.5 − .15|·½; bin 9: |1 − .95|·¼
    assert cal.ece(prob, label, n_bins=10) == pytest.approx(0.05 / 4 + 0.35 / 2 + 0.05 / 4)
    assert cal.ece([1.0, 0.0], [1, 0]) == 0.0  # p = 1 falls in the last bin


def test_ece_of_calibrated_sampler_is_zero_within_sampling_error() -> None:
    rng = np.random.default_rng(0)
    n = 20000
    p = rng.random(n)
    y = rng.random(n) < p
    # Per bin |acc − conf| ~ half-normal with sd <= sqrt(.25 / 2000): mean <= ~0.009.
    assert cal.ece(p, y) < 0.02
    # Outcomes drawn from p² instead: ECE → ∫ (p − p²) dp = 1/6.
    y_bad = rng.random(n) < p**2
    assert cal.ece(p, y_bad) == pytest.approx(1 / 6, abs=0.015)


def test_reliability_curve_matches_sklearn_uniform_bins() -> None:
    # Same bins for continuous data; at an exact bin edge sklearn assigns p = k/n to the
    # lower bin, we assign it to the upper one (b/n <= p < (b+1)/n).
    rng = np.random.default_rng(1)
    p = rng.beta(2, 3, 3000)
    y = rng.random(3000) < p
    curve = cal.reliability_curve(p, y, n_bins=10)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    ok = curve["count"] > 0
    np.testing.assert_allclose(curve["accuracy"][ok], prob_true, atol=1e-12)
    np.testing.assert_allclose(curve["confidence"][ok], prob_pred, atol=1e-12)
    assert curve["count"].sum() == 3000 and curve["edges"].shape == (11,)


def test_multiclass_ece_uses_top_label_confidence() -> None:
    prob = np.array([[0.7, 0.2, 0.1], [0.1, 0.75, 0.15], [0.3, 0.3, 0.4]])
    label = np.array([0, 2, 2])
    # confidences .7 (right), .75 (wrong) in bin 7; .4 (right) in bin 4.
    expected = 2 / 3 * abs(0.5 - 0.725) + 1 / 3 * abs(1.0 - 0.4)
    assert cal.ece(prob, label) == pytest.approx(expected)


def test_ece_input_errors() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cal.ece([1.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match="does not match"):
        cal.ece([0.2, 0.3], [1, 0, 1])
    with pytest.raises(ValueError, match="n_bins"):
        cal.ece([0.2], [1], n_bins=0)
    assert np.isnan(cal.ece(np.zeros(0), np.zeros(0)))


def test_fit_temperature_recovers_known_binary_temperature() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 3, 20000)
    labels = (rng.random(20000) < expit(logits / 2.0)).astype(int)
    t = cal.fit_temperature(logits, labels)
    assert t == pytest.approx(2.0, rel=0.08)
    # It is the NLL minimiser: torch's BCE is higher a little away on either side.
    z, y = torch.tensor(logits), torch.tensor(labels, dtype=torch.float64)

    def nll(temp: float) -> float:
        return float(torch.nn.functional.binary_cross_entropy_with_logits(z / temp, y))

    assert nll(t) < nll(t * 1.02) and nll(t) < nll(t / 1.02)
    calibrated = cal.apply_temperature(logits, t)
    assert cal.ece(calibrated, labels) < cal.ece(expit(logits), labels)


def test_fit_temperature_recovers_known_multiclass_temperature() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 1, (8000, 4))
    probs = softmax(logits / 0.5, axis=1)
    labels = np.array([rng.choice(4, p=row) for row in probs])
    assert cal.fit_temperature(logits, labels) == pytest.approx(0.5, rel=0.08)
    np.testing.assert_allclose(cal.apply_temperature(logits, 0.5), probs, atol=1e-12)


def test_fit_temperature_input_errors() -> None:
    with pytest.raises(ValueError, match="NaN"):
        cal.fit_temperature([0.1, float("nan")], [0, 1])
    with pytest.raises(ValueError, match="labels"):
        cal.fit_temperature([0.1, 0.2], [0, 3])
    with pytest.raises(ValueError, match="temperature"):
        cal.apply_temperature([0.1], 0.0)


def _half_plane() -> np.ndarray:
    mask = np.zeros((40, 30), dtype=np.uint8)
    mask[:10] = 1  # rows 0–9 tumour
    return mask


def test_boundary_band_closed_form_anisotropic() -> None:
    # Rows are 2 mm apart: within 4 mm of the boundary are rows 8, 9 (inside) and 10, 11.
    band = cal.boundary_band(_half_plane(), band_mm=4.0, spacing=(2.0, 1.0))
    expected = np.zeros((40, 30), dtype=bool)
    expected[8:12] = True
    np.testing.assert_array_equal(band, expected)


def test_segmentation_ece_only_counts_the_band() -> None:
    mask = _half_plane()
    prob = np.full(mask.shape, 0.7)
    # Band is half tumour → |0.5 − 0.7|; over the whole image it would be |0.25 − 0.7|.
    got = cal.segmentation_ece(prob, mask, band_mm=4.0, spacing=(2.0, 1.0))
    assert got == pytest.approx(0.2)
    assert cal.ece(prob.ravel(), mask.ravel()) == pytest.approx(0.45)
    assert cal.segmentation_ece(mask.astype(float), mask, 4.0, (2.0, 1.0)) == 0.0
    assert np.isnan(cal.segmentation_ece(prob, np.zeros_like(mask), 4.0))  # no boundary
    with pytest.raises(ValueError, match="does not match"):
        cal.segmentation_ece(prob[:5], mask, 4.0)


def test_equal_mass_bins_and_brier_against_scikit_learn() -> None:
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss

    rng = np.random.default_rng(4)
    p = rng.beta(0.5, 0.5, size=500)  # crowded near 0 and 1: equal width would starve the middle
    y = (rng.random(500) < p).astype(int)
    curve = cal.reliability_curve(p, y, n_bins=8, strategy="quantile")
    true, pred = calibration_curve(y, p, n_bins=8, strategy="quantile")
    ok = curve["count"] > 0
    np.testing.assert_allclose(curve["accuracy"][ok], true)
    np.testing.assert_allclose(curve["confidence"][ok], pred)
    assert curve["count"].min() >= 60 and curve["count"].max() <= 65  # about N / 8 each
    assert cal.brier(p, y) == pytest.approx(brier_score_loss(y, p))
    assert cal.ece(p, y, 8, "quantile") < 0.06  # calibrated by construction
    over = np.where(p > 0.5, 1 - (1 - p) / 4, p / 4)  # overconfident: pushed to 0 and 1
    assert cal.ece(over, y, 8, "quantile") > 0.1
    assert cal.brier(over, y) > cal.brier(p, y)
    with pytest.raises(ValueError, match="strategy"):
        cal.ece(p, y, strategy="kmeans")
