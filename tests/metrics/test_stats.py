"""Bootstrap CIs, paired bootstrap, non-inferiority and DeLong, against analytic values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from tumorscope.metrics import stats
from tumorscope.metrics.classification import roc_auc
from tumorscope.metrics.delong import delong_auc_variance, delong_ci, delong_test


def test_bootstrap_mean_ci_matches_normal_theory() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 2.0, 400)
    est, lo, hi = stats.bootstrap_ci(x, n_boot=400, seed=1)
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size)
    assert est == pytest.approx(x.mean(), abs=1e-12)
    assert lo == pytest.approx(x.mean() - half, abs=0.05)
    assert hi == pytest.approx(x.mean() + half, abs=0.05)


def test_bootstrap_resamples_patients_not_rows() -> None:
    rng = np.random.default_rng(2)
    per_patient = rng.normal(0.8, 0.1, 30)
    rows = np.repeat(per_patient, 3)  # three slices per patient, identical values
    groups = np.repeat([f"p{i:02d}" for i in range(30)], 3)
    by_patient = stats.bootstrap_ci(rows, groups, n_boot=200, seed=5)
    on_patients = stats.bootstrap_ci(per_patient, n_boot=200, seed=5)
    # Equal-sized patients: each replicate mean equals the mean of the drawn patients.
    np.testing.assert_allclose(by_patient, on_patients, atol=1e-12)
    by_row = stats.bootstrap_ci(rows, n_boot=200, seed=5)
    # Treating the 90 correlated slices as independent shrinks the interval by ~√3.
    width_rows, width_patients = by_row.hi - by_row.lo, by_patient.hi - by_patient.lo
    assert width_rows < 0.8 * width_patients


def test_bootstrap_statistic_over_several_arrays_and_nan_replicates() -> None:
    score = np.array([0.1, 0.9, 0.8, 0.3, 0.6, 0.2])
    label = np.array([0, 1, 1, 0, 1, 0])
    est, lo, hi = stats.bootstrap_ci((score, label), statistic=roc_auc, n_boot=200, seed=0)
    assert est == 1.0 and lo == 1.0 and hi == 1.0  # separable on every two-class resample
    one_class = stats.bootstrap_ci((score, np.ones(6, int)), statistic=roc_auc, n_boot=50)
    assert np.isnan(one_class.estimate) and np.isnan(one_class.lo)
    with pytest.raises(ValueError, match="statistic"):
        stats.bootstrap_ci((score, label))
    with pytest.raises(ValueError, match="groups"):
        stats.bootstrap_ci(score, groups=[1, 2])
    with pytest.raises(ValueError, match="first dimension"):
        stats.bootstrap_ci((score, label[:3]), statistic=roc_auc)


def test_bootstrap_is_reproducible() -> None:
    x = np.arange(20.0)
    assert stats.bootstrap_ci(x, n_boot=100, seed=3) == stats.bootstrap_ci(x, n_boot=100, seed=3)


def _accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean(pred == target))


def test_paired_bootstrap_matches_paired_normal_theory() -> None:
    rng = np.random.default_rng(4)
    target = rng.integers(0, 2, 500)
    a = np.where(rng.random(500) < 0.85, target, 1 - target)
    b = np.where(rng.random(500) < 0.75, target, 1 - target)
    res = stats.paired_bootstrap(_accuracy, a, b, target, n_boot=400, seed=0)
    d = (a == target).astype(float) - (b == target).astype(float)
    half = 1.96 * d.std(ddof=1) / np.sqrt(d.size)
    assert res.delta == pytest.approx(d.mean(), abs=1e-12)
    assert res.lo == pytest.approx(d.mean() - half, abs=0.015)
    assert res.hi == pytest.approx(d.mean() + half, abs=0.015)
    assert res.p < 0.01


def test_paired_bootstrap_identical_models() -> None:
    rng = np.random.default_rng(5)
    target = rng.integers(0, 2, 50)
    pred = rng.integers(0, 2, 50)
    res = stats.paired_bootstrap(_accuracy, pred, pred, target, n_boot=100)
    assert (res.delta, res.lo, res.hi, res.p) == (0.0, 0.0, 0.0, 1.0)


def test_non_inferiority_decision() -> None:
    assert stats.non_inferiority(-0.01, margin=0.02)
    assert not stats.non_inferiority(-0.03, margin=0.02)
    assert not stats.non_inferiority(-0.02, margin=0.02)  # strict: the bound must clear it
    assert not stats.non_inferiority(float("nan"), margin=0.02)
    with pytest.raises(ValueError, match="margin"):
        stats.non_inferiority(0.0, margin=0.0)


def _brute_force_components(score: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pos, neg = score[label == 1], score[label == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)


def test_delong_variance_equals_brute_force_structural_components() -> None:
    score = np.array([0.9, 0.8, 0.8, 0.4, 0.7, 0.3, 0.8, 0.2, 0.5])
    label = np.array([1, 1, 0, 1, 1, 0, 0, 0, 0])
    v10, v01 = _brute_force_components(score, label)
    var = v10.var(ddof=1) / v10.size + v01.var(ddof=1) / v01.size
    auc, got = delong_auc_variance(score, label)
    assert auc == pytest.approx(v10.mean(), abs=1e-12)
    assert got == pytest.approx(var, abs=1e-12)
    auc_ci, lo, hi = delong_ci(score, label)
    assert auc_ci == auc
    assert lo == pytest.approx(max(0.0, auc - 1.959964 * np.sqrt(var)), abs=1e-6)
    assert hi == pytest.approx(min(1.0, auc + 1.959964 * np.sqrt(var)), abs=1e-6)


def test_delong_test_equals_brute_force_covariance() -> None:
    rng = np.random.default_rng(6)
    label = rng.integers(0, 2, 40)
    sa = label + rng.normal(0, 0.8, 40)
    sb = np.round(label + rng.normal(0, 1.2, 40), 1)  # ties
    a10, a01 = _brute_force_components(sa, label)
    b10, b01 = _brute_force_components(sb, label)
    m, n = a10.size, a01.size
    var = (
        np.var(a10 - b10, ddof=1) / m + np.var(a01 - b01, ddof=1) / n
    )  # Var(AUC_a − AUC_b) from the paired components
    z = (a10.mean() - b10.mean()) / np.sqrt(var)
    auc_a, auc_b, got_z, p = delong_test(sa, sb, label)
    assert (auc_a, auc_b) == pytest.approx((a10.mean(), b10.mean()), abs=1e-12)
    assert got_z == pytest.approx(z, abs=1e-10)
    assert p == pytest.approx(2 * sps.norm.sf(abs(z)), abs=1e-10)


def test_delong_variance_approximates_bootstrap_variance() -> None:
    rng = np.random.default_rng(7)
    label = rng.integers(0, 2, 300)
    score = label * 1.0 + rng.normal(0, 1.0, 300)
    _, var = delong_auc_variance(score, label)
    reps = []
    for _ in range(400):
        idx = rng.integers(0, 300, 300)
        reps.append(_brute_force_components(score[idx], label[idx])[0].mean())
    assert var == pytest.approx(np.var(reps, ddof=1), rel=0.25)


def test_delong_degenerate_cases() -> None:
    label = np.array([0, 1, 0, 1, 1])
    score = np.array([0.1, 0.7, 0.3, 0.6, 0.2])
    auc_a, auc_b, z, p = delong_test(score, score, label)
    assert auc_a == auc_b and z == 0.0 and p == 1.0
    assert all(np.isnan(v) for v in delong_test(score, score, np.ones(5, int)))
    assert all(np.isnan(v) for v in delong_auc_variance(score, np.zeros(5, int)))
