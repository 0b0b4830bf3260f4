"""Selective prediction: risk–coverage, uncertainty AUROC and the review cut-off on fixtures
whose answers are known, and against scikit-learn's ``roc_auc_score``."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tumorscope.metrics import selective as sel


def _errors_ranked_last(n_right: int = 80, n_wrong: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Every wrong decision less confident than every right one, in shuffled order."""
    rng = np.random.default_rng(0)
    conf = np.r_[rng.uniform(0.5, 1.0, n_right), rng.uniform(0.0, 0.4, n_wrong)]
    wrong = np.r_[np.zeros(n_right), np.ones(n_wrong)]
    order = rng.permutation(conf.size)
    return conf[order], wrong[order]


def test_confidence_and_errors_of_decisions_at_a_threshold() -> None:
    p, label = np.array([0.2, 0.4, 0.5, 0.9]), np.array([0, 1, 0, 1])
    np.testing.assert_allclose(sel.decision_confidence(p, 0.4), [0.2, 0.0, 0.1, 0.5], atol=1e-12)
    # p >= 0.4 is a tumour decision: 0.4 (label 1) right, 0.5 (label 0) wrong.
    assert sel.decision_errors(p, label, 0.4).tolist() == [False, False, True, False]
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        sel.decision_confidence([1.2], 0.5)
    with pytest.raises(ValueError, match="does not match"):
        sel.decision_errors(p, label[:3], 0.4)


def test_errors_ranked_last_give_auroc_1_and_zero_risk_up_to_the_accuracy() -> None:
    conf, wrong = _errors_ranked_last()
    assert sel.uncertainty_auroc(conf, wrong) == 1.0
    assert sel.uncertainty_auroc(conf, wrong) == roc_auc_score(wrong, -conf)
    assert sel.uncertainty_auroc(-conf, wrong) == 0.0  # ranked first instead
    coverage, risk = sel.risk_coverage(conf, wrong)
    np.testing.assert_allclose(coverage, np.arange(1, 101) / 100)
    assert (risk[:80] == 0).all() and (risk[80:] > 0).all()  # accuracy is 0.8
    assert risk[-1] == pytest.approx(0.2)
    assert sel.selective_risk(conf, wrong, 0.8) == 0.0
    assert sel.selective_risk(conf, wrong, 0.9) == pytest.approx(10 / 90)
    assert sel.selective_risk(conf, wrong, 1.0) == pytest.approx(0.2)
    # AURC: the mean of the risks, k errors among the first 80 + k decisions.
    expected = np.r_[np.zeros(80), np.arange(1, 21) / np.arange(81, 101)].mean()
    assert sel.aurc(conf, wrong) == pytest.approx(expected)


def test_a_random_score_gives_auroc_one_half_and_no_gain_at_90_percent() -> None:
    rng = np.random.default_rng(1)
    conf = rng.random(20_000)
    wrong = (rng.random(20_000) < 0.1).astype(float)
    auroc = sel.uncertainty_auroc(conf, wrong)
    assert auroc == pytest.approx(roc_auc_score(wrong, -conf), abs=1e-12)
    assert auroc == pytest.approx(0.5, abs=0.02)
    assert sel.selective_risk(conf, wrong, 0.9) == pytest.approx(wrong.mean(), abs=0.01)


def test_ties_count_by_their_expectation_whatever_the_input_order() -> None:
    conf = np.array([1.0, 1.0, 0.5, 0.5])
    loss = np.array([0.0, 1.0, 1.0, 1.0])
    _, risk = sel.risk_coverage(conf, loss)
    # k=1, 2: the top tie's mean 1/2; k=3: (1 + 1)/3; k=4: 3/4.
    np.testing.assert_allclose(risk, [0.5, 0.5, 2 / 3, 0.75])
    order = [3, 1, 2, 0]
    np.testing.assert_allclose(sel.risk_coverage(conf[order], loss[order])[1], risk)
    flat = np.full(10, 0.3)
    wrong = np.r_[np.ones(3), np.zeros(7)]
    np.testing.assert_allclose(sel.risk_coverage(flat, wrong)[1], 0.3)
    assert sel.uncertainty_auroc(flat, wrong) == 0.5


def test_degenerate_groups() -> None:
    empty = np.zeros(0)
    assert sel.risk_coverage(empty, empty)[1].size == 0
    assert np.isnan(sel.selective_risk(empty, empty, 0.9))
    assert np.isnan(sel.aurc(empty, empty))
    assert np.isnan(sel.uncertainty_auroc(np.array([0.2, 0.8]), np.zeros(2)))  # no error
    assert np.isnan(sel.accepted_error(np.array([0.1]), np.array([1.0]), 0.5))  # none kept
    with pytest.raises(ValueError, match="coverage"):
        sel.selective_risk(np.ones(3), np.zeros(3), 0.0)


CONF = np.array([0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
WRONG = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0])


@pytest.mark.parametrize(
    ("target", "cutoff", "rate", "error"),
    [
        (0.3, 0.0, 0.0, 0.3),  # all ten accepted already err 3/10: nothing reviewed
        (0.25, 0.1, 0.1, 2 / 9),  # drop 0.05: 2/9
        (0.15, 0.2, 0.2, 1 / 8),  # drop 0.05, 0.1: 1/8
        (0.1, 0.4, 0.4, 0.0),  # 1/7 is still too much; from 0.4 on no error
        (0.0, 0.4, 0.4, 0.0),
    ],
)
def test_review_cutoff_is_the_smallest_meeting_the_target(
    target: float, cutoff: float, rate: float, error: float
) -> None:
    chosen = sel.review_cutoff(CONF[::-1], WRONG[::-1], target)  # order does not matter
    assert chosen.met
    assert chosen.cutoff == pytest.approx(cutoff)
    assert chosen.review_rate == pytest.approx(rate)
    assert chosen.accepted_error == pytest.approx(error)
    assert sel.review_rate(CONF, chosen.cutoff) == pytest.approx(rate)
    assert sel.accepted_error(CONF, WRONG, chosen.cutoff) == pytest.approx(error)


def test_review_cutoff_cannot_split_a_tie_and_may_review_everything() -> None:
    chosen = sel.review_cutoff(np.array([0.2, 0.2, 0.5]), np.array([0, 1, 0]), 0.0)
    assert (chosen.cutoff, chosen.review_rate, chosen.accepted_error) == (0.5, 2 / 3, 0.0)
    hopeless = sel.review_cutoff(np.array([0.1, 0.9]), np.array([0, 1]), 0.2)
    assert not hopeless.met and hopeless.cutoff == sel.REVIEW_ALL
    assert hopeless.review_rate == 1.0 and np.isnan(hopeless.accepted_error)
    with pytest.raises(ValueError, match="no decision"):
        sel.review_cutoff(np.zeros(0), np.zeros(0), 0.1)
    with pytest.raises(ValueError, match="target_error"):
        sel.review_cutoff(CONF, WRONG, 1.0)
