"""Survival rows of a cohort: the tumour features of each patient's ground-truth masks,
its clinical covariates and outcome, read from the data folders."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from tumorscope.config import Config
from tumorscope.data.layout import load_case, region_masks
from tumorscope.data.types import DataError, DatasetIndex, Outcome
from tumorscope.survival.features import tumour_features
from tumorscope.survival.model import PET_CHANNEL, PatientRow

log = logging.getLogger(__name__)


def case_features(
    cfg: Config, masks: Sequence[object], spacing: Sequence[float], pet: object = None
) -> dict[str, float]:
    """Features of region masks ``(R, X, Y, Z)`` in ``cfg.model.regions`` order."""
    regions = list(cfg.model.regions)
    return tumour_features(
        {r: np.asarray(masks[i]).astype(bool) for i, r in enumerate(regions)},
        spacing,
        min_component_ml=cfg.calibration.min_component_ml,
        pet=None if pet is None else np.asarray(pet),
    )


def ground_truth_rows(
    cfg: Config,
    index: DatasetIndex,
    patients: Collection[str] | None = None,
    deep: Mapping[str, float] | None = None,
) -> list[PatientRow]:
    """Feature rows from the ground-truth masks, sorted by patient (cases without a mask,
    an outcome, or the network's regions are skipped with a log line).

    Args:
        cfg: The run's config (regions, channels, component size).
        index: The discovered data (cases and outcomes).
        patients: Patients wanted (None: all).
        deep: Patient id → the survival head's log-hazard, when the network has one.
    """
    regions = list(cfg.model.regions)
    pet = PET_CHANNEL in cfg.data.channels
    rows: list[PatientRow] = []
    for case in index.cases:
        pid = case.patient_id
        outcome = index.outcomes.get(pid)
        if (patients is not None and pid not in patients) or case.mask is None or outcome is None:
            continue
        channels = [PET_CHANNEL] if pet else [cfg.data.channels[0]]
        try:
            loaded = load_case(case, channels, missing=cfg.data.missing_channels)
            if loaded.mask is None:
                continue
            truth = region_masks(loaded.mask, loaded.labels or case.source, regions)
        except (DataError, ValueError) as e:
            log.warning("survival model: %s skipped: %s", pid, e)
            continue
        features = case_features(
            cfg, list(truth), loaded.meta.spacing[:3], loaded.image[0] if pet else None
        )
        rows.append(outcome_row(outcome, features, None if deep is None else deep.get(pid)))
    return sorted(rows, key=lambda r: r.patient_id)


def outcome_row(
    outcome: Outcome, features: Mapping[str, float], deep_risk: float | None = None
) -> PatientRow:
    """A patient's row from its outcome (time, event, clinical covariates) and features."""
    return PatientRow(
        patient_id=outcome.patient_id,
        features=dict(features),
        clinical=dict(outcome.clinical),
        deep_risk=deep_risk,
        time=float(outcome.time),
        event=bool(outcome.event),
    )
