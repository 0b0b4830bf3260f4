"""What a trained network needs before it predicts: calibration, validation metrics and
the out-of-domain model, fitted on the run's splits. Training ends with it, and so does
any network made from a run later (``tumorscope export --prune``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from tumorscope.config import Config
from tumorscope.models.multitask import MultiTaskNet
from tumorscope.runs.load import DomainStats
from tumorscope.runs.manifest import Calibration
from tumorscope.training import loop
from tumorscope.training.calibrate import calibrate
from tumorscope.training.data import StageData
from tumorscope.training.ood import fit_run_domain
from tumorscope.training.survival import cohort_risk, fit_run_survival


@dataclass(frozen=True)
class Finished:
    """The end-of-training fits of one network.

    Attributes:
        calibration: Temperature, threshold, review cut-off (validation split), Breslow
            baseline and risk quantiles (training cohort).
        metrics: ``{"validation": ...}`` of the network on the validation split.
        domain: Its out-of-domain model, or None (too few training slices).
    """

    calibration: Calibration
    metrics: dict[str, Any]
    domain: DomainStats | None


def finish(cfg: Config, model: MultiTaskNet, stage_data: StageData, precision: str) -> Finished:
    """Calibrate ``model`` and fit its domain model on ``stage_data``'s splits."""
    for part in list(model.parts):
        model.unfreeze(part)
    tasks = tuple(
        t
        for t in ("segmentation", *cfg.model.heads)
        if t in ("segmentation", "tumour", "tumour_type", "survival")
    )
    val = loop.collect_validation(model, stage_data.val_batches_for(tasks), tasks, precision)
    train = (
        loop.collect_validation(
            model, stage_data.train_survival_batches(), ("survival",), precision
        )
        if "survival" in cfg.model.heads
        else loop.ValidationOutputs()
    )
    deep = None
    if train.survival_patients:
        risk = train.survival.arrays()[0]
        deep = {p: float(r) for p, r in zip(train.survival_patients, risk, strict=True)}
    t0 = time.perf_counter()
    survival, rows, reason = fit_run_survival(cfg, stage_data, deep)
    fit_seconds = time.perf_counter() - t0
    stored = None
    if survival is not None:
        # The product's risk is the Cox model's: the baseline hazard and cohort quantiles
        # are fitted on its training-cohort risks, not on the survival head's.
        train = loop.ValidationOutputs()
        train.survival.update(
            cohort_risk(survival, rows),
            np.asarray([r.time for r in rows], dtype=np.float64),
            np.asarray([r.event for r in rows], dtype=bool),
        )
        train.survival_patients.extend(r.patient_id for r in rows)
        stored = {**survival.to_dict(), "fit_seconds": round(fit_seconds, 2)}
    calibration = calibrate(cfg.calibration, val, train, stage_data.imputation())
    reasons = dict(calibration.reasons)
    if reason is not None:
        reasons["survival_model"] = reason
    return Finished(
        calibration=calibration.replace(survival_model=stored, reasons=reasons),
        metrics={"validation": loop.validation_metrics(val)},
        domain=fit_run_domain(model, stage_data, quantile=cfg.calibration.domain_quantile),
    )
