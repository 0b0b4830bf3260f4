"""Selective prediction: decision confidence, risk–coverage curves, the review cut-off.

A binary decision is ``tumour = p >= threshold`` on the calibrated probability ``p``. Its
**confidence** is the distance of ``p`` from the threshold, ``|p − threshold|`` (the
softmax-response score of Geifman & El-Yaniv, NeurIPS 2017, measured from the decision
threshold instead of 1/2); its uncertainty is ``−confidence`` (any decreasing map ranks
alike). A selective classifier accepts the decisions whose confidence is at least a
cut-off ``κ`` and sends the others for review.

Risk–coverage curve: the decisions sorted by confidence, most confident first; at
coverage ``k / N`` the selective risk is the mean loss (error 0/1, or ``1 − Dice``) of the
``k`` most confident. Decisions of equal confidence cannot be ordered, so within a tie the
curve is the **expected** risk over random orderings (each tied decision contributes the
tie's mean loss), which makes every figure independent of the input order.

Review cut-off (:func:`review_cutoff`): the smallest ``κ`` among the observed confidences
whose accepted set ``{confidence >= κ}`` has an error rate at most the target; ``κ = 0``
when every decision may be accepted. Hand-written: neither scikit-learn nor MONAI offers
selective-prediction curves.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tumorscope.metrics.arrays import to_numpy
from tumorscope.metrics.classification import roc_auc

#: Cut-off that sends every decision for review (a confidence ``|p − t|`` is below 1
#: unless the threshold sits at 0 or 1).
REVIEW_ALL = 1.0


class ReviewCutoff(NamedTuple):
    """The cut-off :func:`review_cutoff` chose and what it does on the data it was chosen on.

    Attributes:
        cutoff: ``κ``: a decision whose confidence is under it needs review.
        review_rate: Fraction of the decisions sent for review.
        accepted_error: Error rate of the accepted decisions (NaN when none is accepted).
        met: Whether some non-empty accepted set reaches the target (else ``κ`` reviews all).
    """

    cutoff: float
    review_rate: float
    accepted_error: float
    met: bool


def _vector(x: ArrayLike, name: str) -> NDArray[np.float64]:
    a = to_numpy(x).astype(np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: values must be finite")
    return a


def _pair(
    confidence: ArrayLike, loss: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    c, v = _vector(confidence, "confidence"), _vector(loss, "loss")
    if c.shape != v.shape:
        raise ValueError(f"loss: shape {v.shape} does not match confidence shape {c.shape}")
    return c, v


def decision_confidence(prob: ArrayLike, threshold: float) -> NDArray[np.float64]:
    """Confidence ``|p − threshold|`` of each decision ``p >= threshold``, ``(N,)`` → ``(N,)``."""
    p = _vector(prob, "prob")
    if ((p < 0) | (p > 1)).any():
        raise ValueError("prob: probabilities must lie in [0, 1]")
    return np.abs(p - float(threshold))


def decision_errors(prob: ArrayLike, label: ArrayLike, threshold: float) -> NDArray[np.bool_]:
    """Wrong decisions, ``(p >= threshold) != label``, ``(N,)`` bool."""
    p = _vector(prob, "prob")
    y = to_numpy(label)
    if y.shape != p.shape:
        raise ValueError(f"label: shape {y.shape} does not match prob shape {p.shape}")
    return np.asarray((p >= threshold) != y.astype(bool), dtype=bool)


def risk_coverage(
    confidence: ArrayLike, loss: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The risk–coverage curve, ties resolved by their expectation (module docstring).

    Args:
        confidence: ``(N,)`` higher = more confident.
        loss: ``(N,)`` loss of each decision (0/1 error, or ``1 − Dice``).

    Returns:
        ``(coverage, risk)``, both ``(N,)``: ``coverage[k-1] = k / N`` and ``risk[k-1]`` the
        mean loss of the ``k`` most confident decisions. Empty arrays for ``N = 0``.
    """
    c, v = _pair(confidence, loss)
    n = c.size
    if n == 0:
        return np.zeros(0), np.zeros(0)
    order = np.argsort(-c, kind="stable")
    c, v = c[order], v[order]
    _, start, counts = np.unique(-c, return_index=True, return_counts=True)
    group_sum = np.add.reduceat(v, start)
    before = np.concatenate([[0.0], np.cumsum(group_sum)[:-1]])  # loss of the groups above
    group = np.repeat(np.arange(start.size), counts)
    taken = np.arange(1, n + 1) - start[group]  # members of its own tie group taken so far
    expected = before[group] + taken * group_sum[group] / counts[group]
    k = np.arange(1, n + 1, dtype=np.float64)
    return k / n, expected / k


def selective_risk(confidence: ArrayLike, loss: ArrayLike, coverage: float) -> float:
    """Mean loss of the ``⌈coverage · N⌉`` most confident decisions (NaN for ``N = 0``).

    Args:
        confidence: ``(N,)`` higher = more confident.
        loss: ``(N,)`` loss of each decision.
        coverage: Fraction of the decisions accepted, in ``(0, 1]``.
    """
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage: {coverage} is not in (0, 1]")
    _, risk = risk_coverage(confidence, loss)
    if risk.size == 0:
        return float("nan")
    k = max(1, math.ceil(coverage * risk.size - 1e-9))
    return float(risk[k - 1])


def aurc(confidence: ArrayLike, loss: ArrayLike) -> float:
    """Area under the risk–coverage curve, the mean of the risks at ``k = 1 … N`` (NaN if empty)."""
    _, risk = risk_coverage(confidence, loss)
    return float(risk.mean()) if risk.size else float("nan")


def uncertainty_auroc(confidence: ArrayLike, wrong: ArrayLike) -> float:
    """AUROC of the uncertainty ``−confidence`` for telling wrong decisions from right ones.

    Args:
        confidence: ``(N,)`` higher = more confident.
        wrong: ``(N,)`` 1 for a wrong decision.

    Returns:
        1 when every wrong decision is less confident than every right one, 1/2 for a
        score unrelated to the errors (ties count 1/2); NaN when all decisions are right
        or all are wrong.
    """
    c = _vector(confidence, "confidence")
    return roc_auc(-c, to_numpy(wrong).astype(np.int64))


def review_rate(confidence: ArrayLike, cutoff: float) -> float:
    """Fraction of the decisions with confidence under ``cutoff`` (NaN for ``N = 0``)."""
    c = _vector(confidence, "confidence")
    return float((c < cutoff).mean()) if c.size else float("nan")


def accepted_error(confidence: ArrayLike, wrong: ArrayLike, cutoff: float) -> float:
    """Error rate of the decisions with confidence at least ``cutoff`` (NaN when none)."""
    c, w = _pair(confidence, wrong)
    keep = c >= cutoff
    return float(w[keep].mean()) if keep.any() else float("nan")


def review_cutoff(confidence: ArrayLike, wrong: ArrayLike, target_error: float) -> ReviewCutoff:
    """The smallest confidence cut-off whose accepted decisions err at most ``target_error``.

    Candidates are the observed confidences in increasing order: accepting those at least
    as confident as the ``j``-th gives the accepted error ``e_j``; the first ``j`` with
    ``e_j <= target_error`` wins, and ``κ`` is its confidence — or 0 when it is the first
    (every decision accepted, none reviewed). When no non-empty accepted set reaches the
    target, ``κ`` is :data:`REVIEW_ALL` (every decision reviewed) and ``met`` is False.

    Args:
        confidence: ``(N,)`` decision confidences, ``N >= 1``.
        wrong: ``(N,)`` 1 for a wrong decision.
        target_error: Largest error rate allowed among the accepted decisions, in [0, 1).

    Raises:
        ValueError: no decision, mismatched shapes, or a target outside [0, 1).
    """
    if not 0 <= target_error < 1:
        raise ValueError(f"target_error: {target_error} is not in [0, 1)")
    c, w = _pair(confidence, wrong)
    if c.size == 0:
        raise ValueError("confidence: no decision to choose a cut-off on")
    order = np.argsort(c, kind="stable")
    c, w = c[order], w[order]
    suffix_n = np.arange(c.size, 0, -1, dtype=np.float64)
    suffix_err = np.cumsum(w[::-1])[::-1] / suffix_n
    first = np.r_[True, c[1:] != c[:-1]]  # where each distinct confidence starts
    ok = np.nonzero(first & (suffix_err <= target_error + 1e-12))[0]
    if ok.size == 0:
        return ReviewCutoff(REVIEW_ALL, 1.0, float("nan"), False)
    j = int(ok[0])
    cutoff = 0.0 if j == 0 else float(c[j])
    return ReviewCutoff(cutoff, j / c.size, float(suffix_err[j]), True)
