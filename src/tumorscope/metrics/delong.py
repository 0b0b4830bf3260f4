"""DeLong variance of the ROC AUC and the DeLong test for two correlated AUCs.

DeLong, DeLong & Clarke-Pearson (1988), *Biometrics* 44:837–845, computed with the
midrank algorithm of Sun & Xu (2014), *IEEE Signal Processing Letters* 21:1389–1393.
Hand-written: neither scikit-learn nor scipy offers the DeLong variance or test.

Structural components for ``m`` positives ``X`` and ``n`` negatives ``Y``, with
``ψ(x, y) = 1[x > y] + ½·1[x = y]``:
``V10_i = mean_j ψ(X_i, Y_j)``, ``V01_j = mean_i ψ(X_i, Y_j)``, ``AUC = mean V10``,
``Var(AUC) = S10/m + S01/n`` with ``S10``, ``S01`` the sample (ddof=1) covariances.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from tumorscope.metrics.classification import check_scores_labels


def _midrank(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks with ties given their average rank (``(N,)`` → ``(N,)``)."""
    return np.asarray(stats.rankdata(x, method="average"), dtype=np.float64)


def _structural_components(
    scores: NDArray[np.float64], label: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """AUCs and structural components for ``K`` score rows.

    Args:
        scores: ``(K, N)`` scores of K classifiers on the same N cases.
        label: ``(N,)`` labels in {0, 1}, both classes present.

    Returns:
        ``auc (K,)``, ``v10 (K, m)`` over positives and ``v01 (K, n)`` over negatives.
    """
    pos = scores[:, label == 1]
    neg = scores[:, label == 0]
    m = pos.shape[1]
    n = neg.shape[1]
    k = scores.shape[0]
    v10 = np.empty((k, m))
    v01 = np.empty((k, n))
    auc = np.empty(k)
    for r in range(k):
        tx = _midrank(pos[r])
        ty = _midrank(neg[r])
        tz = _midrank(np.concatenate([pos[r], neg[r]]))
        auc[r] = (tz[:m].sum() - m * (m + 1) / 2.0) / (m * n)
        v10[r] = (tz[:m] - tx) / n
        v01[r] = 1.0 - (tz[m:] - ty) / m
    return auc, v10, v01


def _covariance(v10: NDArray[np.float64], v01: NDArray[np.float64]) -> NDArray[np.float64]:
    m = v10.shape[1]
    n = v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10, ddof=1)) if m > 1 else np.zeros((v10.shape[0],) * 2)
    s01 = np.atleast_2d(np.cov(v01, ddof=1)) if n > 1 else np.zeros((v01.shape[0],) * 2)
    return np.asarray(s10 / m + s01 / n, dtype=np.float64)


def delong_auc_variance(score: ArrayLike, label: ArrayLike) -> tuple[float, float]:
    """AUC and its DeLong variance.

    Args:
        score: Scores ``(N,)``; higher means positive.
        label: Labels ``(N,)`` in {0, 1}.

    Returns:
        ``(auc, variance)``; both NaN when ``label`` holds one class only.
    """
    s, y = check_scores_labels(score, label)
    if y.min() == y.max():
        return float("nan"), float("nan")
    auc, v10, v01 = _structural_components(s[None, :], y)
    return float(auc[0]), float(_covariance(v10, v01)[0, 0])


def delong_ci(
    score: ArrayLike, label: ArrayLike, alpha: float = 0.05
) -> tuple[float, float, float]:
    """``(auc, lo, hi)``: Wald interval ``auc ± z_{1−α/2}·√var``, clipped to [0, 1]."""
    auc, var = delong_auc_variance(score, label)
    if np.isnan(auc):
        return auc, float("nan"), float("nan")
    half = float(stats.norm.ppf(1 - alpha / 2)) * float(np.sqrt(max(var, 0.0)))
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def delong_test(
    score_a: ArrayLike, score_b: ArrayLike, label: ArrayLike
) -> tuple[float, float, float, float]:
    """DeLong test of ``H0: AUC_a = AUC_b`` for two scores on the same cases.

    Args:
        score_a: Scores of model A ``(N,)``.
        score_b: Scores of model B ``(N,)`` on the same cases.
        label: Labels ``(N,)`` in {0, 1}.

    Returns:
        ``(auc_a, auc_b, z, p)`` with ``z = (auc_a − auc_b) / sd`` and a two-sided p-value.
        When the difference has zero variance (e.g. identical scores), ``z`` is 0 and ``p``
        is 1 if the AUCs are equal; with one class only everything is NaN.
    """
    sa, y = check_scores_labels(score_a, label)
    sb, _ = check_scores_labels(score_b, label)
    if y.min() == y.max():
        nan = float("nan")
        return nan, nan, nan, nan
    auc, v10, v01 = _structural_components(np.vstack([sa, sb]), y)
    cov = _covariance(v10, v01)
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    diff = float(auc[0] - auc[1])
    if var <= 1e-15:
        z = 0.0 if abs(diff) < 1e-12 else float(np.sign(diff)) * float("inf")
    else:
        z = diff / float(np.sqrt(var))
    p = float(2.0 * stats.norm.sf(abs(z)))
    return float(auc[0]), float(auc[1]), z, p
