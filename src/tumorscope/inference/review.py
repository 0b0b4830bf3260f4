"""The confidence-based review flag of one tumour decision.

A decision ``tumour = p >= threshold`` on the calibrated probability ``p`` has the
confidence ``|p − threshold|`` (:func:`tumorscope.metrics.selective.decision_confidence`);
it **needs review** when that confidence is under the run's ``review_confidence``, the
cut-off the end-of-training calibration chose on the validation split so that the
decisions it does not flag err at most ``review_target_error``. The band
``threshold ± review_confidence`` is the *review band*. A run without a cut-off (trained
before it existed, or with ``calibration.review_target_error: null``) flags nothing by
confidence: ``needs_review`` is None and the reason says why.

This flag needs no extra forward pass. The MC-dropout / test-time-augmentation score of
:mod:`tumorscope.inference.uncertainty` is a second, independent flag
(``FullResult.needs_review``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tumorscope.metrics.selective import decision_confidence
from tumorscope.runs.manifest import Calibration

CONFIDENCE_DEFINITION = "|tumour probability − decision threshold| (calibrated probability)"
NO_CUTOFF = (
    "the run's calibration has no review_confidence (trained before it existed, or "
    "calibration.review_target_error is null): no confidence-based review"
)


@dataclass(frozen=True)
class ReviewResult:
    """Whether a tumour decision falls inside the review band.

    Attributes:
        needs_review: Confidence under ``review_confidence`` (or a probability that is not
            a number); None when the run has none.
        confidence: ``|p − threshold|`` of the decision, in probability units (None when
            no decision was checked).
        review_confidence: The run's cut-off, or None.
        target_error: The validation error rate the cut-off was chosen for, or None.
        reason: One line saying why the decision is (not) flagged.
    """

    needs_review: bool | None
    confidence: float | None
    review_confidence: float | None
    target_error: float | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        """JSON-able mapping (the ``review`` entry of a prediction)."""
        return {
            "needs_review": self.needs_review,
            "confidence": self.confidence,
            "confidence_definition": CONFIDENCE_DEFINITION,
            "review_confidence": self.review_confidence,
            "target_error": self.target_error,
            "reason": self.reason,
        }


def _operating_point(cutoff: float, target: float | None) -> str:
    chosen = "chosen on validation"
    if target is not None:
        chosen += f" for error ≤ {100 * target:g} % among the decisions not flagged"
    return f"confidence < {cutoff:.3f}, {chosen}"


def review_decision(
    probability: float, threshold: float, calibration: Calibration, *, what: str = "tumour"
) -> ReviewResult:
    """The review flag of the decision ``probability >= threshold``.

    Args:
        probability: Calibrated tumour probability of the image, slice or patient.
        threshold: The decision threshold it was compared with.
        calibration: The run's calibration (its ``review_confidence`` and target).
        what: What the probability is of, for the reason (``tumour``, ``patient tumour``).
    """
    cutoff, target = calibration.review_confidence, calibration.review_target_error
    if not math.isfinite(probability):  # a broken output is never accepted silently
        return ReviewResult(True, None, cutoff, target, f"{what} probability is not a number")
    confidence = float(decision_confidence([probability], threshold)[0])
    if cutoff is None:
        return ReviewResult(None, confidence, None, target, NO_CUTOFF)
    if cutoff == 0:
        reason = (
            "no review band: the validation decisions already met the target with none "
            f"flagged ({_operating_point(cutoff, target)})"
        )
        return ReviewResult(False, confidence, cutoff, target, reason)
    flagged = confidence < cutoff
    where = "within" if flagged else "outside"
    reason = (
        f"{what} probability {probability:.3f} is {where} the review band "
        f"{threshold:.3f} ± {cutoff:.3f} ({_operating_point(cutoff, target)})"
    )
    why = calibration.reasons.get("review_confidence")
    if why:  # e.g. no cut-off reached the target, so every decision is flagged
        reason += f"; {why}"
    return ReviewResult(flagged, confidence, cutoff, target, reason)
