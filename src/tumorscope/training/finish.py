"""What a trained network needs before it predicts: calibration, validation metrics and
the out-of-domain model, fitted on the run's splits. Training ends with it, and so does
any network made from a run later (``tumorscope export --prune``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tumorscope.config import Config
from tumorscope.models.multitask import MultiTaskNet
from tumorscope.runs.load import DomainStats
from tumorscope.runs.manifest import Calibration
from tumorscope.training import loop
from tumorscope.training.calibrate import calibrate
from tumorscope.training.data import StageData
from tumorscope.training.ood import fit_run_domain


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
    return Finished(
        calibration=calibrate(cfg.calibration, val, train, stage_data.imputation()),
        metrics={"validation": loop.validation_metrics(val)},
        domain=fit_run_domain(model, stage_data),
    )
