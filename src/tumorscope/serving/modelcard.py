"""``/model/info``: what the model is, what it was measured to do, and on what data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tumorscope import DISCLAIMER, __version__
from tumorscope.data.types import TUMOUR_TYPES
from tumorscope.inference.predictor import Predictor
from tumorscope.metrics.survival import kaplan_meier
from tumorscope.runs import Calibration, TorchBackend
from tumorscope.serving.schemas import CohortSurvival, ModelInfo, SurvivalCurve

#: What an ``evaluate`` output folder holds (``tumorscope evaluate --out DIR``).
REPORT_FILE = "metrics.json"


class ReportError(ValueError):
    """``--report`` is not an ``evaluate`` output."""


def read_report(folder: Path | None) -> dict[str, Any] | None:
    """``metrics.json`` of an ``evaluate`` output folder (None without a folder).

    Raises:
        ReportError: No readable ``metrics.json`` in the folder, naming it.
    """
    if folder is None:
        return None
    path = Path(folder) / REPORT_FILE
    if not path.is_file():
        raise ReportError(f"{path}: no such file; --report takes an `evaluate --out` folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: not a metrics object")
    return data


def parameters(predictor: Predictor) -> dict[str, int]:
    """Parameters per top-level part of a PyTorch network (``total`` included)."""
    if not isinstance(predictor.backend, TorchBackend):
        return {}
    model = predictor.backend.model
    out = {
        name: sum(p.numel() for p in part.parameters())
        for name, part in model.named_children()
        if any(True for _ in part.parameters())
    }
    out["total"] = sum(p.numel() for p in model.parameters())
    return out


def cohort_survival(calibration: Calibration) -> CohortSurvival | None:
    """The Kaplan–Meier curve of the training split's outcomes (the calibration's
    ``train_survival``, days); None when the run stores none (no survival head, or no
    training patient with an outcome)."""
    train = calibration.train_survival
    if not train or not train.get("time"):
        return None
    time = np.asarray(train["time"], dtype=np.float64)
    event = np.asarray(train["event"], dtype=bool)
    times, surv = kaplan_meier(time, event)
    return CohortSurvival(
        estimator="Kaplan–Meier of the training split's outcomes",
        patients=int(time.size),
        events=int(event.sum()),
        cohort_curve=SurvivalCurve(time_days=times.tolist(), survival=surv.tolist()),
    )


def model_info(
    predictor: Predictor, run: Path, report: dict[str, Any] | None, limits: dict[str, int]
) -> ModelInfo:
    """The model card of a loaded predictor."""
    m = predictor.manifest
    cal = predictor.calibration
    heads = list(m.heads)
    return ModelInfo(
        name=run.name,
        version=__version__,
        backend=type(predictor.backend).__name__,
        profile=str(m.config.get("profile", "")),
        parameters=parameters(predictor),
        input=dict(m.preprocessing),
        regions=list(m.regions),
        heads=heads,
        labels=["no tumour", "tumour", *(TUMOUR_TYPES if "tumour_type" in heads else ())],
        calibration={
            "temperature": cal.temperature,
            "threshold": cal.threshold,
            "gate_threshold": cal.gate_threshold,
            "slice_gate": cal.slice_gate,
            "min_component_ml": cal.min_component_ml,
            "survival_baseline": cal.baseline_hazard is not None,
        },
        domain_check=predictor.domain.stats is not None,
        validation_metrics=dict(m.metrics),
        report=report,
        survival=cohort_survival(cal),
        capabilities={
            "mc_dropout": True,
            "tta": True,
            "gradcam": isinstance(predictor.backend, TorchBackend),
        },
        export=m.export,
        files_sha256=dict(m.files),
        limits=limits,
        disclaimer=DISCLAIMER,
    )
