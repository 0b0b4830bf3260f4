"""Survival metrics: hand-computed C-indices/IPCW/Breslow/KM, lifelines agreement, edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.datasets import load_rossi
from lifelines.statistics import logrank_test, multivariate_logrank_test
from lifelines.utils import concordance_index

from tumorscope.metrics import survival as sv


@pytest.fixture(scope="module")
def rossi() -> pd.DataFrame:
    return load_rossi()


def _rossi_risk(df: pd.DataFrame) -> np.ndarray:
    # A fixed linear risk with many ties (integer covariates), not a fitted model.
    return np.asarray(5 * df["prio"] - 4 * df["age"] - 30 * df["fin"], dtype=float)


def test_harrell_hand_computed_with_ties_and_censoring() -> None:
    # Comparable pairs (earlier member an event): from t=1: 4 (all concordant); from t=2
    # event: vs censored t=2 (risk tie → ½), vs t=3 (discordant), vs t=4 (concordant);
    # from t=3: vs t=4 (concordant) → (6 + ½) / 8.
    risk = [5, 3, 3, 4, 1]
    time = [1, 2, 2, 3, 4]
    event = [1, 1, 0, 1, 0]
    assert sv.harrell_c_index(risk, time, event) == pytest.approx(6.5 / 8, abs=1e-12)


def test_harrell_tied_event_times_are_not_comparable() -> None:
    # (0, 1) share an event time → not a pair; (0, 2), (1, 2) concordant → 1.0 (not 2.5/3).
    assert sv.harrell_c_index([1, 2, 0], [2, 2, 3], [1, 1, 1]) == 1.0
    # An event and censorings at the same time: the censored ones outlive the event.
    assert sv.harrell_c_index([2, 1, 3], [5, 5, 5], [1, 0, 0]) == 0.5


def test_harrell_matches_lifelines_on_rossi(rossi: pd.DataFrame) -> None:
    risk = _rossi_risk(rossi)
    ref = concordance_index(rossi["week"], -risk, rossi["arrest"])
    assert sv.harrell_c_index(risk, rossi["week"], rossi["arrest"]) == pytest.approx(ref, abs=1e-6)


def test_harrell_risk_tie_tolerance_differs_from_lifelines(rossi: pd.DataFrame) -> None:
    # Stated difference: risks within 1e-8 are ties here (scikit-survival's tolerance);
    # lifelines needs exact equality, so float round-off (0.05·3 − 0.04·27 ...) splits ties.
    risk = np.asarray(0.05 * rossi["prio"] - 0.04 * rossi["age"] - 0.3 * rossi["fin"])
    ours = sv.harrell_c_index(risk, rossi["week"], rossi["arrest"])
    exact = concordance_index(rossi["week"], -risk, rossi["arrest"])
    rounded = concordance_index(rossi["week"], -np.round(risk, 8), rossi["arrest"])
    assert ours == pytest.approx(rounded, abs=1e-12)
    assert abs(ours - exact) > 1e-5


def test_harrell_edge_cases_are_nan() -> None:
    assert np.isnan(sv.harrell_c_index([1, 2, 3], [1, 2, 3], [0, 0, 0]))  # no events
    assert np.isnan(sv.harrell_c_index([1, 2, 0], [2, 2, 2], [1, 1, 1]))  # all times tied
    assert np.isnan(sv.uno_c_index([1, 2, 3], [1, 2, 3], [0, 0, 0], TRAIN_TIME, TRAIN_EVENT))
    times, surv = sv.kaplan_meier([3, 3, 3], [1, 0, 1])  # all times tied: one step
    np.testing.assert_allclose(times, [3.0])
    np.testing.assert_allclose(surv, [1 / 3])
    with pytest.raises(ValueError, match="NaN"):
        sv.harrell_c_index([1, float("nan")], [1, 2], [1, 1])
    with pytest.raises(ValueError, match="does not match"):
        sv.harrell_c_index([1, 2, 3], [1, 2], [1, 1])
    with pytest.raises(ValueError, match=">= 0"):
        sv.harrell_c_index([1, 2], [-1, 2], [1, 1])


TRAIN_TIME = [1, 2, 3, 4, 5, 6]
TRAIN_EVENT = [1, 0, 1, 0, 1, 1]


def test_uno_hand_computed_ipcw() -> None:
    # Censoring KM on the training data: drops at t=2 (1/5) and t=4 (1/3):
    # G(1)=1, G(3)=0.8, G(5)=0.8·2/3; each pair weighted by G(t_i)^-2.
    w1, w3, w5 = 1.0, 1 / 0.8**2, 1 / (0.8 * 2 / 3) ** 2
    risk, time, event = [4, 1, 3, 2], [1, 3, 5, 6], [1, 1, 1, 0]
    # i=t1: 3 concordant pairs; i=t3: 2 discordant; i=t5: 1 concordant.
    expected = (3 * w1 + w5) / (3 * w1 + 2 * w3 + w5)
    got = sv.uno_c_index(risk, time, event, TRAIN_TIME, TRAIN_EVENT)
    assert got == pytest.approx(expected, abs=1e-12)
    # tau=4 keeps only events before 4 as the earlier member of a pair.
    got_tau = sv.uno_c_index(risk, time, event, TRAIN_TIME, TRAIN_EVENT, tau=4)
    assert got_tau == pytest.approx(3 * w1 / (3 * w1 + 2 * w3), abs=1e-12)
    # Harrell's C on the same data differs: (3 + 0 + 1) / 6.
    assert sv.harrell_c_index(risk, time, event) == pytest.approx(4 / 6)


def test_uno_equals_harrell_without_censoring() -> None:
    rng = np.random.default_rng(0)
    time = rng.exponential(10, 60)
    risk = -np.log(time) + rng.normal(0, 1, 60)
    event = np.ones(60, dtype=bool)
    uno = sv.uno_c_index(risk, time, event, time, event)
    assert uno == pytest.approx(sv.harrell_c_index(risk, time, event), abs=1e-12)


def test_time_dependent_auc_hand_computed() -> None:
    t = np.arange(1.0, 7.0)
    e = np.ones(6, dtype=bool)
    risk = [6, 4, 5, 2, 3, 1]
    auc, mean_auc = sv.time_dependent_auc(risk, t, e, t, e, [3.0, 4.5])
    # t=3: cases {6,4,5} vs controls {2,3,1} → 1; t=4.5: cases {6,4,5,2} vs {3,1} → 7/8.
    np.testing.assert_allclose(auc, [1.0, 7 / 8], atol=1e-12)
    assert 7 / 8 <= mean_auc <= 1.0
    separable = -t  # earlier events get higher risk
    auc_sep, _ = sv.time_dependent_auc(separable, t, e, t, e, [1.5, 2.5, 3.5, 4.5])
    np.testing.assert_allclose(auc_sep, 1.0)
    nan_auc, nan_mean = sv.time_dependent_auc(risk, t, np.zeros(6, bool), t, e, [3.0])
    assert np.isnan(nan_auc).all() and np.isnan(nan_mean)


def test_breslow_reduces_to_nelson_aalen_and_weights_by_risk() -> None:
    times, h0 = sv.breslow_baseline(np.zeros(5), [1, 2, 2, 3, 5], [1, 1, 0, 1, 0])
    np.testing.assert_allclose(times, [1, 2, 3, 5])
    np.testing.assert_allclose(h0, [1 / 5, 1 / 5 + 1 / 4, 1 / 5 + 1 / 4 + 1 / 2, 0.95], atol=1e-12)
    risk = np.log([1.0, 2.0, 3.0])
    _, h = sv.breslow_baseline(risk, [1, 2, 3], [1, 1, 1])
    np.testing.assert_allclose(h, [1 / 6, 1 / 6 + 1 / 5, 1 / 6 + 1 / 5 + 1 / 3], atol=1e-12)


def test_breslow_matches_lifelines_cox_baseline(rossi: pd.DataFrame) -> None:
    cph = CoxPHFitter().fit(rossi, "week", "arrest")
    x = rossi.drop(columns=["week", "arrest"])
    # lifelines centres covariates, so its baseline is at the covariate mean.
    risk = ((x - x.mean()) @ cph.params_[x.columns]).to_numpy()
    times, h0 = sv.breslow_baseline(risk, rossi["week"], rossi["arrest"])
    ref = cph.baseline_cumulative_hazard_.iloc[:, 0]
    np.testing.assert_allclose(h0, ref.loc[times].to_numpy(), rtol=1e-6)


def test_survival_curves_closed_form() -> None:
    baseline = (np.array([1.0, 2.0, 4.0]), np.array([0.1, 0.3, 0.6]))
    s = sv.survival_curves([0.0, np.log(2.0)], baseline, [0.5, 1.0, 3.0, 10.0])
    h = np.array([0.0, 0.1, 0.3, 0.6])
    np.testing.assert_allclose(s, np.exp(-np.outer([1.0, 2.0], h)), atol=1e-12)
    assert s.shape == (2, 4)


def test_brier_and_ibs_without_censoring_by_hand() -> None:
    time = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    event = np.ones(6, dtype=bool)
    grid = np.array([1.5, 2.5, 3.5, 4.5])
    rng = np.random.default_rng(1)
    surv = np.sort(rng.random((6, 4)), axis=1)[:, ::-1]  # non-increasing curves
    alive = (time[:, None] > grid[None, :]).astype(float)
    bs = ((alive - surv) ** 2).mean(axis=0)  # G = 1 everywhere: plain squared error
    np.testing.assert_allclose(sv.brier_score(surv, time, event, time, event, grid), bs, atol=1e-12)
    ibs = np.trapezoid(bs, grid) / (grid[-1] - grid[0])
    assert sv.integrated_brier_score(surv, time, event, time, event, grid) == pytest.approx(ibs)


def test_brier_with_censoring_matches_graf_formula_with_lifelines_km() -> None:
    rng = np.random.default_rng(2)
    n = 120
    x = rng.normal(size=n)
    t_event = rng.exponential(1 / np.exp(0.8 * x))
    t_cens = rng.exponential(1.5, n)
    time = np.minimum(t_event, t_cens)
    event = t_event <= t_cens
    grid = np.quantile(time, [0.2, 0.4, 0.6])
    baseline = sv.breslow_baseline(0.8 * x, time, event)
    surv = sv.survival_curves(0.8 * x, baseline, grid)
    # Graf et al.: events before t weighted 1/G(T_i), survivors 1/G(t), G by lifelines KM.
    kmf = KaplanMeierFitter().fit(time, ~event)
    g_i = kmf.survival_function_at_times(time).to_numpy()
    expected = []
    for k, t in enumerate(grid):
        died = (time <= t) & event
        alive = time > t
        g_t = float(kmf.survival_function_at_times(t).iloc[0])
        w_died = np.where(died, 1.0 / np.where(died, g_i, 1.0), 0.0)
        terms = w_died * surv[:, k] ** 2 + alive * (1 - surv[:, k]) ** 2 / g_t
        expected.append(terms.mean())
    got = sv.brier_score(surv, time, event, time, event, grid)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_kaplan_meier_by_hand_and_against_lifelines(rossi: pd.DataFrame) -> None:
    times, surv = sv.kaplan_meier([1, 2, 2, 3, 5], [1, 1, 0, 1, 0])
    np.testing.assert_allclose(times, [1, 2, 3, 5])
    np.testing.assert_allclose(surv, [0.8, 0.6, 0.3, 0.3], atol=1e-12)
    times, surv = sv.kaplan_meier(rossi["week"], rossi["arrest"])
    ref = KaplanMeierFitter().fit(rossi["week"], rossi["arrest"]).survival_function_at_times(times)
    np.testing.assert_allclose(surv, ref.to_numpy(), atol=1e-6)
    _, no_events = sv.kaplan_meier([1, 2, 3], [0, 0, 0])
    np.testing.assert_array_equal(no_events, 1.0)


def test_logrank_against_lifelines(rossi: pd.DataFrame) -> None:
    stat, p = sv.logrank(rossi["week"], rossi["arrest"], rossi["fin"])
    a, b = rossi[rossi["fin"] == 0], rossi[rossi["fin"] == 1]
    ref = logrank_test(a["week"], b["week"], a["arrest"], b["arrest"])
    assert stat == pytest.approx(ref.test_statistic, rel=1e-6)
    assert p == pytest.approx(ref.p_value, rel=1e-6)
    groups = np.digitize(rossi["prio"], [1, 4])  # three groups
    stat3, p3 = sv.logrank(rossi["week"], rossi["arrest"], groups)
    ref3 = multivariate_logrank_test(rossi["week"], groups, rossi["arrest"])
    assert stat3 == pytest.approx(ref3.test_statistic, rel=1e-6)
    assert p3 == pytest.approx(ref3.p_value, rel=1e-6)


def test_logrank_identical_groups_and_degenerate_cases() -> None:
    t = [1, 2, 3, 4] * 2
    e = [1, 1, 0, 1] * 2
    stat, p = sv.logrank(t, e, [0] * 4 + [1] * 4)
    assert stat == pytest.approx(0.0, abs=1e-12) and p == pytest.approx(1.0)
    assert np.isnan(sv.logrank(t, e, [0] * 8)[0])  # one group
    assert np.isnan(sv.logrank(t, [0] * 8, [0] * 4 + [1] * 4)[1])  # no events


def test_survival_accumulator() -> None:
    acc = sv.SurvivalAccumulator(train_time=TRAIN_TIME, train_event=TRAIN_EVENT)
    acc.update([5, 3], [1, 2], [1, 1])
    acc.update([3, 4, 1], [2, 3, 4], [0, 1, 0])
    out = acc.compute()
    assert out["harrell_c"] == pytest.approx(6.5 / 8)
    assert out["n"] == 5 and out["n_events"] == 3
    assert out["uno_c"] == pytest.approx(
        sv.uno_c_index([5, 3, 3, 4, 1], [1, 2, 2, 3, 4], [1, 1, 0, 1, 0], TRAIN_TIME, TRAIN_EVENT)
    )
    acc.reset()
    assert np.isnan(acc.compute()["harrell_c"])


def _censored_cohort(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t_event = rng.exponential(1 / np.exp(0.7 * x))
    t_cens = rng.uniform(0.2, 3.0, n)
    return 0.7 * x + rng.normal(0, 0.5, n), np.minimum(t_event, t_cens), t_event <= t_cens


def test_uno_and_td_auc_match_brute_force_with_lifelines_censoring_km() -> None:
    # Independent of scikit-survival: pairs enumerated by hand, Ĝ from lifelines' KM.
    _, train_t, train_e = _censored_cohort(150, seed=10)
    risk, t, e = _censored_cohort(90, seed=11)
    tau = float(np.quantile(t, 0.8))
    g = KaplanMeierFitter().fit(train_t, ~train_e).survival_function_at_times(t).to_numpy()
    earlier = (t[:, None] < t[None, :]) & e[:, None] & (t[:, None] < tau)
    score = (risk[:, None] > risk[None, :]) + 0.5 * (risk[:, None] == risk[None, :])
    w = (1 / g**2)[:, None] * earlier
    expected = (w * score).sum() / w.sum()
    got = sv.uno_c_index(risk, t, e, train_t, train_e, tau=tau)
    assert got == pytest.approx(expected, rel=1e-6)
    grid = np.quantile(t[e], [0.25, 0.5, 0.75])
    expected_auc = []
    for s in grid:
        case_w = np.where((t <= s) & e, 1 / g, 0.0)
        control = t > s
        num = (case_w[:, None] * control[None, :] * score).sum()
        expected_auc.append(num / (case_w.sum() * control.sum()))
    auc, _ = sv.time_dependent_auc(risk, t, e, train_t, train_e, grid)
    np.testing.assert_allclose(auc, expected_auc, rtol=1e-6)


def test_ipcw_metrics_outside_follow_up_raise_clear_error() -> None:
    train_t, train_e = [1, 2, 3, 4, 5, 6], [1, 0, 1, 0, 1, 0]  # Ĝ = 0 from t = 6
    with pytest.raises(ValueError, match="tau/times"):
        sv.uno_c_index([4, 1, 3, 2, 0], [1, 3, 5, 6, 7], [1, 1, 1, 0, 1], train_t, train_e)
    with pytest.raises(ValueError, match="tau/times"):
        sv.brier_score(np.full((3, 1), 0.5), [1, 3, 5], [1, 1, 0], train_t, train_e, [8.0])
