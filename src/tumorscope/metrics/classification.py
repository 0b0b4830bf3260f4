"""Binary classification metrics: threshold metrics, ROC/PR AUC, threshold selection.

Inputs are 1-D ``score`` (any real: probability or logit, higher means "tumour") and
``label`` (0/1) arrays of the same length. Convention for undefined values: data-dependent
degeneracy (one class only, a zero denominator) returns ``float("nan")``; malformed input
(shape mismatch, NaN/Inf scores, non-binary labels) raises :class:`ValueError`.

The computations are scikit-learn's (``confusion_matrix``, ``roc_auc_score``,
``average_precision_score``, ``roc_curve``); this module fixes the conventions around them.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn import metrics as skm

from tumorscope.metrics.arrays import to_numpy

CLASSIFICATION_KEYS = (
    "accuracy",
    "precision",
    "sensitivity",
    "specificity",
    "f1",
    "npv",
    "tp",
    "fp",
    "tn",
    "fn",
    "roc_auc",
    "pr_auc",
    "n",
    "threshold",
)
"""Keys of :func:`classification_metrics` (and of the accumulator's ``compute()``)."""


def check_scores_labels(
    score: ArrayLike, label: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Validate and convert ``(score, label)``.

    Args:
        score: Scores ``(N,)``, finite.
        label: Labels ``(N,)`` in {0, 1} (bool accepted).

    Returns:
        ``score`` as float64 and ``label`` as int64, both ``(N,)``.

    Raises:
        ValueError: On shape mismatch, non-1-D input, NaN/Inf scores or labels not in {0, 1}.
    """
    s = to_numpy(score).astype(np.float64)
    y_raw = to_numpy(label)
    if s.ndim != 1 or y_raw.ndim != 1:
        raise ValueError(
            f"score/label: expected 1-D arrays, got shapes {s.shape} and {y_raw.shape}"
        )
    if s.shape != y_raw.shape:
        raise ValueError(f"score: length {s.shape[0]} does not match label length {y_raw.shape[0]}")
    if not np.isfinite(s).all():
        raise ValueError(f"score: {int((~np.isfinite(s)).sum())} NaN/Inf values")
    if not np.isin(y_raw, (0, 1)).all():
        raise ValueError(f"label: must be 0/1, found {np.unique(y_raw)[:5].tolist()}")
    return s, y_raw.astype(np.int64)


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


def confusion_matrix(
    score: ArrayLike, label: ArrayLike, threshold: float = 0.5
) -> NDArray[np.int64]:
    """Confusion matrix at a threshold, scikit-learn layout ``[[TN, FP], [FN, TP]]``.

    A case is predicted positive when ``score >= threshold``.
    """
    s, y = check_scores_labels(score, label)
    pred = (s >= threshold).astype(np.int64)
    return np.asarray(skm.confusion_matrix(y, pred, labels=[0, 1]), dtype=np.int64)


def threshold_metrics(
    score: ArrayLike, label: ArrayLike, threshold: float = 0.5
) -> dict[str, float]:
    """Accuracy, precision, sensitivity, specificity, F1 and NPV at ``score >= threshold``.

    Returns:
        Dict with ``accuracy``, ``precision`` (PPV), ``sensitivity`` (recall, TPR),
        ``specificity`` (TNR), ``f1``, ``npv``, and the counts ``tp``, ``fp``, ``tn``, ``fn``.
        A ratio with a zero denominator is NaN (scikit-learn would report 0 with a warning).
    """
    (tn, fp), (fn, tp) = confusion_matrix(score, label, threshold).tolist()
    precision = _ratio(tp, tp + fp)
    sensitivity = _ratio(tp, tp + fn)
    return {
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
        "precision": precision,
        "sensitivity": sensitivity,
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "npv": _ratio(tn, tn + fn),
        "tp": float(tp),
        "fp": float(fp),
        "tn": float(tn),
        "fn": float(fn),
    }


def accuracy(score: ArrayLike, label: ArrayLike, threshold: float = 0.5) -> float:
    """Fraction correct at ``score >= threshold``."""
    return threshold_metrics(score, label, threshold)["accuracy"]


def precision(score: ArrayLike, label: ArrayLike, threshold: float = 0.5) -> float:
    """TP / (TP + FP); NaN when nothing is predicted positive."""
    return threshold_metrics(score, label, threshold)["precision"]


def sensitivity(score: ArrayLike, label: ArrayLike, threshold: float = 0.5) -> float:
    """TP / (TP + FN) (recall); NaN without positives."""
    return threshold_metrics(score, label, threshold)["sensitivity"]


def specificity(score: ArrayLike, label: ArrayLike, threshold: float = 0.5) -> float:
    """TN / (TN + FP); NaN without negatives."""
    return threshold_metrics(score, label, threshold)["specificity"]


def f1(score: ArrayLike, label: ArrayLike, threshold: float = 0.5) -> float:
    """2TP / (2TP + FP + FN); NaN when there are no positives and none predicted."""
    return threshold_metrics(score, label, threshold)["f1"]


def roc_auc(score: ArrayLike, label: ArrayLike) -> float:
    """Area under the ROC curve (Mann–Whitney form: tied scores count 1/2).

    Args:
        score: Scores ``(N,)``; higher means positive.
        label: Labels ``(N,)`` in {0, 1}.

    Returns:
        The AUC in [0, 1]; NaN when ``label`` holds one class only (AUC undefined).
    """
    s, y = check_scores_labels(score, label)
    if y.min() == y.max():
        return float("nan")
    return float(skm.roc_auc_score(y, s))


def pr_auc(score: ArrayLike, label: ArrayLike) -> float:
    """Area under the precision–recall curve as average precision (step-wise, no interpolation).

    ``AP = Σ_k (R_k − R_{k−1}) P_k`` (scikit-learn's ``average_precision_score``), not the
    trapezoidal area, which is optimistic. NaN without positives.
    """
    s, y = check_scores_labels(score, label)
    if y.sum() == 0:
        return float("nan")
    return float(skm.average_precision_score(y, s))


def youden_threshold(score: ArrayLike, label: ArrayLike) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity − 1 on the ROC curve.

    Returns:
        A score value ``t`` such that ``score >= t`` is predicted positive; the first (highest)
        threshold among ties of J. NaN when ``label`` holds one class only.
    """
    s, y = check_scores_labels(score, label)
    if y.min() == y.max():
        return float("nan")
    fpr, tpr, thr = skm.roc_curve(y, s, drop_intermediate=False)
    j = tpr - fpr
    finite = np.isfinite(thr)  # the first threshold is +inf (nothing positive)
    idx = int(np.argmax(np.where(finite, j, -np.inf)))
    return float(thr[idx])


def threshold_for_sensitivity(score: ArrayLike, label: ArrayLike, target: float) -> float:
    """Highest threshold whose sensitivity is at least ``target`` (maximises specificity).

    Args:
        score: Scores ``(N,)``.
        label: Labels ``(N,)`` in {0, 1}.
        target: Required sensitivity in [0, 1].

    Returns:
        Threshold ``t`` (predict positive when ``score >= t``); NaN without positives.
    """
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target: sensitivity must be in [0, 1], got {target}")
    s, y = check_scores_labels(score, label)
    pos = np.sort(s[y == 1])[::-1]
    if pos.size == 0:
        return float("nan")
    # The k-th highest positive score as threshold gives sensitivity >= k / n_pos.
    k = max(int(np.ceil(target * pos.size - 1e-12)), 1)
    return float(pos[k - 1])


def classification_metrics(
    score: ArrayLike, label: ArrayLike, threshold: float = 0.5
) -> dict[str, float]:
    """Threshold metrics at ``threshold`` plus ``roc_auc``, ``pr_auc`` and ``n``."""
    s, y = check_scores_labels(score, label)
    out = threshold_metrics(s, y, threshold)
    out["roc_auc"] = roc_auc(s, y)
    out["pr_auc"] = pr_auc(s, y)
    out["n"] = float(s.size)
    out["threshold"] = float(threshold)
    return out


class ClassificationAccumulator:
    """Accumulates scores and labels over batches; ``compute()`` → :func:`classification_metrics`."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        """Forget all stored scores and labels."""
        self._scores: list[NDArray[np.float64]] = []
        self._labels: list[NDArray[np.int64]] = []

    def update(self, score: ArrayLike, label: ArrayLike) -> None:
        """Add a batch of scores ``(B,)`` and labels ``(B,)``."""
        s, y = check_scores_labels(score, label)
        self._scores.append(s)
        self._labels.append(y)

    def arrays(self) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """All stored ``(score, label)``, concatenated."""
        if not self._scores:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        return np.concatenate(self._scores), np.concatenate(self._labels)

    def compute(self) -> dict[str, float]:
        """Metrics over everything stored so far (NaN-filled when empty)."""
        s, y = self.arrays()
        if s.size == 0:
            nan = float("nan")
            return dict.fromkeys(CLASSIFICATION_KEYS, nan) | {"n": 0.0, "threshold": self.threshold}
        return classification_metrics(s, y, self.threshold)
