"""Classification metrics: hand-computed values, analytic AUCs, scikit-learn agreement, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from tumorscope.metrics import classification as cls

SCORE = np.array([0.1, 0.4, 0.35, 0.8])
LABEL = np.array([0, 0, 1, 1])


def test_hand_computed_auc_and_average_precision() -> None:
    # Pairs (pos, neg): (0.35, 0.1) ok, (0.35, 0.4) wrong, (0.8, ·) ok twice → 3/4.
    assert cls.roc_auc(SCORE, LABEL) == pytest.approx(0.75, abs=1e-12)
    # Ranked: 0.8 (+) P=1 R=.5; 0.4 (−); 0.35 (+) P=2/3 R=1 → AP = .5·1 + .5·2/3.
    assert cls.pr_auc(SCORE, LABEL) == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-12)


def test_auc_of_separable_reversed_and_constant_scores() -> None:
    label = np.array([0, 0, 0, 1, 1, 0, 1])
    separable = label * 2.0 + np.linspace(0, 0.5, 7)
    assert cls.roc_auc(separable, label) == 1.0
    assert cls.roc_auc(-separable, label) == 0.0
    assert cls.pr_auc(separable, label) == 1.0
    constant = np.full(7, 0.3)
    assert cls.roc_auc(constant, label) == 0.5  # every pair tied → ½
    assert cls.pr_auc(constant, label) == pytest.approx(3 / 7)  # the prevalence


def test_auc_mann_whitney_with_ties_by_brute_force() -> None:
    rng = np.random.default_rng(3)
    score = rng.integers(0, 5, size=60).astype(float)  # many ties
    label = rng.integers(0, 2, size=60)
    pos, neg = score[label == 1], score[label == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    assert cls.roc_auc(score, label) == pytest.approx(psi.mean(), abs=1e-12)


def test_confusion_matrix_and_threshold_metrics_by_hand() -> None:
    cm = cls.confusion_matrix(SCORE, LABEL, threshold=0.38)
    # predicted positive: 0.4 (neg → FP), 0.8 (pos → TP); 0.35 pos → FN; 0.1 neg → TN.
    np.testing.assert_array_equal(cm, [[1, 1], [1, 1]])
    m = cls.threshold_metrics(SCORE, LABEL, threshold=0.38)
    assert m["accuracy"] == 0.5 and m["precision"] == 0.5 and m["sensitivity"] == 0.5
    assert m["specificity"] == 0.5 and m["f1"] == 0.5 and m["npv"] == 0.5
    # score >= threshold is positive: 0.35 becomes positive at exactly 0.35
    assert cls.sensitivity(SCORE, LABEL, threshold=0.35) == 1.0


def test_threshold_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, 200)
    score = label * 0.8 + rng.normal(0, 0.6, 200)
    pred = (score >= 0.4).astype(int)
    m = cls.threshold_metrics(score, label, 0.4)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(label, pred), abs=1e-12)
    assert m["precision"] == pytest.approx(skm.precision_score(label, pred), abs=1e-12)
    assert m["sensitivity"] == pytest.approx(skm.recall_score(label, pred), abs=1e-12)
    assert m["specificity"] == pytest.approx(skm.recall_score(1 - label, 1 - pred), abs=1e-12)
    assert m["f1"] == pytest.approx(skm.f1_score(label, pred), abs=1e-12)


def test_youden_threshold_maximises_j_by_brute_force() -> None:
    rng = np.random.default_rng(1)
    label = rng.integers(0, 2, 80)
    score = label + rng.normal(0, 0.9, 80)
    t = cls.youden_threshold(score, label)

    def j(th: float) -> float:
        m = cls.threshold_metrics(score, label, th)
        return m["sensitivity"] + m["specificity"] - 1

    best = max(j(th) for th in np.unique(score))
    assert j(t) == pytest.approx(best, abs=1e-12)
    # Perfectly separated: the threshold is the lowest positive score.
    assert cls.youden_threshold([0.1, 0.2, 0.7, 0.9], [0, 0, 1, 1]) == 0.7


def test_threshold_for_target_sensitivity() -> None:
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    label = np.array([1, 0, 1, 1, 0, 1, 0, 0])
    t = cls.threshold_for_sensitivity(score, label, 0.75)
    assert t == 0.6  # 3 of 4 positives at >= 0.6
    assert cls.sensitivity(score, label, t) >= 0.75
    assert cls.sensitivity(score, label, np.nextafter(t, 1.0)) < 0.75  # highest such threshold
    assert cls.threshold_for_sensitivity(score, label, 1.0) == 0.4


def test_undefined_values_are_nan() -> None:
    one_class = np.array([1, 1, 1])
    s = np.array([0.2, 0.5, 0.9])
    assert np.isnan(cls.roc_auc(s, one_class))
    assert np.isnan(cls.roc_auc(s, 1 - one_class))
    assert np.isnan(cls.pr_auc(s, 1 - one_class))
    assert np.isnan(cls.youden_threshold(s, one_class))
    assert np.isnan(cls.specificity(s, one_class))
    assert np.isnan(cls.precision(s, one_class, threshold=2.0))  # nothing predicted positive
    assert cls.sensitivity(s, one_class, threshold=0.5) == pytest.approx(2 / 3)


def test_malformed_input_raises() -> None:
    with pytest.raises(ValueError, match="length"):
        cls.roc_auc([0.1, 0.2], [0, 1, 1])
    with pytest.raises(ValueError, match="NaN"):
        cls.roc_auc([0.1, float("nan")], [0, 1])
    with pytest.raises(ValueError, match="0/1"):
        cls.roc_auc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="1-D"):
        cls.roc_auc(np.zeros((2, 2)), np.zeros((2, 2)))


def test_accumulator_equals_single_call_and_accepts_torch() -> None:
    rng = np.random.default_rng(2)
    label = rng.integers(0, 2, 50)
    score = rng.random(50)
    acc = cls.ClassificationAccumulator(threshold=0.5)
    acc.update(torch.tensor(score[:20]), torch.tensor(label[:20]))
    acc.update(score[20:], label[20:])
    out = acc.compute()
    assert out == cls.classification_metrics(score, label, 0.5)
    assert out["roc_auc"] == pytest.approx(skm.roc_auc_score(label, score), abs=1e-12)
    acc.reset()
    empty = acc.compute()
    assert empty["n"] == 0.0 and np.isnan(empty["roc_auc"])
    assert set(empty) == set(out) == set(cls.CLASSIFICATION_KEYS)
