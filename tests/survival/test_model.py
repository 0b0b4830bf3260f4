"""The survival model: covariate rows, the deep-risk decision, storage, out-of-fold risks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from lifelines.utils import concordance_index

from tumorscope.survival.features import feature_names
from tumorscope.survival.model import (
    Design,
    PatientRow,
    SurvivalModel,
    fit_survival_model,
    out_of_fold_risk,
)


def _cohort(n: int, seed: int, deep_noise: float | None = None) -> list[PatientRow]:
    """Patients whose hazard is log WT volume, age and a subtotal resection (NA for 20 %);
    the deep risk is the true log-hazard plus noise (``None``: pure noise)."""
    rng = np.random.default_rng(seed)
    names = feature_names(["WT"])
    rows = []
    for i in range(n):
        wt = float(rng.lognormal(3.0, 0.8))
        age = float(rng.normal(60, 12))
        subtotal = float(rng.random() < 0.4)
        eta = 0.9 * (np.log1p(wt) - 3.0) + 0.05 * (age - 60) + 0.6 * subtotal
        t = float(rng.exponential(400 * np.exp(-eta)))
        c = float(rng.uniform(200, 1500))
        feats = {k: 0.0 for k in names}
        feats.update(
            wt_ml=wt, log_wt_ml=float(np.log1p(wt)), wt_components=1.0,
            wt_sphericity=float(rng.uniform(0.5, 0.9)), wt_midline_mm=float(rng.uniform(0, 60)),
        )  # fmt: skip
        deep = float(rng.normal()) if deep_noise is None else eta + deep_noise * rng.normal()
        rows.append(
            PatientRow(
                patient_id=f"P{i:03d}",
                features=feats,
                clinical={
                    "Age": age,
                    "Extent_of_Resection": None if rng.random() < 0.2 else subtotal,
                },
                deep_risk=deep,
                time=max(1.0, min(t, c)),
                event=t <= c,
            )
        )
    return rows


def _c(model: SurvivalModel, rows: list[PatientRow]) -> float:
    risk = [model.predict(r.features, r.clinical, r.deep_risk).log_hazard for r in rows]
    return float(
        concordance_index([r.time for r in rows], -np.asarray(risk), [r.event for r in rows])
    )


CLIN = ("Age", "Extent_of_Resection")


def test_design_row_imputes_with_indicator() -> None:
    d = Design(features=("wt_ml",), clinical=CLIN, impute=(61.0, 0.0), deep_risk=True)
    assert d.columns == (
        "wt_ml", "Age", "Age_missing", "Extent_of_Resection", "Extent_of_Resection_missing",
        "deep_risk",
    )  # fmt: skip
    row, imputed = d.row({"wt_ml": 2.5}, {"Age": 70.0, "Extent_of_Resection": None}, 0.3)
    assert row.tolist() == [2.5, 70.0, 0.0, 0.0, 1.0, 0.3]
    assert imputed == ["Extent_of_Resection"]
    row, imputed = d.row({"wt_ml": 2.5}, None, -1.0)
    assert row.tolist() == [2.5, 61.0, 1.0, 0.0, 1.0, -1.0]
    assert imputed == list(CLIN)
    with pytest.raises(ValueError, match="not measured"):
        d.row({}, None, 0.0)
    with pytest.raises(ValueError, match="deep risk"):
        d.row({"wt_ml": 1.0}, None, None)
    with pytest.raises(ValueError, match="imputation"):
        Design(features=(), clinical=CLIN, impute=(1.0,))


def test_fit_reaches_the_true_ordering_and_impute_values() -> None:
    train, test = _cohort(240, 0), _cohort(300, 1)
    model = fit_survival_model(train, ["WT"], clinical=CLIN, deep_risk="never", bootstrap=50)
    ages = [r.clinical["Age"] for r in train]
    assert model.design.impute[0] == pytest.approx(float(np.median(ages)))
    seen = [r.clinical["Extent_of_Resection"] for r in train]
    mode = float(np.mean([v for v in seen if v is not None]) >= 0.5)
    assert model.design.impute[1] == mode
    assert not model.design.deep_risk
    coef = dict(zip(model.cox.columns, model.cox.coef, strict=True))
    assert coef["log_wt_ml"] > 0.2 and coef["Age"] > 0.2 and coef["Extent_of_Resection"] > 0.1
    # The true ordering on new patients, within a little of its C-index.
    true = [0.9 * (r.features["log_wt_ml"] - 3) + 0.05 * (r.clinical["Age"] - 60) for r in test]
    c_true = concordance_index([r.time for r in test], -np.asarray(true), [r.event for r in test])
    assert _c(model, test) > c_true - 0.05


def test_deep_risk_added_only_where_inner_cv_shows_it_helps() -> None:
    informative = fit_survival_model(
        _cohort(200, 2, deep_noise=0.1), ["WT"], clinical=CLIN, bootstrap=0
    )
    assert informative.design.deep_risk
    c = informative.inner_c_index
    assert c["with_deep"] is not None and c["with_deep"] > c["without_deep"]
    noise = fit_survival_model(_cohort(200, 3), ["WT"], clinical=CLIN, bootstrap=0)
    assert not noise.design.deep_risk
    assert noise.design.columns[-1] != "deep_risk"
    with pytest.raises(ValueError, match="deep_risk"):
        fit_survival_model(_cohort(20, 3), ["WT"], deep_risk="sometimes")


def test_clinical_only_model_and_missing_deep_risk() -> None:
    rows = _cohort(120, 4)
    model = fit_survival_model(rows, ["WT"], use_features=False, clinical=CLIN, bootstrap=0)
    assert model.design.features == ()
    assert model.cox.columns == Design((), CLIN, model.design.impute).columns
    no_deep = [PatientRow(**{**r.__dict__, "deep_risk": None}) for r in rows]
    with pytest.raises(ValueError, match="no survival head"):
        fit_survival_model(no_deep, ["WT"], deep_risk="always")
    assert not fit_survival_model(no_deep, ["WT"], bootstrap=0).design.deep_risk


def test_round_trip_through_json() -> None:
    rows = _cohort(100, 5)
    model = fit_survival_model(rows, ["WT"], clinical=CLIN, bootstrap=20)
    again = SurvivalModel.from_dict(json.loads(json.dumps(model.to_dict())))
    r = rows[0]
    a, b = (
        model.predict(r.features, r.clinical, r.deep_risk),
        again.predict(r.features, r.clinical, r.deep_risk),
    )
    assert a == b
    assert 0.0 <= a.percentile <= 100.0
    assert a.survival == sorted(a.survival, reverse=True) and 0 < a.survival[0] <= 1
    coefs = model.coefficients()
    assert [c["name"] for c in coefs] == list(model.cox.columns)
    bad = {**model.to_dict(), "kind": "other"}
    with pytest.raises(ValueError, match="kind"):
        SurvivalModel.from_dict(bad)
    bad = {**model.to_dict(), "features": ["wt_ml"]}
    with pytest.raises(ValueError, match="do not match"):
        SurvivalModel.from_dict(bad)


def test_out_of_fold_risk_never_sees_the_patient_it_scores() -> None:
    rows = _cohort(60, 6)
    risk = out_of_fold_risk(rows, rows, ["WT"], folds=5, repeats=2, clinical=CLIN, bootstrap=0)
    assert risk.shape == (2, 60) and np.isfinite(risk).all()
    # A patient's own follow-up never enters its risk (folds are stratified by event only,
    # so changing its time keeps the folds): its risk stays, the others' of its fold do not.
    changed = list(rows)
    changed[7] = PatientRow(**{**rows[7].__dict__, "time": 1.0})
    again = out_of_fold_risk(
        changed, changed, ["WT"], folds=5, repeats=2, clinical=CLIN, bootstrap=0
    )
    assert np.array_equal(again[:, 7], risk[:, 7])
    assert not np.array_equal(again, risk)
    # Applied rows are what is scored: zero features give the risk of a tumour-free patient.
    blank = [PatientRow(**{**r.__dict__, "features": dict.fromkeys(r.features, 0.0)}) for r in rows]
    low = out_of_fold_risk(rows, blank, ["WT"], folds=5, repeats=1, clinical=CLIN, bootstrap=0)
    assert np.mean(low[0]) < np.mean(risk[0])
    with pytest.raises(ValueError, match="other patients"):
        out_of_fold_risk(rows, rows[::-1], ["WT"], clinical=CLIN)
