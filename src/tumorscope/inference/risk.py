"""A patient's risk from its slice embeddings: log-hazard, cohort percentile, survival curve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tumorscope.data.imputation import ClinicalImputer
from tumorscope.data.spec import PreprocessSpec
from tumorscope.data.transforms import VolumeSlices, select_slices
from tumorscope.inference.results import RiskResult
from tumorscope.metrics.survival import survival_curves
from tumorscope.runs import Backend, Calibration


def patient_risk(
    backend: Backend,
    calibration: Calibration,
    clinical_columns: Sequence[str],
    embedding: np.ndarray,
    clinical: Mapping[str, float | None] | None = None,
) -> RiskResult:
    """Patient risk from the per-slice survival embeddings of one patient.

    Args:
        backend: The run's network.
        calibration: The run's calibration (imputation, risk quantiles, Breslow baseline).
        clinical_columns: Covariates the survival head takes, in order.
        embedding: ``(N, D)`` embeddings of the patient's slices.
        clinical: Covariate name → value (None or absent: imputed from the run).

    Returns:
        :class:`RiskResult` (log-hazard, cohort percentile, Breslow survival curve).

    Raises:
        ValueError: An unknown covariate name.
    """
    cols = list(clinical_columns)
    unknown = sorted(set(clinical or {}) - set(cols))
    if unknown:
        raise ValueError(f"clinical: unknown covariate(s) {unknown}; the run uses {cols}")
    clin: np.ndarray | None = None
    imputed: list[str] = []
    if cols:
        imputer = ClinicalImputer.from_dict(calibration.imputation or {})
        if list(imputer.columns) != cols:
            raise ValueError(f"run manifest: imputation columns do not match {cols}")
        row = dict(clinical or {})
        imputed = [c for c in cols if row.get(c) is None]
        clin = imputer.transform(row)
    lh = backend.patient_log_hazard(embedding, clin)
    q = calibration.risk_quantiles
    percentile = float(np.interp(lh, q["value"], np.asarray(q["q"]) * 100)) if q else None
    base = calibration.baseline_hazard
    times: list[float] = []
    surv: list[float] = []
    if base:
        times = [float(t) for t in base["times"]]
        surv = survival_curves([lh], (base["times"], base["cumulative"]), times)[0].tolist()
    return RiskResult(
        log_hazard=lh, percentile=percentile, survival_times=times, survival=surv, imputed=imputed
    )


def survival_slices(
    slices: VolumeSlices, tumour: np.ndarray, depth: int, spec: PreprocessSpec
) -> np.ndarray:
    """Positions (into ``slices``) of the slices the survival head pools.

    Training pooled ``slices_per_patient`` slices per patient, ``tumour_slice_fraction``
    of them tumour slices; the same rule is applied here with the model's own slice
    decisions (``tumour``, per predicted slice) in place of the unknown true mask, so that
    risks are on the scale of the cohort quantiles and baseline hazard.
    """
    fg = np.zeros(depth, dtype=np.float32)
    flags = np.zeros(depth, dtype=bool)
    fg[slices.slice_index] = slices.foreground
    flags[slices.slice_index] = tumour
    chosen = select_slices(fg, flags, spec)
    return np.nonzero(np.isin(slices.slice_index, chosen))[0]
