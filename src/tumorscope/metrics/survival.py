"""Survival metrics: C-indices, time-dependent AUC, Brier score, Breslow baseline, KM, log-rank.

Conventions (all functions):

- ``risk`` ``(N,)``: higher means worse (a log-hazard); ``time`` ``(N,)`` follow-up time,
  finite and >= 0, in any unit used consistently; ``event`` ``(N,)`` 1/True if the event
  was observed, 0/False if censored.
- Harrell's C (scikit-survival's ``concordance_index_censored``, the same pairs as lifelines'
  ``concordance_index``): a pair is comparable when the shorter time is an event; a pair with
  tied times is comparable only when one is an event and the other censored (the censored
  one is taken to outlive the event); two events at the same time are not comparable; risk
  ties (``|Δrisk| <= 1e-8``) count ½.
- Undefined values (no comparable pairs, no events, one group) are ``float("nan")``;
  malformed input (shape mismatch, NaN risk, negative time) raises :class:`ValueError`.
- Uno's C, time-dependent AUC and the Brier score weight by the inverse probability of
  censoring estimated by Kaplan–Meier on the **training** data (scikit-survival), so they need
  the training ``(time, event)`` and times inside its follow-up.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sksurv import metrics as skm
from sksurv.compare import compare_survival
from sksurv.exceptions import NoComparablePairException
from sksurv.linear_model.coxph import BreslowEstimator
from sksurv.nonparametric import kaplan_meier_estimator
from sksurv.util import Surv

from tumorscope.metrics.arrays import to_numpy


def check_survival(
    time: ArrayLike, event: ArrayLike, name: str = "time"
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Validate ``(time, event)``: 1-D, same length, finite times >= 0, events 0/1.

    Returns:
        ``time`` as float64 ``(N,)`` and ``event`` as bool ``(N,)``.
    """
    t = to_numpy(time).astype(np.float64)
    e_raw = to_numpy(event)
    if t.ndim != 1 or e_raw.ndim != 1 or t.shape != e_raw.shape:
        raise ValueError(f"{name}: time {t.shape} and event {e_raw.shape} must be 1-D, same length")
    if not np.isfinite(t).all() or (t < 0).any():
        raise ValueError(f"{name}: times must be finite and >= 0")
    if not np.isin(e_raw, (0, 1)).all():
        raise ValueError(
            f"{name}: event must be 0/1 or bool, found {np.unique(e_raw)[:5].tolist()}"
        )
    return t, e_raw.astype(bool)


def _check_risk(risk: ArrayLike, n: int, name: str = "risk") -> NDArray[np.float64]:
    r = to_numpy(risk).astype(np.float64)
    if r.shape != (n,):
        raise ValueError(f"{name}: shape {r.shape} does not match {n} survival records")
    if not np.isfinite(r).all():
        raise ValueError(f"{name}: {int((~np.isfinite(r)).sum())} NaN/Inf values")
    return r


def _ipcw(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a scikit-survival IPCW metric, naming the fault when times leave the follow-up."""
    try:
        with np.errstate(invalid="ignore", divide="ignore"):
            return fn(*args, **kwargs)
    except NoComparablePairException:
        raise
    except ValueError as err:
        raise ValueError(
            f"tau/times: {err} (choose times inside the training follow-up, where the "
            "censoring Kaplan–Meier estimate is > 0, and inside the evaluation follow-up)"
        ) from err


def harrell_c_index(risk: ArrayLike, time: ArrayLike, event: ArrayLike) -> float:
    """Harrell's concordance index (pair and tie conventions in the module docstring).

    Args:
        risk: Predicted risk ``(N,)``, higher means earlier event.
        time: Follow-up times ``(N,)``.
        event: Event indicators ``(N,)``.

    Returns:
        ``(concordant + ½·tied_risk) / comparable``; NaN without comparable pairs (e.g. no
        events, or all times tied and all events).
    """
    t, e = check_survival(time, event)
    r = _check_risk(risk, t.size)
    if not e.any():
        return float("nan")
    try:
        with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 when no pair is comparable
            return float(skm.concordance_index_censored(e, t, r)[0])
    except NoComparablePairException:
        return float("nan")


def uno_c_index(
    risk: ArrayLike,
    time: ArrayLike,
    event: ArrayLike,
    train_time: ArrayLike,
    train_event: ArrayLike,
    tau: float | None = None,
) -> float:
    """Uno's IPCW C-index truncated at ``tau`` (Uno et al. 2011, Stat Med 30:1105).

    Comparable pairs as Harrell's, each weighted by ``Ĝ(t_i)^-2`` where ``Ĝ`` is the
    Kaplan–Meier estimate of the censoring survival on the training data and ``t_i`` the
    earlier (event) time; only events with ``t_i < tau`` count.

    Args:
        risk: Predicted risk ``(N,)`` on the evaluation set.
        time: Evaluation times ``(N,)``.
        event: Evaluation events ``(N,)``.
        train_time: Training times ``(M,)`` for the censoring distribution.
        train_event: Training events ``(M,)``.
        tau: Truncation time, inside the training follow-up (``Ĝ(tau) > 0``); None = no truncation.

    Returns:
        Uno's C; NaN without comparable pairs before ``tau``.
    """
    t, e = check_survival(time, event)
    r = _check_risk(risk, t.size)
    tt, te = check_survival(train_time, train_event, "train_time")
    if not (e & (t < (np.inf if tau is None else tau))).any():
        return float("nan")
    try:
        value = _ipcw(
            skm.concordance_index_ipcw, Surv.from_arrays(te, tt), Surv.from_arrays(e, t), r, tau=tau
        )[0]
        return float(value)
    except NoComparablePairException:
        return float("nan")


def time_dependent_auc(
    risk: ArrayLike,
    time: ArrayLike,
    event: ArrayLike,
    train_time: ArrayLike,
    train_event: ArrayLike,
    times: ArrayLike,
) -> tuple[NDArray[np.float64], float]:
    """Cumulative/dynamic AUC(t) with IPCW (Uno et al. 2007; Hung & Chiang 2010).

    Cases at ``t``: events with ``time <= t``; controls: ``time > t``. Cases are weighted by
    ``1/Ĝ(time)`` with ``Ĝ`` the training censoring KM (scikit-survival).

    Args:
        risk: Predicted risk ``(N,)`` (time-constant).
        time: Evaluation times ``(N,)``.
        event: Evaluation events ``(N,)``.
        train_time: Training times ``(M,)``.
        train_event: Training events ``(M,)``.
        times: Evaluation time points ``(T,)`` inside the evaluation follow-up.

    Returns:
        ``(auc (T,), mean_auc)``; the mean is weighted by the KM estimate's drop over ``times``.
        NaN everywhere when no time point has both cases and controls.
    """
    t, e = check_survival(time, event)
    r = _check_risk(risk, t.size)
    tt, te = check_survival(train_time, train_event, "train_time")
    tp = np.atleast_1d(to_numpy(times).astype(np.float64))
    has_cases = np.array([(e & (t <= x)).any() and (t > x).any() for x in tp])
    if not has_cases.any():
        return np.full(tp.shape, np.nan), float("nan")
    auc, mean_auc = _ipcw(
        skm.cumulative_dynamic_auc, Surv.from_arrays(te, tt), Surv.from_arrays(e, t), r, tp
    )
    return np.asarray(auc, dtype=np.float64), float(mean_auc)


def breslow_baseline(
    risk: ArrayLike, time: ArrayLike, event: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Breslow estimate of the cumulative baseline hazard (scikit-survival's estimator).

    ``H0(t) = Σ_{t_k <= t} d_k / Σ_{j: time_j >= t_k} exp(risk_j)`` (Breslow ties).

    Args:
        risk: Log-hazard ``(N,)`` of the training cohort.
        time: Training times ``(N,)``.
        event: Training events ``(N,)``.

    Returns:
        ``(times (K,), cumulative_hazard (K,))`` at the K unique observed times, non-decreasing.
    """
    t, e = check_survival(time, event)
    r = _check_risk(risk, t.size)
    est = BreslowEstimator().fit(r, e, t)
    fn = est.cum_baseline_hazard_
    return np.asarray(fn.x, dtype=np.float64), np.asarray(fn.y, dtype=np.float64)


def survival_curves(
    risk: ArrayLike,
    baseline: tuple[ArrayLike, ArrayLike],
    times: ArrayLike,
) -> NDArray[np.float64]:
    """Cox survival curves ``S(t | x) = exp(−H0(t)·exp(risk))``.

    ``H0`` is a right-continuous step function: 0 before the first baseline time and its last
    value after the last one.

    Args:
        risk: Log-hazards ``(N,)``.
        baseline: ``(times (K,), cumulative_hazard (K,))`` from :func:`breslow_baseline`.
        times: Time points ``(T,)``.

    Returns:
        Survival probabilities ``(N, T)``.
    """
    r = to_numpy(risk).astype(np.float64)
    if r.ndim != 1 or not np.isfinite(r).all():
        raise ValueError(f"risk: expected a finite 1-D array, got shape {r.shape}")
    bt = to_numpy(baseline[0]).astype(np.float64)
    bh = to_numpy(baseline[1]).astype(np.float64)
    if bt.shape != bh.shape or bt.ndim != 1 or (np.diff(bt) < 0).any():
        raise ValueError("baseline: expected sorted times and hazards of the same length")
    tp = np.atleast_1d(to_numpy(times).astype(np.float64))
    idx = np.searchsorted(bt, tp, side="right") - 1
    h0 = np.where(idx >= 0, bh[np.clip(idx, 0, None)], 0.0)
    return np.asarray(np.exp(-np.outer(np.exp(r), h0)), dtype=np.float64)


def brier_score(
    surv: ArrayLike,
    time: ArrayLike,
    event: ArrayLike,
    train_time: ArrayLike,
    train_event: ArrayLike,
    times: ArrayLike,
) -> NDArray[np.float64]:
    """IPCW Brier score at each time point (Graf et al. 1999), via scikit-survival.

    Args:
        surv: Predicted survival probabilities ``(N, T)`` at ``times``.
        time: Evaluation times ``(N,)``.
        event: Evaluation events ``(N,)``.
        train_time: Training times ``(M,)`` for the censoring distribution.
        train_event: Training events ``(M,)``.
        times: Time points ``(T,)`` inside the evaluation follow-up.

    Returns:
        Brier scores ``(T,)``.
    """
    t, e = check_survival(time, event)
    tt, te = check_survival(train_time, train_event, "train_time")
    s, tp = _check_surv(surv, t.size, times)
    _, scores = _ipcw(skm.brier_score, Surv.from_arrays(te, tt), Surv.from_arrays(e, t), s, tp)
    return np.asarray(scores, dtype=np.float64)


def integrated_brier_score(
    surv: ArrayLike,
    time: ArrayLike,
    event: ArrayLike,
    train_time: ArrayLike,
    train_event: ArrayLike,
    times: ArrayLike,
) -> float:
    """Integrated Brier score: trapezoidal integral of :func:`brier_score` over ``times``
    divided by ``times[-1] − times[0]`` (scikit-survival's formula; needs T >= 2).
    """
    t, e = check_survival(time, event)
    tt, te = check_survival(train_time, train_event, "train_time")
    s, tp = _check_surv(surv, t.size, times)
    if tp.size < 2:
        raise ValueError("times: the integrated Brier score needs at least two time points")
    return float(
        _ipcw(skm.integrated_brier_score, Surv.from_arrays(te, tt), Surv.from_arrays(e, t), s, tp)
    )


def _check_surv(
    surv: ArrayLike, n: int, times: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    s = to_numpy(surv).astype(np.float64)
    tp = np.atleast_1d(to_numpy(times).astype(np.float64))
    if s.shape != (n, tp.size):
        raise ValueError(f"surv: shape {s.shape}, expected ({n}, {tp.size}) = (N, len(times))")
    if not np.isfinite(s).all() or (s < 0).any() or (s > 1).any():
        raise ValueError("surv: survival probabilities must be finite and in [0, 1]")
    if (np.diff(tp) <= 0).any():
        raise ValueError("times: must be strictly increasing")
    return s, tp


def kaplan_meier(
    time: ArrayLike, event: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Kaplan–Meier survival estimate (scikit-survival).

    Args:
        time: Times ``(N,)``.
        event: Events ``(N,)``.

    Returns:
        ``(times (K,), surv (K,))``: the unique observed times (events and censorings) and
        ``Ŝ(t)`` just after each; all 1.0 when there is no event.
    """
    t, e = check_survival(time, event)
    if t.size == 0:
        raise ValueError("time: Kaplan–Meier needs at least one record")
    times, surv = kaplan_meier_estimator(e, t)
    return np.asarray(times, dtype=np.float64), np.asarray(surv, dtype=np.float64)


def logrank(time: ArrayLike, event: ArrayLike, group: ArrayLike) -> tuple[float, float]:
    """Log-rank test of equal survival across groups (scikit-survival's ``compare_survival``).

    Args:
        time: Times ``(N,)``.
        event: Events ``(N,)``.
        group: Group label per record ``(N,)`` (two or more groups).

    Returns:
        ``(chi2_statistic, p_value)`` with ``G − 1`` degrees of freedom; ``(nan, nan)`` with
        fewer than two groups or no events.
    """
    t, e = check_survival(time, event)
    g = to_numpy(group)
    if g.shape != t.shape:
        raise ValueError(f"group: shape {g.shape} does not match time shape {t.shape}")
    if np.unique(g).size < 2 or not e.any():
        return float("nan"), float("nan")
    chisq, p = compare_survival(Surv.from_arrays(e, t), g)
    return float(chisq), float(p)


class SurvivalAccumulator:
    """Accumulates ``(risk, time, event)`` over batches; ``compute()`` gives dataset C-indices.

    Args:
        train_time: Optional training times for Uno's C (with ``train_event`` and ``tau``).
        train_event: Optional training events.
        tau: Truncation time for Uno's C.
    """

    def __init__(
        self,
        train_time: ArrayLike | None = None,
        train_event: ArrayLike | None = None,
        tau: float | None = None,
    ) -> None:
        self.train_time = train_time
        self.train_event = train_event
        self.tau = tau
        self.reset()

    def reset(self) -> None:
        """Forget all stored records."""
        self._risk: list[NDArray[np.float64]] = []
        self._time: list[NDArray[np.float64]] = []
        self._event: list[NDArray[np.bool_]] = []

    def update(self, risk: ArrayLike, time: ArrayLike, event: ArrayLike) -> None:
        """Add a batch of patients: ``risk``, ``time``, ``event`` each ``(B,)``."""
        t, e = check_survival(time, event)
        self._risk.append(_check_risk(risk, t.size))
        self._time.append(t)
        self._event.append(e)

    def arrays(self) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
        """All stored ``(risk, time, event)``, concatenated."""
        if not self._risk:
            return np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool)
        return np.concatenate(self._risk), np.concatenate(self._time), np.concatenate(self._event)

    def compute(self) -> dict[str, float]:
        """``harrell_c``, ``uno_c`` (NaN without training data), ``n`` and ``n_events``."""
        if not self._risk:
            return {"harrell_c": float("nan"), "uno_c": float("nan"), "n": 0.0, "n_events": 0.0}
        r, t, e = self.arrays()
        uno = float("nan")
        if self.train_time is not None and self.train_event is not None:
            uno = uno_c_index(r, t, e, self.train_time, self.train_event, self.tau)
        return {
            "harrell_c": harrell_c_index(r, t, e),
            "uno_c": uno,
            "n": float(t.size),
            "n_events": float(e.sum()),
        }
