"""Penalised (elastic-net) Cox model, its penalty chosen by inner cross-validation.

Objective (scikit-survival's coxnet; its stationarity condition checked numerically):
``min_β −(1/N)·log PL_Breslow(β) + α·(r·‖β‖₁ + (1−r)/2·‖β‖²)`` on the covariates
standardised with the training mean and ddof=0 std. lifelines'
``CoxPHFitter(penalizer=p, l1_ratio=r)`` minimises the same with Efron ties on columns it
standardises with the ddof=1 std, so without tied event times ``p = α·(N−1)/N``.
Sized for ~50–300 patients and ~5–20 covariates.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold
from sksurv.linear_model import CoxnetSurvivalAnalysis
from sksurv.util import Surv

from tumorscope.metrics.arrays import to_numpy
from tumorscope.metrics.survival import breslow_baseline as _breslow
from tumorscope.metrics.survival import check_survival, harrell_c_index, survival_curves

_Q = np.linspace(0.0, 1.0, 21)  # quantile levels of the stored training linear predictor
_TOL = 1e-9  # coxnet's update tolerance (its 1e-7 default moves coefficients by ~1e-4)
_Fail = (ArithmeticError, AssertionError)  # coxnet: weights overflow / non-finite coef assert
F64 = NDArray[np.float64]
Y = NDArray[np.void]  # scikit-survival's structured (event, time) array

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PenalisedCox:
    """A fitted penalised Cox model; all fields plain tuples/floats (see :meth:`to_dict`).

    Coefficients, their bootstrap percentile CIs and the penalty path refer to the
    standardised columns ``(x − center) / scale``; the linear predictor has mean 0 in training.
    """

    columns: tuple[str, ...]
    center: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    alpha: float
    l1_ratio: float
    inner_c_index: float
    alphas: tuple[float, ...]
    inner_c_by_alpha: tuple[float, ...]
    coef_ci95: tuple[tuple[float, float], ...]
    baseline_times: tuple[float, ...]
    baseline_cumhaz: tuple[float, ...]
    train_risk_quantiles: tuple[float, ...]

    def log_hazard(self, x: ArrayLike) -> F64:
        """Linear predictor ``(N,)`` of raw covariates ``x`` ``(N, K)`` in ``columns`` order."""
        z = (_check_x(x, self.columns) - np.asarray(self.center)) / np.asarray(self.scale)
        return np.asarray(z @ np.asarray(self.coef), dtype=np.float64)

    def percentile(self, log_hazard: ArrayLike) -> F64:
        """Risk percentile ``(N,)`` in 0–100 of each log-hazard within the training cohort."""
        lh = to_numpy(log_hazard).astype(np.float64)
        q, p = np.asarray(self.train_risk_quantiles), 100.0 * _Q
        # Hand-written because np.interp is ambiguous on tied quantiles (e.g. an all-zero
        # model): average its right limit and its left limit (the mirrored interpolation).
        right = np.interp(lh, q, p)
        left = np.interp(-lh, -q[::-1], p[::-1])
        return np.asarray(0.5 * (left + right), dtype=np.float64)

    def survival(self, log_hazard: ArrayLike, times: ArrayLike) -> F64:
        """``S(t | x) = exp(−H0(t)·exp(lh))`` ``(N, T)`` from the stored Breslow baseline."""
        return survival_curves(log_hazard, (self.baseline_times, self.baseline_cumhaz), times)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; non-finite floats (e.g. a NaN inner C) become ``None``."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PenalisedCox:
        """Inverse of :meth:`to_dict`; raises ValueError on missing/unknown keys or lengths."""
        names = {f.name for f in fields(cls)}
        missing, extra = sorted(names - set(d)), sorted(set(d) - names)
        if missing or extra:
            raise ValueError(f"PenalisedCox: missing keys {missing}, unexpected keys {extra}")
        scalars = ("alpha", "l1_ratio", "inner_c_index")
        try:
            v: dict[str, Any] = {
                k: _floats(d[k]) for k in names - {"columns", "coef_ci95", *scalars}
            }
            v |= {k: _float(d[k]) for k in scalars}
            v["columns"] = tuple(str(c) for c in d["columns"])
            v["coef_ci95"] = tuple(_floats(c) for c in d["coef_ci95"])
        except (TypeError, ValueError) as err:
            raise ValueError(f"PenalisedCox: malformed value ({err})") from err
        k_cols = len(v["columns"])
        want = {"center": k_cols, "scale": k_cols, "coef": k_cols, "coef_ci95": k_cols}
        want |= {"inner_c_by_alpha": len(v["alphas"]), "train_risk_quantiles": _Q.size}
        want["baseline_cumhaz"] = len(v["baseline_times"])
        bad = [f"{k} has {len(v[k])}, expected {n}" for k, n in want.items() if len(v[k]) != n]
        bad += [
            f"coef_ci95[{i}] is not a pair" for i, c in enumerate(v["coef_ci95"]) if len(c) != 2
        ]
        if bad:
            raise ValueError("PenalisedCox: " + "; ".join(bad))
        return cls(**v)


def fit_penalised_cox(
    x: ArrayLike,
    time: ArrayLike,
    event: ArrayLike,
    columns: Sequence[str],
    *,
    l1_ratio: float = 0.5,
    n_alphas: int = 30,
    alpha_min_ratio: float = 0.01,
    inner_folds: int = 5,
    bootstrap: int = 200,
    seed: int = 0,
) -> PenalisedCox:
    """Fit an elastic-net Cox model whose ``alpha`` maximises the mean inner-CV Harrell C.

    Args:
        x: Raw covariates ``(N, K)``, finite.
        time: Follow-up times ``(N,)``, >= 0.
        event: Event indicators ``(N,)`` (at least one event).
        columns: ``K`` distinct covariate names, in ``x``'s column order.
        l1_ratio: Elastic-net mixing ``r`` in (0, 1] (1 = lasso).
        n_alphas: Length of coxnet's log-spaced path down from ``alpha_max`` (all coef 0).
        alpha_min_ratio: Smallest alpha of the path as a fraction of ``alpha_max``.
        inner_folds: Stratified (on event) folds; fewer so that each held-out fold keeps >= 2
            events. With < 4 events: the strongest penalty, NaN ``inner_c_index``, a warning.
        bootstrap: Patient resamples for the coefficient CIs at the chosen alpha (0: NaN CIs).
        seed: Seeds the fold split and the bootstrap.

    Returns:
        The model refitted on all patients at the chosen alpha (ties: the larger alpha).
    """
    xs, y, cols = _check_inputs(x, time, event, columns)
    _check_params(l1_ratio, n_alphas, alpha_min_ratio, inner_folds)
    alphas, scores = _search(xs, y, l1_ratio, n_alphas, alpha_min_ratio, inner_folds, seed)
    if scores is None:
        log.warning(
            "only %d events: too few for inner CV (>= 2 per held-out fold); using the "
            "strongest penalty alpha=%.4g, inner_c_index = NaN",
            int(y["event"].sum()),
            alphas[0],
        )
    j = 0 if scores is None else int(np.nanargmax(scores))  # first max: larger alpha
    return _model(cols, xs, y, l1_ratio, alphas, j, scores, bootstrap, seed)


def fit_at_alpha(
    x: ArrayLike,
    time: ArrayLike,
    event: ArrayLike,
    columns: Sequence[str],
    alpha: float,
    *,
    l1_ratio: float = 0.5,
    bootstrap: int = 0,
    seed: int = 0,
) -> PenalisedCox:
    """Fit at a given ``alpha`` > 0 without CV (other arguments as :func:`fit_penalised_cox`).

    The stored path is ``(alpha,)`` and the inner C-indices are NaN.
    """
    xs, y, cols = _check_inputs(x, time, event, columns)
    _check_params(l1_ratio, 2, 0.5, 2)
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha: must be finite and > 0, got {alpha}")
    return _model(cols, xs, y, l1_ratio, np.array([float(alpha)]), 0, None, bootstrap, seed)


def inner_cv_c_index(
    x: ArrayLike,
    time: ArrayLike,
    event: ArrayLike,
    *,
    l1_ratio: float = 0.5,
    n_alphas: int = 30,
    alpha_min_ratio: float = 0.01,
    inner_folds: int = 5,
    seed: int = 0,
) -> tuple[float, float]:
    """Best mean inner-CV Harrell C over the alpha path, and its alpha.

    Used to decide whether an extra covariate block (e.g. a deep-learning risk) helps;
    arguments as :func:`fit_penalised_cox`. ``(nan, alpha_max)`` with fewer than 4 events.
    """
    xs, y, _ = _check_inputs(x, time, event, None)
    _check_params(l1_ratio, n_alphas, alpha_min_ratio, inner_folds)
    alphas, scores = _search(xs, y, l1_ratio, n_alphas, alpha_min_ratio, inner_folds, seed)
    if scores is None:
        return float("nan"), float(alphas[0])
    j = int(np.nanargmax(scores))
    return float(scores[j]), float(alphas[j])


def _check_x(x: ArrayLike, columns: Sequence[str]) -> F64:
    arr = to_numpy(x).astype(np.float64)
    if arr.ndim != 2 or arr.shape[1] != len(columns):
        raise ValueError(f"x: shape {arr.shape}, expected (N, {len(columns)}) for {list(columns)}")
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=0))
    if bad.size:
        raise ValueError(f"x: NaN/Inf in column(s) {[columns[int(j)] for j in bad]}")
    return arr


def _check_inputs(
    x: ArrayLike, time: ArrayLike, event: ArrayLike, columns: Sequence[str] | None
) -> tuple[F64, Y, tuple[str, ...]]:
    t, e = check_survival(time, event)
    if columns is None:
        columns = [f"x[:, {j}]" for j in range(np.shape(x)[-1] if np.ndim(x) else 0)]
    cols = tuple(str(c) for c in columns)
    if not cols or len(set(cols)) != len(cols):
        raise ValueError(f"columns: need >= 1 distinct name, got {list(cols)}")
    xs = _check_x(x, cols)
    if xs.shape[0] != t.size or t.size < 2:
        raise ValueError(f"x: {xs.shape[0]} rows vs {t.size} survival records (need equal, >= 2)")
    if not e.any():
        raise ValueError(f"event: no events among {t.size} patients; a Cox model needs one")
    return xs, Surv.from_arrays(e, t), cols


def _check_params(l1_ratio: float, n_alphas: int, ratio: float, folds: int) -> None:
    if not (0.0 < l1_ratio <= 1.0 and n_alphas >= 2 and 0.0 < ratio < 1.0 and folds >= 2):
        raise ValueError(
            "need 0 < l1_ratio <= 1, n_alphas >= 2, 0 < alpha_min_ratio < 1, inner_folds >= 2; "
            f"got {l1_ratio}, {n_alphas}, {ratio}, {folds}"
        )


def _standardise(x: F64) -> tuple[F64, F64, F64]:
    """``(z, center, scale)``; constant columns get scale 1 and ``z = 0`` (so coef 0)."""
    center, scale = x.mean(axis=0), x.std(axis=0)
    const = scale <= 1e-12 * np.maximum(1.0, np.abs(center))
    scale = np.where(const, 1.0, scale)
    z = (x - center) / scale
    z[:, const] = 0.0
    return z, center, scale


def _coxnet(
    z: F64, y: Y, l1: float, alphas: F64 | None, n: int = 2, ratio: float = 0.01
) -> tuple[F64, F64]:
    """Fit along ``alphas`` (None: coxnet's own path of ``n``); ``(alphas (A,), coef (K, A))``.

    Raises:
        ArithmeticError: coxnet's overflow error, or it did not converge.
    """
    net = CoxnetSurvivalAnalysis(l1_ratio=l1, alphas=alphas, n_alphas=n, alpha_min_ratio=ratio)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # also hides "all coefficients are zero" at alpha_max
        net.set_params(tol=_TOL).fit(z, y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        raise ArithmeticError("coxnet did not converge")
    return np.asarray(net.alphas_, np.float64), np.asarray(net.coef_, np.float64)


def _path_coef(z: F64, y: Y, l1: float, alphas: F64) -> F64:
    """Coefficients ``(K, A)`` along ``alphas``; NaN from the first alpha coxnet fails at."""
    try:
        return _coxnet(z, y, l1, alphas)[1]
    except _Fail:
        out = np.full((z.shape[1], alphas.size), np.nan)
        for j in range(alphas.size):
            try:
                out[:, j] = _coxnet(z, y, l1, alphas[: j + 1])[1][:, -1]
            except _Fail:
                break
        return out


def _search(
    x: F64, y: Y, l1: float, n_alphas: int, ratio: float, folds: int, seed: int
) -> tuple[F64, F64 | None]:
    """``(alphas (A,), mean inner-CV C (A,))``; the C is None with fewer than 4 events."""
    z, _, _ = _standardise(x)
    try:
        alphas = _coxnet(z, y, l1, None, n_alphas, ratio)[0]
    except _Fail as err:
        raise RuntimeError(f"coxnet failed on all the data ({err}); raise alpha_min_ratio") from err
    e, t = y["event"], y["time"]
    k = min(folds, int(e.sum()) // 2)
    if k < 2:
        return alphas, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" (few censored)
        splits = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(x, e))
    scores = np.full((k, alphas.size), np.nan)
    for f, (tr, te) in enumerate(splits):
        ztr, c, s = _standardise(x[tr])
        coef = _path_coef(ztr, y[tr], l1, alphas)
        for j in np.flatnonzero(np.isfinite(coef).all(axis=0)):
            scores[f, j] = harrell_c_index((x[te] - c) / s @ coef[:, j], t[te], e[te])
    if np.isnan(scores).all():
        raise RuntimeError("inner CV: no alpha could be scored on any fold (coxnet failed)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column: mean of empty slice
        return alphas, np.asarray(np.nanmean(scores, axis=0), np.float64)


def _bootstrap_ci(z: F64, y: Y, l1: float, path: F64, n_boot: int, seed: int) -> F64:
    """Percentile 95% CIs ``(K, 2)`` from ``n_boot`` patient resamples refitted along ``path``."""
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(max(n_boot, 0)):
        idx = rng.integers(0, y.size, y.size)
        if y["event"][idx].any():
            try:
                draws.append(_coxnet(z[idx], y[idx], l1, path)[1][:, -1])
            except _Fail:
                continue
    if len(draws) < 2:
        return np.full((z.shape[1], 2), np.nan)
    return np.asarray(np.percentile(np.array(draws), [2.5, 97.5], axis=0).T, np.float64)


def _model(
    cols: tuple[str, ...],
    x: F64,
    y: Y,
    l1: float,
    alphas: F64,
    j: int,
    scores: F64 | None,
    n_boot: int,
    seed: int,
) -> PenalisedCox:
    """Refit on all of ``x`` along ``alphas[: j + 1]`` (coxnet's warm-started path)."""
    z, center, scale = _standardise(x)
    try:
        coef = _coxnet(z, y, l1, alphas[: j + 1])[1][:, -1]
    except _Fail as err:
        raise RuntimeError(f"coxnet failed on all the data at alpha={alphas[j]:.4g}") from err
    lh = z @ coef
    bt, bh = _breslow(lh, y["time"], y["event"])
    c = np.full(alphas.size, np.nan) if scores is None else scores
    ci = _bootstrap_ci(z, y, l1, alphas[: j + 1], n_boot, seed)
    return PenalisedCox(
        columns=cols,
        center=_floats(center),
        scale=_floats(scale),
        coef=_floats(coef),
        alpha=float(alphas[j]),
        l1_ratio=float(l1),
        inner_c_index=float(c[j]),
        alphas=_floats(alphas),
        inner_c_by_alpha=_floats(c),
        coef_ci95=tuple((float(a), float(b)) for a, b in ci),
        baseline_times=_floats(bt),
        baseline_cumhaz=_floats(bh),
        train_risk_quantiles=_floats(np.quantile(lh, _Q)),
    )


def _float(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _floats(v: Any) -> tuple[float, ...]:
    return tuple(_float(a) for a in v)


def _plain(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_plain(a) for a in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
