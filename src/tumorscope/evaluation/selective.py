"""The ``selective`` section of ``metrics.json``: does low confidence mark wrong answers?

Decisions are the held-out slice and image decisions ``p >= threshold`` on the calibrated
probability, as users get them; each one's confidence is ``|p − threshold|``
(:mod:`tumorscope.metrics.selective`, the softmax-response score) and its uncertainty
``1 − confidence``. Per group — ``slices`` (volume slices), ``images`` (2D images) and
``by_source.<source>`` (as ``classification.by_source`` names them):

- ``uncertainty_auroc``: AUROC of the uncertainty for telling wrong decisions from right;
- ``error_full`` and ``error_at_90``: the error rate of all decisions and of the 90 % most
  confident (ties by expectation); ``error_ratio_at_90`` is their ratio;
- ``aurc``: area under the risk–coverage curve; ``risk_coverage``: that curve at the
  coverages :data:`COVERAGE_GRID`;
- ``review_rate`` and ``accepted_error``: the share of decisions under the run's
  ``review_confidence`` and the error rate of the others (null for a run without one).

``volumes``: the AUROC of a case uncertainty for telling volumes of Dice < :data:`DICE_CUT`
(gated Dice, what users get) from the others. The case uncertainty needs no MC dropout:
it is ``1 −`` the mean confidence of the slices the model calls tumour (``p >= threshold``),
or of its most probable slice when it calls none (the slice that decides the patient).
With fewer than :data:`MIN_PER_CLASS` volumes on either side the AUROC is null with a reason.

Intervals: patient-level bootstrap (a volume's slices resampled together; an image is its
own patient).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tumorscope.evaluation.collect import HeldOut, Units, classification_units
from tumorscope.evaluation.schema import boot_figure, undefined
from tumorscope.metrics import selective as sel
from tumorscope.runs.manifest import Calibration

COVERAGE = 0.9
COVERAGE_GRID = tuple(round(0.05 * k, 2) for k in range(1, 21))
DICE_CUT = 0.7
# With one or two volumes on a side the AUROC takes only a handful of values.
MIN_PER_CLASS = 3
CONFIDENCE_DEFINITION = (
    "|calibrated tumour probability − decision threshold| (softmax response); "
    "uncertainty = 1 − confidence"
)
CASE_UNCERTAINTY = (
    "1 − mean confidence of the volume's slices with p >= threshold (its most probable "
    "slice when there is none)"
)


def curve_points(confidence: np.ndarray, loss: np.ndarray) -> dict[str, list[float]]:
    """The risk–coverage curve at :data:`COVERAGE_GRID` (empty lists without decisions)."""
    if confidence.size == 0:
        return {"coverage": [], "risk": []}
    return {
        "coverage": list(COVERAGE_GRID),
        "risk": [sel.selective_risk(confidence, loss, c) for c in COVERAGE_GRID],
    }


def _ratio_at(coverage: float) -> Any:
    def ratio(c: np.ndarray, w: np.ndarray) -> float:
        full = float(np.mean(w))
        return sel.selective_risk(c, w, coverage) / full if full > 0 else float("nan")

    return ratio


def decision_figures(
    conf: np.ndarray,
    wrong: np.ndarray,
    patient: np.ndarray,
    cutoff: float | None,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """The figures of one group of decisions (all arrays ``(N,)``, row-aligned).

    Args:
        conf: Decision confidences.
        wrong: 1 for a wrong decision.
        patient: Patient id per decision (the bootstrap's unit).
        cutoff: The run's ``review_confidence``, or None.
        n_boot: Bootstrap replicates.
        seed: Bootstrap seed.
    """
    n, n_wrong = int(conf.size), int(wrong.sum())
    none = "no decision in this group"
    kw: dict[str, Any] = {"groups": patient, "n_boot": n_boot, "seed": seed}
    w = wrong.astype(np.float64)
    one_class = (
        none
        if n == 0
        else f"{n_wrong} of {n} decisions are wrong: AUROC needs right and wrong ones"
    )
    out: dict[str, Any] = {
        "n_decisions": n,
        "n_wrong": n_wrong,
        "uncertainty_auroc": boot_figure([conf, w], sel.uncertainty_auroc, reason=one_class, **kw),
        "error_full": boot_figure([w], None, reason=none, **kw),
        "error_at_90": boot_figure(
            [conf, w], lambda c, e: sel.selective_risk(c, e, COVERAGE), reason=none, **kw
        ),
        "error_ratio_at_90": boot_figure(
            [conf, w],
            _ratio_at(COVERAGE),
            reason=none if n == 0 else "no wrong decision at full coverage",
            **kw,
        ),
        "aurc": boot_figure([conf, w], sel.aurc, reason=none, **kw),
    }
    if cutoff is None:
        why = "the run's calibration has no review_confidence (trained before it existed)"
        out["review_rate"] = undefined(why, n)
        out["accepted_error"] = undefined(why, n)
    else:
        out["review_rate"] = boot_figure(
            [conf], lambda c: sel.review_rate(c, cutoff), reason=none, **kw
        )
        out["accepted_error"] = boot_figure(
            [conf, w],
            lambda c, e: sel.accepted_error(c, e, cutoff),
            reason=none if n == 0 else "every decision is under the review cut-off",
            **kw,
        )
    out["risk_coverage"] = curve_points(conf, w)
    return out


def unit_confidence(u: Units, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """``(confidence, wrong)`` of every classification unit, both ``(N,)``."""
    conf = sel.decision_confidence(u.prob, threshold)
    return conf, sel.decision_errors(u.prob, u.label, threshold)


def case_confidence(held: HeldOut) -> np.ndarray:
    """``(V,)`` confidence of each volume case (:data:`CASE_UNCERTAINTY` is ``1 −`` it)."""
    t = held.threshold
    patient = np.asarray(held.slice_patient, dtype=object)
    source = np.asarray(held.slice_source, dtype=object)
    prob = np.asarray(held.slice_prob, dtype=np.float64)
    out = np.empty(len(held.case_ids), dtype=np.float64)
    for i, (pid, src) in enumerate(zip(held.case_ids, held.case_source, strict=True)):
        p = prob[(patient == pid) & (source == src)]
        if p.size == 0:  # no slice inside the brain/body mask: the patient p is 0
            p = np.zeros(1)
        called = p[p >= t]
        chosen = called if called.size else p[[int(p.argmax())]]
        out[i] = float(sel.decision_confidence(chosen, t).mean())
    return out


def volume_figures(held: HeldOut, n_boot: int, seed: int) -> dict[str, Any]:
    """``low_dice_auroc`` of the case uncertainty and the Dice–coverage curve."""
    dice = np.asarray(held.dice, dtype=np.float64)
    conf = case_confidence(held)
    low = (dice < DICE_CUT).astype(np.float64)
    n, n_low = int(dice.size), int(low.sum())
    out: dict[str, Any] = {
        "uncertainty_definition": CASE_UNCERTAINTY,
        "dice_cut": DICE_CUT,
        "n_volumes": n,
        "n_low_dice": n_low,
    }
    if n == 0:
        out["low_dice_auroc"] = undefined("no evaluated volume has a ground-truth mask")
    elif min(n_low, n - n_low) < MIN_PER_CLASS:
        out["low_dice_auroc"] = undefined(
            f"{n_low} of {n} volumes have Dice < {DICE_CUT:g}; the AUROC needs at least "
            f"{MIN_PER_CLASS} on each side",
            n,
        )
    else:
        out["low_dice_auroc"] = boot_figure(
            [conf, low],
            sel.uncertainty_auroc,
            groups=None,
            n_boot=n_boot,
            seed=seed,
            reason="one side of the Dice cut is empty",
        )
    cov, risk = sel.risk_coverage(conf, 1.0 - dice)
    out["dice_coverage"] = {"coverage": cov.tolist(), "mean_dice": (1.0 - risk).tolist()}
    return out


def selective_section(
    held: HeldOut, calibration: Calibration | Mapping[str, Any], n_boot: int, seed: int
) -> dict[str, Any]:
    """The ``selective`` section (module docstring)."""
    cal = Calibration.coerce(calibration)
    cutoff = cal.review_confidence
    u = classification_units(held)
    conf, wrong = unit_confidence(u, held.threshold)

    def group(m: np.ndarray) -> dict[str, Any]:
        return decision_figures(conf[m], wrong[m], u.patient[m], cutoff, n_boot, seed)

    return {
        "confidence_definition": CONFIDENCE_DEFINITION,
        "threshold": held.threshold,
        "coverage": COVERAGE,
        "review_confidence": cutoff,
        "review_target_error": cal.review_target_error,
        "slices": group(u.kind == "slice"),
        "images": group(u.kind == "image"),
        "by_source": {str(src): group(u.source == src) for src in sorted(set(u.source.tolist()))},
        "volumes": volume_figures(held, n_boot, seed),
    }
