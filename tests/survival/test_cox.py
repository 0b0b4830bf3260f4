"""The penalised Cox model against lifelines and scikit-survival's unpenalised/ridge fits,
and its inner CV, serialisation, survival curves and degenerate inputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from sksurv.datasets import load_whas500
from sksurv.linear_model import CoxnetSurvivalAnalysis, CoxPHSurvivalAnalysis
from sksurv.util import Surv

from tumorscope.metrics.survival import harrell_c_index
from tumorscope.survival.cox import (
    PenalisedCox,
    fit_at_alpha,
    fit_penalised_cox,
    inner_cv_c_index,
)

BETA = np.r_[1.0, -0.7, 0.5, np.zeros(7)]  # 3 informative + 7 noise covariates
COLS = [f"c{i}" for i in range(10)]


def simulate(n: int, beta: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weibull(shape 1.5) proportional hazards, exponential censoring: continuous, no ties."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, beta.size)) * 2.0 + 5.0  # raw scale: standardisation matters
    lp = (x - 5.0) / 2.0 @ beta
    t_event = (-np.log(rng.uniform(size=n)) / np.exp(lp)) ** (1 / 1.5)
    t_cens = rng.exponential(2.0, size=n)
    return x, np.minimum(t_event, t_cens), t_event <= t_cens


def raw_coef(m: PenalisedCox) -> np.ndarray:
    return np.asarray(m.coef) / np.asarray(m.scale)


def lifelines_fit(x: np.ndarray, t: np.ndarray, e: np.ndarray, **kw: float) -> np.ndarray:
    df = pd.DataFrame(x, columns=[f"v{i}" for i in range(x.shape[1])]).assign(T=t, E=e.astype(int))
    return CoxPHFitter(**kw).fit(df, "T", "E").params_.to_numpy()


@pytest.fixture(scope="module")
def cohort() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return simulate(200, BETA, 0)


@pytest.fixture(scope="module")
def model(cohort: tuple[np.ndarray, np.ndarray, np.ndarray]) -> PenalisedCox:
    return fit_penalised_cox(*cohort, COLS, bootstrap=200, seed=0)


def test_nearly_unpenalised_equals_lifelines_without_ties() -> None:
    x, t, e = simulate(300, np.array([0.8, -0.5, 0.3]), 1)
    assert np.unique(t[e]).size == e.sum()  # Efron (lifelines) == Breslow (coxnet) here
    ours = fit_at_alpha(x, t, e, ["a", "b", "c"], 1e-7, l1_ratio=1e-3)
    np.testing.assert_allclose(raw_coef(ours), lifelines_fit(x, t, e), rtol=1e-3)


def test_nearly_unpenalised_equals_sksurv_breslow_on_whas500() -> None:
    data, y = load_whas500()
    cols = ["age", "bmi", "diasbp", "hr", "los", "sysbp"]
    x = data[cols].to_numpy(float)
    ref = CoxPHSurvivalAnalysis(ties="breslow").fit(x, y)  # tied times: both Breslow
    ours = fit_at_alpha(x, y["lenfol"], y["fstat"], cols, 1e-8, l1_ratio=1e-3)
    np.testing.assert_allclose(raw_coef(ours), ref.coef_, rtol=1e-3)
    times = np.array([1.0, 100.0, 365.0, 1000.0, 2000.0])
    surv_ref = np.array([f(times) for f in ref.predict_survival_function(x[:20])])
    np.testing.assert_allclose(ours.survival(ours.log_hazard(x[:20]), times), surv_ref, rtol=1e-3)


def test_ridge_equals_lifelines_at_mapped_penalty() -> None:
    # ours: −ℓ/N + α(1−r)/2‖β‖² on ddof=0-standardised columns; lifelines: −ℓ/N + p/2‖β‖²
    # on ddof=1-standardised columns, so p = α(N−1)/N (N small so that the factor shows).
    n, alpha = 80, 0.2
    x, t, e = simulate(n, np.array([0.8, -0.5, 0.3]), 7)
    ours = raw_coef(fit_at_alpha(x, t, e, ["a", "b", "c"], alpha, l1_ratio=1e-4))
    mapped = lifelines_fit(x, t, e, penalizer=alpha * (n - 1) / n, l1_ratio=0.0)
    np.testing.assert_allclose(ours, mapped, rtol=1e-3)
    naive = lifelines_fit(x, t, e, penalizer=alpha, l1_ratio=0.0)
    assert np.abs(naive / ours - 1).max() > 2e-3  # the (N−1)/N factor is resolved


def test_path_is_coxnets_and_alpha_maximises_inner_c(
    cohort: tuple[np.ndarray, np.ndarray, np.ndarray], model: PenalisedCox
) -> None:
    x, t, e = cohort
    z = (x - x.mean(0)) / x.std(0)
    ref = CoxnetSurvivalAnalysis(l1_ratio=0.5, n_alphas=30, alpha_min_ratio=0.01)
    np.testing.assert_allclose(model.alphas, ref.fit(z, Surv.from_arrays(e, t)).alphas_)
    curve = np.asarray(model.inner_c_by_alpha)
    assert np.isfinite(curve).all() and curve.min() <= model.inner_c_index <= curve.max()
    assert model.inner_c_index == curve.max()
    assert model.alpha == model.alphas[int(np.argmax(curve))]
    assert inner_cv_c_index(x, t, e) == (model.inner_c_index, model.alpha)


def test_tied_inner_c_picks_the_larger_alpha() -> None:
    # One covariate: every non-zero coefficient of its sign ranks patients alike, so the
    # inner C is exactly tied along most of the path.
    x, t, e = simulate(150, np.array([1.0]), 6)
    m = fit_penalised_cox(x, t, e, ["a"], bootstrap=0)
    curve = np.asarray(m.inner_c_by_alpha)
    best = np.flatnonzero(curve == curve.max())
    assert best.size > 5 and m.alpha == m.alphas[best[0]] and m.coef[0] > 0


def test_noise_coefficients_shrink(model: PenalisedCox) -> None:
    coef = np.asarray(model.coef)
    np.testing.assert_array_equal(np.sign(coef[:3]), np.sign(BETA[:3]))
    assert np.abs(coef[3:]).max() < 0.5 * np.abs(coef[:3]).min()
    assert np.abs(coef[3:]).mean() < 0.1 * np.abs(coef[:3]).mean()


def test_held_out_c_near_true_linear_predictor(model: PenalisedCox) -> None:
    x, t, e = simulate(3000, BETA, 100)
    c_true = harrell_c_index((x - 5.0) / 2.0 @ BETA, t, e)
    assert abs(harrell_c_index(model.log_hazard(x), t, e) - c_true) < 0.03


def test_bootstrap_ci_contains_estimate_and_is_seeded(
    cohort: tuple[np.ndarray, np.ndarray, np.ndarray], model: PenalisedCox
) -> None:
    ci = np.asarray(model.coef_ci95)
    assert ci.shape == (10, 2) and (ci[:, 0] <= ci[:, 1]).all()
    for k in range(3):
        assert (
            ci[k, 0] < model.coef[k] < ci[k, 1]
            and np.sign(ci[k]).tolist() == [np.sign(BETA[k])] * 2
        )
    again = fit_penalised_cox(*cohort, COLS, bootstrap=50, seed=3)
    assert again.coef_ci95 == fit_penalised_cox(*cohort, COLS, bootstrap=50, seed=3).coef_ci95
    assert again.coef_ci95 != fit_penalised_cox(*cohort, COLS, bootstrap=50, seed=4).coef_ci95


def test_json_round_trip_and_validation(model: PenalisedCox) -> None:
    text = json.dumps(model.to_dict(), allow_nan=False)
    back = PenalisedCox.from_dict(json.loads(text))
    assert back == model
    x, _, _ = simulate(20, BETA, 5)
    np.testing.assert_array_equal(back.log_hazard(x), model.log_hazard(x))
    d = model.to_dict()
    del d["scale"]
    with pytest.raises(ValueError, match="scale"):
        PenalisedCox.from_dict(d)
    with pytest.raises(ValueError, match="coef has 9, expected 10"):
        PenalisedCox.from_dict({**model.to_dict(), "coef": list(model.coef[:9])})
    with pytest.raises(ValueError, match="unexpected keys \\['extra'\\]"):
        PenalisedCox.from_dict({**model.to_dict(), "extra": 1})


def test_survival_is_breslow_formula_and_percentiles(model: PenalisedCox) -> None:
    bt, bh = np.asarray(model.baseline_times), np.asarray(model.baseline_cumhaz)
    times = np.array([0.0, bt[0] / 2, bt[0], bt[3], (bt[10] + bt[11]) / 2, bt[-1], bt[-1] + 5])
    lh = np.array([-1.0, 0.0, 0.7])
    h0 = [max([h for s, h in zip(bt, bh, strict=True) if s <= u], default=0.0) for u in times]
    np.testing.assert_allclose(model.survival(lh, times), np.exp(-np.outer(np.exp(lh), h0)))
    q = np.asarray(model.train_risk_quantiles)
    grid = np.linspace(q[0] - 1, q[-1] + 1, 500)
    pct = model.percentile(grid)
    assert (np.diff(pct) >= 0).all() and pct[0] == 0.0 and pct[-1] == 100.0
    assert model.percentile(q[[0, -1]]).tolist() == [0.0, 100.0]
    x = simulate(200, BETA, 0)[0]
    assert abs(np.median(model.percentile(model.log_hazard(x))) - 50.0) < 1.0


def test_constant_column_gets_zero_and_leaves_the_rest() -> None:
    x, t, e = simulate(120, BETA[:4], 2)
    x_const = np.column_stack([x, np.full(120, 3.0)])
    m = fit_at_alpha(x_const, t, e, [*COLS[:4], "k"], 0.05, bootstrap=20)
    ref = fit_at_alpha(x, t, e, COLS[:4], 0.05)
    assert m.coef[-1] == 0.0 and m.scale[-1] == 1.0 and m.coef_ci95[-1] == (0.0, 0.0)
    np.testing.assert_allclose(m.coef[:4], ref.coef, atol=1e-8)
    assert np.asarray(fit_penalised_cox(x_const, t, e, [*COLS[:4], "k"], bootstrap=0).coef)[-1] == 0


def test_invalid_inputs_name_the_fault() -> None:
    x, t, e = simulate(40, BETA[:3], 3)
    with pytest.raises(ValueError, match="no events"):
        fit_penalised_cox(x, t, np.zeros(40, bool), COLS[:3])
    bad = x.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"\['c1'\]"):
        fit_penalised_cox(bad, t, e, COLS[:3])
    with pytest.raises(ValueError, match="times must be finite and >= 0"):
        fit_penalised_cox(x, -t, e, COLS[:3])
    with pytest.raises(ValueError, match="expected \\(N, 3\\)"):
        fit_at_alpha(x, t, e, COLS[:3], 0.1).log_hazard(x[:, :2])


def test_tiny_cohort_falls_back_to_strongest_penalty(caplog: pytest.LogCaptureFixture) -> None:
    x, t, _ = simulate(8, BETA[:3], 4)
    e = np.array([1, 0, 1, 0, 0, 1, 0, 0], bool)
    with caplog.at_level("WARNING", logger="tumorscope.survival.cox"):
        m = fit_penalised_cox(x, t, e, COLS[:3], bootstrap=20)
    assert "only 3 events" in caplog.text
    assert np.isnan(m.inner_c_index) and m.alpha == m.alphas[0] and not any(m.coef)
    assert m.percentile(m.log_hazard(x)).tolist() == [50.0] * 8
    assert np.isfinite(m.survival(m.log_hazard(x), [1.0])).all()
    back = PenalisedCox.from_dict(json.loads(json.dumps(m.to_dict(), allow_nan=False)))
    assert np.isnan(back.inner_c_index) and back.to_dict() == m.to_dict()  # NaN <-> None
    c, alpha = inner_cv_c_index(x, t, e)
    assert np.isnan(c) and alpha == m.alphas[0]
    x, t, e = simulate(12, BETA[:3], 4)
    e[:5] = True  # >= 4 events: fewer folds (2 events per held-out fold), not a fallback
    assert np.isfinite(fit_penalised_cox(x, t, e, COLS[:3], bootstrap=0).inner_c_index)


def test_failed_alphas_are_ignored_but_total_failure_raises(
    cohort: tuple[np.ndarray, np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    x, t, e = cohort
    fit = CoxnetSurvivalAnalysis.fit

    def failing(limit: int):  # fails on the inner folds' data (< 200 rows) past `limit` alphas
        def patched(self, x, y):
            if x.shape[0] < 200 and self.alphas is not None and len(self.alphas) > limit:
                raise ArithmeticError("Numerical error, because weights are too large.")
            return fit(self, x, y)

        return patched

    monkeypatch.setattr(CoxnetSurvivalAnalysis, "fit", failing(12))
    m = fit_penalised_cox(x, t, e, COLS, bootstrap=0)
    curve = np.asarray(m.inner_c_by_alpha)
    assert np.isfinite(curve[:12]).all() and np.isnan(curve[12:]).all()
    assert m.alpha in m.alphas[:12] and np.isfinite(m.inner_c_index)
    monkeypatch.setattr(CoxnetSurvivalAnalysis, "fit", failing(0))
    with pytest.raises(RuntimeError, match="no alpha could be scored"):
        fit_penalised_cox(x, t, e, COLS, bootstrap=0)
