"""The patient-level survival model: measured tumour features + clinical covariates in a
penalised Cox, the deep risk added only where inner cross-validation shows it helps.

It is fitted on the features of the training patients' ground-truth masks (no network is
needed for that, so it costs no training time) and applied to the features of the masks
the network predicts. Clinical covariates enter with their training median (mode for 0/1
columns) where missing, plus a missing-value indicator, so that "unknown" can carry risk of
its own (BraTS' ``Extent_of_Resection`` is often NA).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tumorscope.survival.cox import PenalisedCox, fit_penalised_cox, inner_cv_c_index
from tumorscope.survival.features import feature_names

#: The PET channel's name: its values are read as SUV for the PET features.
PET_CHANNEL = "pet"
#: Kinds of the stored model (``kind`` key), for older/newer runs to be told apart.
MODEL_KIND = "penalised_cox"


@dataclass(frozen=True)
class PatientRow:
    """One patient's inputs and outcome for fitting.

    Attributes:
        patient_id: Identifier.
        features: Feature name → value (:func:`tumorscope.survival.features.tumour_features`).
        clinical: Covariate name → value (None = missing).
        deep_risk: The survival head's log-hazard, or None without one.
        time: Follow-up, days.
        event: True if the event was observed.
    """

    patient_id: str
    features: Mapping[str, float]
    clinical: Mapping[str, float | None]
    deep_risk: float | None
    time: float
    event: bool


@dataclass(frozen=True)
class CoxRisk:
    """One patient's risk from the survival model.

    Attributes:
        log_hazard: Linear predictor of the penalised Cox (higher = worse).
        percentile: Position in the training cohort, 0–100.
        times: Days of the Breslow baseline.
        survival: ``S(t)`` at ``times``.
        imputed: Clinical covariates that were missing and filled with the training value.
    """

    log_hazard: float
    percentile: float
    times: list[float]
    survival: list[float]
    imputed: list[str]


@dataclass(frozen=True)
class Design:
    """Which covariates the Cox model takes, and how a patient becomes a row of them.

    Attributes:
        features: Feature names taken from the masks.
        clinical: Clinical covariate names (each adds a value and a ``_missing`` column).
        impute: Training median (mode for 0/1 columns) per clinical covariate.
        deep_risk: Whether the survival head's risk is the last column.
    """

    features: tuple[str, ...]
    clinical: tuple[str, ...] = ()
    impute: tuple[float, ...] = ()
    deep_risk: bool = False

    def __post_init__(self) -> None:
        if len(self.impute) != len(self.clinical):
            raise ValueError("survival model: one imputation value per clinical covariate needed")

    @property
    def columns(self) -> tuple[str, ...]:
        """Column names, in row order."""
        cols = list(self.features)
        for c in self.clinical:
            cols += [c, f"{c}_missing"]
        return (*cols, "deep_risk") if self.deep_risk else tuple(cols)

    def row(
        self,
        features: Mapping[str, float],
        clinical: Mapping[str, float | None] | None,
        deep_risk: float | None,
    ) -> tuple[np.ndarray, list[str]]:
        """``(K,)`` covariate row and the clinical names that were imputed.

        Raises:
            ValueError: A feature is absent, or the deep risk is needed and missing.
        """
        missing = [f for f in self.features if f not in features]
        if missing:
            raise ValueError(f"survival model: feature(s) {missing} not measured")
        row = [float(features[f]) for f in self.features]
        imputed: list[str] = []
        given = dict(clinical or {})
        for name, fill in zip(self.clinical, self.impute, strict=True):
            value = given.get(name)
            if value is None or not math.isfinite(float(value)):
                imputed.append(name)
                row += [fill, 1.0]
            else:
                row += [float(value), 0.0]
        if self.deep_risk:
            if deep_risk is None or not math.isfinite(deep_risk):
                raise ValueError("survival model: it uses the deep risk, which is missing")
            row.append(float(deep_risk))
        return np.asarray(row, dtype=np.float64), imputed


@dataclass(frozen=True)
class SurvivalModel:
    """A fitted survival model, stored in the run's calibration (``survival_model``).

    Attributes:
        regions: Regions whose features it reads, in the network's order.
        design: Its covariates.
        cox: The penalised Cox model over ``design.columns``.
        inner_c_index: Inner-CV Harrell C without and with the deep risk (``None`` where not
            tried), which decided ``design.deep_risk``.
        patients: Training patients it was fitted on; ``events`` of them had the event.
        fitted_on: What the features were measured on (e.g. ``ground-truth masks``).
    """

    regions: tuple[str, ...]
    design: Design
    cox: PenalisedCox
    inner_c_index: dict[str, float | None] = field(default_factory=dict)
    patients: int = 0
    events: int = 0
    fitted_on: str = "ground-truth masks"

    def __post_init__(self) -> None:
        if self.design.columns != tuple(self.cox.columns):
            raise ValueError(
                f"survival model: columns {list(self.design.columns)} do not match the Cox "
                f"model's {list(self.cox.columns)}"
            )

    def predict(
        self,
        features: Mapping[str, float],
        clinical: Mapping[str, float | None] | None = None,
        deep_risk: float | None = None,
    ) -> CoxRisk:
        """Risk, percentile and survival curve of one patient."""
        x, imputed = self.design.row(features, clinical, deep_risk)
        lh = self.cox.log_hazard(x[None, :])
        times = np.asarray(self.cox.baseline_times, dtype=np.float64)
        surv = self.cox.survival(lh, times)[0] if times.size else np.zeros(0)
        return CoxRisk(
            log_hazard=float(lh[0]),
            percentile=float(self.cox.percentile(lh)[0]),
            times=times.tolist(),
            survival=[float(s) for s in surv],
            imputed=imputed,
        )

    def coefficients(self) -> list[dict[str, Any]]:
        """Per covariate: name, coefficient per training SD (log hazard ratio), 95 % CI."""
        return [
            {"name": c, "coef": b, "ci95": list(ci)}
            for c, b, ci in zip(self.cox.columns, self.cox.coef, self.cox.coef_ci95, strict=True)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": MODEL_KIND,
            "regions": list(self.regions),
            "features": list(self.design.features),
            "clinical": list(self.design.clinical),
            "impute": list(self.design.impute),
            "deep_risk": self.design.deep_risk,
            "cox": self.cox.to_dict(),
            "inner_c_index": dict(self.inner_c_index),
            "patients": self.patients,
            "events": self.events,
            "fitted_on": self.fitted_on,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SurvivalModel:
        """Read the stored form.

        Raises:
            ValueError: Another kind, a missing key, or columns that do not fit the Cox model.
        """
        if raw.get("kind") != MODEL_KIND:
            raise ValueError(f"survival model: kind {raw.get('kind')!r} is not {MODEL_KIND!r}")
        # Keys beyond these (e.g. the fit's ``fit_seconds``) are records, not model state.
        keys = ("regions", "features", "clinical", "impute", "deep_risk", "cox")
        absent = [k for k in keys if k not in raw]
        if absent:
            raise ValueError(f"survival model: key(s) {absent} missing")
        return cls(
            regions=tuple(str(r) for r in raw["regions"]),
            design=Design(
                features=tuple(str(f) for f in raw["features"]),
                clinical=tuple(str(c) for c in raw["clinical"]),
                impute=tuple(float(v) for v in raw["impute"]),
                deep_risk=bool(raw["deep_risk"]),
            ),
            cox=PenalisedCox.from_dict(raw["cox"]),
            inner_c_index={str(k): v for k, v in dict(raw.get("inner_c_index") or {}).items()},
            patients=int(raw.get("patients", 0)),
            events=int(raw.get("events", 0)),
            fitted_on=str(raw.get("fitted_on", "ground-truth masks")),
        )


def _fill_value(values: Sequence[float | None]) -> float:
    seen = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if seen.size == 0:
        return 0.0
    if np.isin(seen, (0.0, 1.0)).all():  # a 0/1 column: the mode, as the deep head's imputer
        return float(np.mean(seen) >= 0.5)
    return float(np.median(seen))


def fit_survival_model(
    rows: Sequence[PatientRow],
    regions: Sequence[str],
    *,
    pet: bool = False,
    use_features: bool = True,
    clinical: Sequence[str] = (),
    deep_risk: str = "auto",
    l1_ratio: float = 0.5,
    inner_folds: int = 5,
    bootstrap: int = 200,
    min_gain: float = 0.005,
    seed: int = 0,
    fitted_on: str = "ground-truth masks",
) -> SurvivalModel:
    """Fit the survival model on training patients.

    Args:
        rows: Training patients (features measured on their ground-truth masks).
        regions: The network's regions (the features of those regions are the columns).
        pet: Whether PET features are among the features.
        use_features: Take the tumour features (False: clinical covariates and deep risk
            only, the clinical baseline a user compares against).
        clinical: Clinical covariate names to use.
        deep_risk: ``auto`` (added when inner CV raises Harrell's C by more than
            ``min_gain``), ``never`` or ``always``; ``auto``/``always`` need every row's
            ``deep_risk``.
        l1_ratio: Elastic-net mixing of the Cox penalty (1 = lasso).
        inner_folds: Folds of the inner cross-validation that chooses the penalty.
        bootstrap: Resamples for the coefficients' confidence intervals.
        min_gain: Inner-CV C-index gain the deep risk must bring under ``auto``.
        seed: Seed of the folds and resamples.
        fitted_on: What the features were measured on (recorded).

    Raises:
        ValueError: No rows, no events, ``deep_risk`` unknown or needed and absent.
    """
    if deep_risk not in ("auto", "never", "always"):
        raise ValueError(f"deep_risk: {deep_risk!r} is not auto, never or always")
    if not rows:
        raise ValueError("survival model: no training patients with an outcome")
    names = feature_names(regions, pet=pet) if use_features else ()
    clin = tuple(clinical)
    impute = tuple(_fill_value([r.clinical.get(c) for r in rows]) for c in clin)
    time = np.asarray([r.time for r in rows], dtype=np.float64)
    event = np.asarray([r.event for r in rows], dtype=bool)
    has_deep = all(r.deep_risk is not None and math.isfinite(r.deep_risk) for r in rows)
    if deep_risk == "always" and not has_deep:
        raise ValueError("survival.deep_risk: always, but the network has no survival head")

    def design(with_deep: bool) -> tuple[np.ndarray, Design]:
        d = Design(features=names, clinical=clin, impute=impute, deep_risk=with_deep)
        return np.stack([d.row(r.features, r.clinical, r.deep_risk)[0] for r in rows]), d

    cv = {"inner_folds": inner_folds, "l1_ratio": l1_ratio, "seed": seed}
    x, chosen = design(False)
    inner: dict[str, float | None] = {"without_deep": None, "with_deep": None}
    use_deep = deep_risk == "always"
    if deep_risk == "auto" and has_deep:
        inner["without_deep"] = inner_cv_c_index(x, time, event, **cv)[0]  # type: ignore[arg-type]
        xd, _ = design(True)
        inner["with_deep"] = inner_cv_c_index(xd, time, event, **cv)[0]  # type: ignore[arg-type]
        use_deep = bool(inner["with_deep"] > inner["without_deep"] + min_gain)  # type: ignore[operator]
    if use_deep:
        x, chosen = design(True)
    cox = fit_penalised_cox(x, time, event, chosen.columns, bootstrap=bootstrap, **cv)  # type: ignore[arg-type]
    return SurvivalModel(
        regions=tuple(regions),
        design=chosen,
        cox=cox,
        inner_c_index=inner,
        patients=len(rows),
        events=int(event.sum()),
        fitted_on=fitted_on,
    )


def out_of_fold_risk(
    fit_rows: Sequence[PatientRow],
    apply_rows: Sequence[PatientRow],
    regions: Sequence[str],
    *,
    folds: int = 5,
    repeats: int = 1,
    seed: int = 0,
    **fit: Any,
) -> np.ndarray:
    """Out-of-fold log-hazards ``(repeats, N)``: fitted on ``fit_rows`` of the other folds,
    applied to ``apply_rows`` of the held-out fold (the same patients, in the same order —
    e.g. features of the ground-truth masks to fit and of the predicted masks to apply).

    Folds are stratified by event (scikit-learn ``StratifiedKFold``, reshuffled per repeat).
    """
    from sklearn.model_selection import StratifiedKFold  # only the benchmark/demo path needs it

    if [r.patient_id for r in fit_rows] != [r.patient_id for r in apply_rows]:
        raise ValueError("out_of_fold_risk: fit_rows and apply_rows hold other patients")
    event = np.asarray([r.event for r in fit_rows], dtype=int)
    out = np.full((repeats, len(fit_rows)), np.nan)
    k = max(2, min(folds, int(event.sum()), int((1 - event).sum()) or folds))
    for rep in range(repeats):
        split = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed + rep)
        for train, test in split.split(np.zeros(len(event)), event):
            model = fit_survival_model(
                [fit_rows[i] for i in train], regions, seed=seed + rep, **fit
            )
            for i in test:
                r = apply_rows[i]
                out[rep, i] = model.predict(r.features, r.clinical, r.deep_risk).log_hazard
    return out
