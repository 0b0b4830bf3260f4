"""The end-of-training fit of the patient-level survival model (:mod:`tumorscope.survival`).

Features are measured on the **ground-truth** masks of the training patients, in each
case's own geometry: the network is not needed for them, so the fit costs no training
time, and at prediction the same features are measured on the network's masks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from tumorscope.config import Config
from tumorscope.data.layout import discover
from tumorscope.survival.cohort import ground_truth_rows
from tumorscope.survival.model import PET_CHANNEL, PatientRow, SurvivalModel, fit_survival_model
from tumorscope.training.data import StageData

log = logging.getLogger(__name__)


def fit_run_survival(
    cfg: Config, stage_data: StageData, deep: Mapping[str, float] | None
) -> tuple[SurvivalModel | None, list[PatientRow], str | None]:
    """Fit the run's survival model on its training patients.

    Returns:
        ``(model, rows, reason)``: the model and the rows it was fitted on, or ``None``,
        ``[]`` and why not (``survival.model: deep``, no outcomes, no events, ...).
    """
    sc = cfg.survival
    if sc.model != "cox":
        return None, [], "survival.model is deep: the survival head's risk is the risk"
    prepared = stage_data.prepared
    train = prepared.patients("train")
    if not any(p in prepared.outcomes for p in train):
        return None, [], "no training patients with an outcome"
    if not stage_data.roots:
        return None, [], "the data folders are unknown to this process"
    rows = ground_truth_rows(cfg, discover(stage_data.roots), set(train), deep)
    if not rows or not any(r.event for r in rows):
        return None, [], "no training patients with a mask, an outcome and an event"
    has_deep = deep is not None and all(r.deep_risk is not None for r in rows)
    clinical = sorted({c for r in rows for c in r.clinical}) if sc.clinical else []
    try:
        model = fit_survival_model(
            rows,
            cfg.model.regions,
            pet=PET_CHANNEL in cfg.data.channels,
            clinical=clinical,
            deep_risk=sc.deep_risk if has_deep else "never",
            l1_ratio=sc.l1_ratio,
            inner_folds=sc.inner_folds,
            bootstrap=sc.bootstrap,
            min_gain=sc.min_gain,
            seed=cfg.runtime.seed,
            fitted_on=f"ground-truth masks of {len(rows)} training patients",
        )
    except ValueError as e:
        return None, [], f"the penalised Cox fit failed: {e}"
    log.info(
        "survival model: %d patients (%d events), alpha %.4g, inner-CV C %.3f, deep risk %s",
        model.patients,
        model.events,
        model.cox.alpha,
        model.cox.inner_c_index,
        "used" if model.design.deep_risk else "not used",
    )
    return model, rows, None


def cohort_risk(model: SurvivalModel, rows: Sequence[PatientRow]) -> np.ndarray:
    """The model's log-hazards ``(N,)`` of ``rows`` (the training cohort it was fitted on)."""
    return np.asarray(
        [model.predict(r.features, r.clinical, r.deep_risk).log_hazard for r in rows],
        dtype=np.float64,
    )
