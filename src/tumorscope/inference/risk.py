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
from tumorscope.survival.features import tumour_features
from tumorscope.survival.model import SurvivalModel


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


def survival_model_of(calibration: Calibration) -> SurvivalModel | None:
    """The run's patient-level survival model, or None (the survival head's risk is used).

    Raises:
        ValueError: The stored model is malformed.
    """
    raw = calibration.survival_model
    return None if raw is None else SurvivalModel.from_dict(raw)


def measured_risk(
    model: SurvivalModel,
    masks: np.ndarray,
    regions: Sequence[str],
    spacing: Sequence[float],
    *,
    min_component_ml: float,
    clinical: Mapping[str, float | None] | None = None,
    deep: RiskResult | None = None,
    pet: np.ndarray | None = None,
) -> RiskResult:
    """A patient's risk from the tumour features of its predicted masks.

    Args:
        model: The run's survival model.
        masks: ``(R, X, Y, Z)`` predicted masks after gating and post-processing.
        regions: Names of ``masks``' regions.
        spacing: Voxel size, mm.
        min_component_ml: Smallest component counted, mL.
        clinical: Covariate name → value (None or absent: imputed from the training median).
        deep: The survival head's result, when the network has one.
        pet: ``(X, Y, Z)`` PET in SUV for the PET features.

    Raises:
        ValueError: An unknown covariate name, or a region the model needs is not predicted.
    """
    unknown = sorted(set(clinical or {}) - set(model.design.clinical))
    if unknown:
        raise ValueError(
            f"clinical: unknown covariate(s) {unknown}; the run uses {list(model.design.clinical)}"
        )
    absent = [r for r in model.regions if r not in regions]
    if absent:
        raise ValueError(f"survival model: region(s) {absent} are not among {list(regions)}")
    by_region = {r: masks[list(regions).index(r)] for r in model.regions}  # 0/1: read as bool
    features = tumour_features(by_region, spacing, min_component_ml=min_component_ml, pet=pet)
    cox = model.predict(features, clinical, None if deep is None else deep.log_hazard)
    return RiskResult(
        log_hazard=cox.log_hazard,
        percentile=cox.percentile,
        survival_times=cox.times,
        survival=cox.survival,
        imputed=cox.imputed,
        slices_used=[] if deep is None else deep.slices_used,
        model="penalised_cox",
        features=features,
        deep_log_hazard=None if deep is None else deep.log_hazard,
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
