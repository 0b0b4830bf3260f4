"""The survival model a run fits at the end of training and the risk predictions read from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lifelines.utils import concordance_index

from tumorscope.config import ConfigError, load_config
from tumorscope.data.layout import discover, load_case, region_masks
from tumorscope.evaluation.survival_cv import survival_cross_validation
from tumorscope.inference.predictor import Predictor
from tumorscope.survival.cohort import ground_truth_rows
from tumorscope.survival.features import tumour_features
from tumorscope.survival.model import SurvivalModel

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def predictor(tiny_run: Path) -> Predictor:
    return Predictor.from_run(tiny_run)


def test_the_run_stores_a_cox_model_fitted_on_ground_truth_masks(
    tiny_run: Path, synth_brain: Path, predictor: Predictor
) -> None:
    raw = json.loads((tiny_run / "manifest.json").read_text())["calibration"]["survival_model"]
    model = SurvivalModel.from_dict(raw)
    assert raw["fit_seconds"] >= 0
    assert model.design.features[:2] == ("wt_ml", "log_wt_ml")
    assert model.design.clinical == ("Age", "Extent_of_Resection")
    train = set(predictor.manifest.splits["train"])
    index = discover([synth_brain])
    rows = ground_truth_rows(predictor.cfg, index, train)
    assert model.patients == len(rows) > 0 and model.events == sum(r.event for r in rows)
    # Features of one training patient, by hand from its label file.
    case = next(c for c in index.cases if c.patient_id == rows[0].patient_id)
    loaded = load_case(case, ["flair"])
    assert loaded.mask is not None
    wt = region_masks(loaded.mask, "brats", ["WT"])[0].astype(bool)
    ml = wt.sum() * float(np.prod(loaded.meta.spacing[:3])) / 1000.0
    assert rows[0].features["wt_ml"] == pytest.approx(ml)
    # The run's cohort quantiles and baseline are those of the model's training risks.
    risk = [model.predict(r.features, r.clinical, r.deep_risk).log_hazard for r in rows]
    q = predictor.calibration.risk_quantiles
    assert q is not None
    np.testing.assert_allclose(q["value"], np.quantile(risk, q["q"]), rtol=1e-9, atol=1e-12)


def test_predicted_risk_reads_the_features_of_the_predicted_mask(
    predictor: Predictor, synth_brain: Path
) -> None:
    model = predictor.survival
    assert model is not None
    case = next(iter(discover([synth_brain]).cases))
    clinical = {"Age": 70.0, "Extent_of_Resection": None}
    result = predictor.predict_volume(case, clinical=clinical)
    assert result.risk is not None and result.risk.model == "penalised_cox"
    expected = tumour_features(
        {"WT": result.masks[0].astype(bool)},
        result.meta.spacing[:3],
        min_component_ml=predictor.min_component_ml,
    )
    assert result.risk.features == pytest.approx(expected)
    cox = model.predict(expected, clinical, result.risk.deep_log_hazard)
    assert result.risk.log_hazard == pytest.approx(cox.log_hazard)
    assert result.risk.imputed == ["Extent_of_Resection"]
    assert result.risk.deep_log_hazard is not None  # the head still runs beside it
    as_json = result.to_json()["risk"]
    assert as_json["features"] == result.risk.features and as_json["model"] == "penalised_cox"
    # A patient with no predicted tumour gets defined features, all zero, and a risk.
    gated = predictor.predict_volume(case, gate_threshold=1.0)
    assert gated.risk is not None and not gated.masks.any()
    assert set(gated.risk.features.values()) == {0.0}
    assert np.isfinite(gated.risk.log_hazard) and 0 <= (gated.risk.percentile or 0) <= 100
    with pytest.raises(ValueError, match="unknown covariate"):
        predictor.predict_volume(case, clinical={"weight": 70.0})


def test_without_a_survival_model_the_head_is_the_risk(tiny_run: Path, synth_brain: Path) -> None:
    run = Predictor.from_run(tiny_run)
    deep = Predictor(
        run.backend,
        run.cfg,
        run.manifest,
        calibration=run.calibration.replace(survival_model=None),
    )
    case = next(iter(discover([synth_brain]).cases))
    a, b = run.predict_volume(case), deep.predict_volume(case)
    assert b.risk is not None and a.risk is not None
    assert b.risk.model == "deep" and b.risk.features == {}
    assert b.risk.log_hazard == pytest.approx(a.risk.deep_log_hazard)


def test_survival_model_deep_config_fits_no_cox(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["survival.model=deep"])
    assert cfg.survival.model == "deep"
    with pytest.raises(ConfigError, match=r"survival\.l1_ratio"):
        load_config(ROOT / "configs" / "tiny.yaml", ["survival.l1_ratio=0"])


def test_cross_validation_over_the_whole_cohort(predictor: Predictor, synth_brain: Path) -> None:
    cv = survival_cross_validation(predictor, [synth_brain], folds=2, repeats=2, n_boot=50)
    assert cv["patients"] == 8 and cv["folds"] == 2
    index = discover([synth_brain])
    pids = sorted(index.true_risk)
    t = [index.outcomes[p].time for p in pids]
    e = [index.outcomes[p].event for p in pids]
    for key, risk in (
        ("c_index_oracle", index.true_risk),
        ("c_index_observable", index.observable_risk),
    ):
        expected = concordance_index(t, -np.asarray([risk[p] for p in pids]), e)
        assert cv[key]["value"] == pytest.approx(expected)
    value = cv["c_index"]["value"]
    assert value == pytest.approx(np.mean(cv["c_index"]["per_repeat"]))
    assert 0 <= value <= 1 and cv["ratio_to_observable"] == pytest.approx(
        value / cv["c_index_observable"]["value"]
    )
    too_few = survival_cross_validation(predictor, [synth_brain], folds=5)
    assert too_few["c_index"]["value"] is None and "too few" in too_few["c_index"]["reason"]


def test_sub_region_features_come_from_the_brats_labels(synth_brain: Path) -> None:
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["model.regions=[WT,TC,ET]"])
    index = discover([synth_brain])
    rows = ground_truth_rows(cfg, index)
    assert len(rows) == 8
    case = next(c for c in index.cases if c.patient_id == rows[0].patient_id)
    loaded = load_case(case, ["flair"])
    assert loaded.mask is not None
    labels = loaded.mask
    wt, tc, et = (
        np.isin(labels, (1, 2, 4)).sum(),
        np.isin(labels, (1, 4)).sum(),
        (labels == 4).sum(),
    )
    f = rows[0].features
    assert f["tc_fraction"] == pytest.approx(tc / wt) and f["et_fraction"] == pytest.approx(et / wt)
    assert f["et_ml"] == pytest.approx(et * float(np.prod(loaded.meta.spacing[:3])) / 1000.0)
