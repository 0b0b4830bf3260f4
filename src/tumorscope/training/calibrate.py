"""The end-of-training calibration stored in a run's manifest.

Fitted on the validation split (temperature, decision threshold, review cut-off) and on
the training cohort (Breslow baseline hazard, risk quantiles, horizon ``tau``), so that
prediction never needs the training data again. The out-of-domain model is fitted beside it, from
the network's features rather than its outputs, and stored as a file of its own
(:mod:`tumorscope.training.ood`).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from scipy import special

from tumorscope.config import CalibrationConfig
from tumorscope.metrics.calibration import fit_temperature
from tumorscope.metrics.classification import threshold_for_sensitivity, youden_threshold
from tumorscope.metrics.selective import decision_confidence, decision_errors, review_cutoff
from tumorscope.metrics.survival import breslow_baseline
from tumorscope.runs.manifest import Calibration
from tumorscope.training.loop import ValidationOutputs

log = logging.getLogger(__name__)

RISK_QUANTILES = tuple(round(q, 2) for q in np.linspace(0.0, 1.0, 21))


def calibrate(
    cfg: CalibrationConfig,
    val: ValidationOutputs,
    train: ValidationOutputs,
    imputation: dict[str, Any] | None,
) -> Calibration:
    """Fit everything prediction needs; keys absent from the data are ``None`` with a reason.

    Args:
        cfg: Calibration settings.
        val: Validation-split outputs (tumour logits and labels).
        train: Training-split outputs (patient risks, times, events).
        imputation: Clinical imputation values fitted on the training split.

    Returns:
        The :class:`Calibration` stored in the run's manifest.
    """
    out: dict[str, Any] = {
        "gate_threshold": cfg.gate_threshold,
        "slice_gate": cfg.slice_gate,
        "min_component_ml": cfg.min_component_ml,
        "imputation": imputation,
        "reasons": {},
    }
    labels = val.tumour.arrays()[1].astype(float)
    logits = np.asarray(val.tumour_logit, dtype=float)
    temperature = 1.0
    if cfg.temperature and labels.size and 0 < labels.sum() < labels.size:
        temperature = float(fit_temperature(logits, labels))
    elif cfg.temperature:
        out["reasons"]["temperature"] = (
            "validation split lacks one of the classes; temperature left at 1"
        )
    out["temperature"] = temperature
    if labels.size and 0 < labels.sum() < labels.size:
        probs = 1.0 / (1.0 + np.exp(-logits / temperature))
        out["threshold"] = float(
            youden_threshold(probs, labels)
            if cfg.threshold == "youden"
            else threshold_for_sensitivity(probs, labels, cfg.target_sensitivity)
        )
    else:
        out["threshold"] = 0.5
        out["reasons"]["threshold"] = (
            "validation split lacks one of the classes; threshold left at 0.5"
        )
    out.update(_review(cfg, logits / temperature, labels, out["threshold"], out["reasons"]))

    risk, time, event = train.survival.arrays()
    if risk.size:
        if event.any():
            times, cumhaz = breslow_baseline(risk, time, event)
            out["baseline_hazard"] = {
                "times": np.asarray(times).tolist(),
                "cumulative": np.asarray(cumhaz).tolist(),
            }
        else:
            out["baseline_hazard"] = None
            out["reasons"]["baseline_hazard"] = "no events in the training cohort"
        out["risk_quantiles"] = {
            "q": list(RISK_QUANTILES),
            "value": np.quantile(risk, RISK_QUANTILES).tolist(),
        }
        tau = float(np.quantile(time, cfg.tau_quantile))
        out["tau"] = tau if math.isfinite(tau) else None
        out["train_survival"] = {"time": time.tolist(), "event": event.tolist()}
    else:
        out["baseline_hazard"] = out["risk_quantiles"] = out["tau"] = out["train_survival"] = None
        out["reasons"]["survival"] = "no training patients with an outcome"
    return Calibration.from_dict(out)


def _review(
    cfg: CalibrationConfig,
    scaled_logits: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    reasons: dict[str, str],
) -> dict[str, float | None]:
    """``review_confidence`` for ``cfg.review_target_error`` on the validation decisions.

    Args:
        cfg: Calibration settings.
        scaled_logits: ``(N,)`` validation tumour logits divided by the temperature.
        labels: ``(N,)`` their labels.
        threshold: The decision threshold just chosen.
        reasons: Filled with why the cut-off is None or reviews everything.
    """
    target = cfg.review_target_error
    if target is None:
        reasons["review_confidence"] = "calibration.review_target_error is null: no review flag"
        return {"review_confidence": None, "review_target_error": None}
    if labels.size == 0:
        reasons["review_confidence"] = "no labelled validation decision: no review flag"
        return {"review_confidence": None, "review_target_error": target}
    probs = special.expit(scaled_logits)
    conf = decision_confidence(probs, threshold)
    chosen = review_cutoff(conf, decision_errors(probs, labels, threshold), target)
    if not chosen.met:
        reasons["review_confidence"] = (
            f"no confidence cut-off keeps the validation error at or under {target:g}: "
            "every decision is flagged for review"
        )
    log.info(
        "review cut-off: confidence < %.4f flags %.1f%% of %d validation decisions; "
        "accepted error %.4f (target %g)",
        chosen.cutoff,
        100 * chosen.review_rate,
        labels.size,
        chosen.accepted_error,
        target,
    )
    return {"review_confidence": chosen.cutoff, "review_target_error": target}
