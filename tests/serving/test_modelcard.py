"""The model card's cohort survival curve: the Kaplan–Meier estimate of the training
outcomes, checked against lifelines; none without outcomes, flat without events."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from lifelines import KaplanMeierFitter

from tumorscope.inference.predictor import Predictor
from tumorscope.runs import Calibration
from tumorscope.serving.app import create_app
from tumorscope.serving.modelcard import cohort_survival
from tumorscope.serving.settings import ServiceSettings

KEY = "in-process-key-0123456789"


def _lifelines(time: list[float], event: list[int], at: list[float]) -> np.ndarray:
    kmf = KaplanMeierFitter().fit(time, event)
    return np.asarray(kmf.survival_function_at_times(at).to_numpy(), dtype=np.float64)


def test_ties_and_censoring_match_lifelines() -> None:
    time = [5.0, 5.0, 8.0, 12.0, 12.0, 12.0, 20.0, 31.5]
    event = [1, 0, 1, 1, 1, 0, 0, 1]
    s = cohort_survival(Calibration(train_survival={"time": time, "event": event}))
    assert s is not None and (s.patients, s.events) == (8, 5)
    curve = s.cohort_curve
    assert curve.time_days == [5.0, 8.0, 12.0, 20.0, 31.5]  # every observed time, once
    np.testing.assert_allclose(curve.survival, _lifelines(time, event, curve.time_days), rtol=1e-12)


def test_no_outcomes_no_curve_and_no_event_a_flat_one() -> None:
    assert cohort_survival(Calibration()) is None
    assert cohort_survival(Calibration(train_survival={"time": [], "event": []})) is None
    flat = cohort_survival(Calibration(train_survival={"time": [30.0, 10.0], "event": [0, 0]}))
    assert flat is not None and flat.events == 0
    assert flat.cohort_curve.time_days == [10.0, 30.0] and flat.cohort_curve.survival == [1.0, 1.0]


def test_model_info_serves_the_training_cohorts_curve(tiny_run: Path) -> None:
    predictor = Predictor.from_run(tiny_run)
    train = predictor.calibration.train_survival
    assert train is not None, "the tiny run has a survival head: its calibration keeps outcomes"
    s = ServiceSettings(run=tiny_run, api_key=KEY)
    with TestClient(create_app(s, predictor=predictor)) as c:
        info = c.get("/model/info", headers={"X-API-Key": KEY}).json()
    got = info["survival"]
    assert (got["patients"], got["events"]) == (len(train["time"]), int(sum(train["event"])))
    curve = got["cohort_curve"]
    assert curve["time_days"] == sorted({float(t) for t in train["time"]})
    expected = _lifelines(train["time"], train["event"], curve["time_days"])
    np.testing.assert_allclose(curve["survival"], expected, rtol=1e-12)
