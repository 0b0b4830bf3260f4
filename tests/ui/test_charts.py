"""The pages' charts on values: the reliability diagram of a hand-made ``metrics.json``
and the survival curve against the cohort's."""

from __future__ import annotations

from typing import Any

from tumorscope.ui import charts


def _fig(value: float | None) -> dict[str, Any]:
    return {"value": value, "ci95": None, "n": 3, "unit": ""}


def _bins(predicted: list[float], observed: list[float], count: list[int]) -> dict[str, Any]:
    return {"predicted": predicted, "observed": observed, "count": count}


def _report(sources: tuple[str, ...] = ("brats", "kaggle")) -> dict[str, Any]:
    before = _bins([0.1, 0.5, 0.9], [0.0, 0.6, 1.0], [4, 3, 5])
    after = _bins([0.2, 0.45, 0.8], [0.0, 0.6, 1.0], [4, 3, 5])
    by_source = {
        src: {"ece": _fig(0.2), "ece_after_temperature": _fig(0.05 * (i + 1)),
              "reliability": {"before_temperature": before,
                              "after_temperature": _bins([0.3 + i / 10], [0.25], [2 + i])}}
        for i, src in enumerate(sources)
    }  # fmt: skip
    return {
        "calibration": {
            "ece": _fig(0.1234),
            "ece_after_temperature": _fig(0.0421),
            "reliability": {"before_temperature": before, "after_temperature": after},
            "by_source": by_source,
            "binning": {"strategy": "equal-mass", "bins": 10},
        },
        "meta": {"temperature": 1.2086},
    }


def test_the_curves_are_the_reports_bins_with_its_ece() -> None:
    rel = charts.reliability(_report())
    assert rel.missing is None and rel.binning == "10 equal-mass bins"
    names = [c.name for c in rel.curves]
    assert names == ["all sources, before temperature", "all sources, after temperature (T=1.21)",
                     "brats, after temperature", "kaggle, after temperature"]  # fmt: skip
    after = rel.curves[1]
    assert after.predicted == [0.2, 0.45, 0.8] and after.observed == [0.0, 0.6, 1.0]
    assert after.count == [4, 3, 5]
    assert [c.ece for c in rel.curves] == [0.1234, 0.0421, 0.05, 0.1]
    assert after.label == "all sources, after temperature (T=1.21) (ECE 0.042)"
    assert rel.curves[3].predicted == [0.4] and rel.curves[3].count == [3]


def test_one_source_is_not_drawn_twice_and_an_undefined_ece_says_so() -> None:
    report = _report(sources=("brats",))
    report["calibration"]["ece"] = _fig(None)
    rel = charts.reliability(report)
    assert len(rel.curves) == 2 and rel.curves[0].label.endswith("(ECE n/a)")


def test_no_report_no_bins_no_sample_each_say_why_in_one_line() -> None:
    assert charts.reliability(None).missing == charts.NO_REPORT
    older = _report()
    del older["calibration"]["reliability"]
    assert charts.reliability(older).missing == charts.NO_BINS
    empty = _report(sources=())
    empty["calibration"]["reliability"] = {"before_temperature": _bins([], [], []),
                                           "after_temperature": _bins([], [], [])}  # fmt: skip
    rel = charts.reliability(empty)
    assert rel.curves == [] and rel.missing and "\n" not in rel.missing


def test_the_reliability_chart_has_the_diagonal_the_counts_and_the_ece_legend() -> None:
    rel = charts.reliability(_report())
    spec = charts.reliability_chart(rel)
    diagonal, line, points = spec["layer"]
    assert diagonal["data"]["values"] == [
        {"curve": charts.PERFECT, "predicted": 0.0, "observed": 0.0},
        {"curve": charts.PERFECT, "predicted": 1.0, "observed": 1.0},
    ]
    rows = points["data"]["values"]
    assert len(rows) == sum(len(c.count) for c in rel.curves) and line["data"]["values"] == rows
    mine = [r for r in rows if r["curve"] == rel.curves[1].label]
    assert [(r["predicted"], r["observed"], r["count"]) for r in mine] == [
        (0.2, 0.0, 4), (0.45, 0.6, 3), (0.8, 1.0, 5)
    ]  # fmt: skip
    assert points["encoding"]["size"]["field"] == "count"
    scale = points["encoding"]["color"]["scale"]
    assert scale["domain"] == [*(c.label for c in rel.curves), charts.PERFECT]
    assert scale["range"][-1] == charts.REFERENCE_COLOUR and len(set(scale["range"])) == 5
    assert points["encoding"]["x"]["scale"]["domain"] == [0, 1]
    assert "probability" in points["encoding"]["x"]["title"]
    assert "frequency" in points["encoding"]["y"]["title"]


PATIENT = {"time_days": [30.0, 120.0, 400.0], "survival": [0.95, 0.7, 0.4]}
COHORT = {
    "estimator": "Kaplan–Meier of the training split's outcomes",
    "patients": 25,
    "events": 19,
    "cohort_curve": {"time_days": [10.0, 200.0, 500.0], "survival": [0.96, 0.6, 0.2]},
}


def test_the_patients_curve_against_the_cohorts() -> None:
    chart = charts.survival_chart(PATIENT, COHORT)
    cohort = "training cohort (Kaplan–Meier, 25 patients, 19 events)"
    assert chart.note is None and chart.curves == [charts.PATIENT, cohort]
    by = {
        n: [(r["days"], r["survival"]) for r in chart.rows if r["curve"] == n] for n in chart.curves
    }
    assert by[charts.PATIENT] == [(0.0, 1.0), (30.0, 0.95), (120.0, 0.7), (400.0, 0.4)]
    assert by[cohort] == [(0.0, 1.0), (10.0, 0.96), (200.0, 0.6), (500.0, 0.2)]
    spec = charts.survival_spec(chart)
    assert spec["mark"]["interpolate"] == "step-after"  # both are step functions
    assert spec["encoding"]["x"]["title"] == "time (days)"
    assert spec["encoding"]["color"]["scale"]["domain"] == chart.curves
    assert spec["data"]["values"] == chart.rows


def test_a_missing_curve_is_said_and_the_other_still_drawn() -> None:
    alone = charts.survival_chart(PATIENT, None)
    assert alone.curves == [charts.PATIENT] and alone.note is not None
    assert "no cohort curve" in alone.note
    no_baseline = charts.survival_chart({"time_days": [], "survival": []}, COHORT)
    assert len(no_baseline.curves) == 1 and "no predicted curve" in str(no_baseline.note)
    assert charts.survival_chart(None, None).rows == []


def test_a_curve_that_starts_at_day_0_is_not_given_a_second_start() -> None:
    chart = charts.survival_chart({"time_days": [0.0, 5.0], "survival": [0.9, 0.8]}, None)
    assert [(r["days"], r["survival"]) for r in chart.rows] == [(0.0, 0.9), (5.0, 0.8)]
