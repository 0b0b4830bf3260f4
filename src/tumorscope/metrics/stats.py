"""Patient-level bootstrap confidence intervals, paired bootstrap and non-inferiority.

Resampling unit: the **patient**. Rows (slices, lesions, cases) sharing a ``groups`` value
are drawn together; a patient drawn twice contributes all its rows twice. Without
``groups`` every row is its own patient. Intervals are percentile intervals
``[q_{α/2}, q_{1−α/2}]`` of the bootstrap replicates; the point estimate is the statistic on
the original data. Replicates that come out NaN (e.g. an AUC on a one-class resample) are
dropped and counted; if none is finite the interval is NaN.

Hand-written: ``scipy.stats.bootstrap`` resamples rows, not clusters of rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

logger = logging.getLogger(__name__)

Statistic = Callable[..., float]


class BootstrapCI(NamedTuple):
    """Point estimate and percentile interval (a tuple ``(estimate, lo, hi)``)."""

    estimate: float
    lo: float
    hi: float


class PairedBootstrap(NamedTuple):
    """Paired difference ``metric(a) − metric(b)`` with interval and two-sided p-value."""

    delta: float
    lo: float
    hi: float
    p: float


def _as_arrays(data: ArrayLike | Sequence[ArrayLike]) -> list[NDArray[Any]]:
    if isinstance(data, tuple | list) and len(data) > 0 and np.ndim(data[0]) >= 1:
        arrays = [np.asarray(a) for a in data]
    else:
        arrays = [np.asarray(data)]
    n = arrays[0].shape[0] if arrays[0].ndim else 0
    for a in arrays:
        if a.ndim == 0 or a.shape[0] != n:
            raise ValueError(f"data: arrays must share their first dimension, got {a.shape} vs {n}")
    return arrays


def _group_index(groups: ArrayLike | None, n: int) -> list[NDArray[np.int64]]:
    """Row indices of each patient, in order of first appearance."""
    if groups is None:
        return [np.array([i]) for i in range(n)]
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups: shape {g.shape} does not match {n} rows")
    _, inverse = np.unique(g, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    splits = np.cumsum(np.bincount(inverse))[:-1]
    return list(np.split(order, splits))


def _resample_indices(
    members: list[NDArray[np.int64]], n_boot: int, rng: np.random.Generator
) -> list[NDArray[np.int64]]:
    k = len(members)
    draws = rng.integers(0, k, size=(n_boot, k))
    return [np.concatenate([members[j] for j in row]) for row in draws]


def _replicates(
    fn: Statistic,
    arrays: list[NDArray[Any]],
    groups: ArrayLike | None,
    n_boot: int,
    seed: int,
) -> NDArray[np.float64]:
    if n_boot < 1:
        raise ValueError(f"n_boot: must be >= 1, got {n_boot}")
    members = _group_index(groups, arrays[0].shape[0])
    rng = np.random.default_rng(seed)
    reps = np.array(
        [float(fn(*(a[idx] for a in arrays))) for idx in _resample_indices(members, n_boot, rng)]
    )
    n_nan = int(np.isnan(reps).sum())
    if n_nan:
        logger.info("bootstrap: %d of %d replicates undefined (NaN), dropped", n_nan, n_boot)
    return reps


def _percentiles(reps: NDArray[np.float64], alpha: float) -> tuple[float, float]:
    finite = reps[~np.isnan(reps)]
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_ci(
    data: ArrayLike | Sequence[ArrayLike],
    groups: ArrayLike | None = None,
    statistic: Statistic | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> BootstrapCI:
    """Patient-level percentile bootstrap CI of a statistic.

    Args:
        data: One array ``(N, ...)`` (e.g. per-slice Dice values) or a sequence of arrays
            sharing the first dimension (e.g. ``(score, label)``), resampled row-aligned.
        groups: Patient id per row ``(N,)``; None = rows are independent patients.
        statistic: ``statistic(*arrays) -> float``; default the mean of a single array.
        n_boot: Number of bootstrap replicates.
        seed: Seed of the numpy generator (results are reproducible).
        alpha: 1 − confidence level.

    Returns:
        ``BootstrapCI(estimate, lo, hi)``.
    """
    arrays = _as_arrays(data)
    if statistic is None:
        if len(arrays) != 1:
            raise ValueError("statistic: required when data holds several arrays")
        fn: Statistic = lambda a: float(np.mean(a))  # noqa: E731
    else:
        fn = statistic
    estimate = float(fn(*arrays))
    lo, hi = _percentiles(_replicates(fn, arrays, groups, n_boot, seed), alpha)
    return BootstrapCI(estimate, lo, hi)


def paired_bootstrap(
    metric_fn: Statistic,
    a: ArrayLike,
    b: ArrayLike,
    *shared: ArrayLike,
    groups: ArrayLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> PairedBootstrap:
    """Paired bootstrap of ``metric_fn(a, *shared) − metric_fn(b, *shared)``.

    Both models are evaluated on the same resampled patients in each replicate.

    Args:
        metric_fn: ``metric_fn(prediction, *shared) -> float``, e.g. ``roc_auc`` with
            ``shared = (label,)`` or ``harrell_c_index`` with ``(time, event)``.
        a: Predictions of model A ``(N, ...)``.
        b: Predictions of model B ``(N, ...)``, row-aligned with ``a``.
        *shared: Targets ``(N, ...)`` shared by both models.
        groups: Patient id per row ``(N,)``.
        n_boot: Number of replicates.
        seed: Random seed.
        alpha: 1 − confidence level.

    Returns:
        ``PairedBootstrap(delta, lo, hi, p)`` where ``p = min(1, 2·min(P*(δ <= 0), P*(δ >= 0)))``
        over the finite replicates (two-sided bootstrap p-value of ``δ = 0``).
    """
    arrays = _as_arrays([a, b, *shared])

    def diff(pa: NDArray[Any], pb: NDArray[Any], *rest: NDArray[Any]) -> float:
        return float(metric_fn(pa, *rest)) - float(metric_fn(pb, *rest))

    delta = diff(*arrays)
    reps = _replicates(diff, arrays, groups, n_boot, seed)
    lo, hi = _percentiles(reps, alpha)
    finite = reps[~np.isnan(reps)]
    if finite.size == 0:
        return PairedBootstrap(delta, lo, hi, float("nan"))
    p = min(1.0, 2.0 * min(float((finite <= 0).mean()), float((finite >= 0).mean())))
    return PairedBootstrap(delta, lo, hi, p)


def non_inferiority(delta_lo: float, margin: float) -> bool:
    """Non-inferiority decision from the lower CI bound of ``new − reference``.

    Args:
        delta_lo: Lower bound of the (1 − α) CI of ``metric(new) − metric(reference)``, for
            a metric where higher is better. Use a two-sided 95% CI (one-sided α = 0.025).
        margin: Non-inferiority margin > 0 (the loss one is willing to accept).

    Returns:
        True when ``delta_lo > −margin`` (the new model is non-inferior); False otherwise,
        including a NaN bound.
    """
    if margin <= 0 or not np.isfinite(margin):
        raise ValueError(f"margin: must be positive and finite, got {margin}")
    return bool(np.isfinite(delta_lo) and delta_lo > -margin)
