"""The pages' charts as Vega-Lite specs (``st.vega_lite_chart``), built from the service's
answers (tested without Streamlit): the model card's reliability diagram and the Volume
page's survival curve against the training cohort's."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Okabe–Ito blue and vermilion for the curves; grey for the references.
CURVE_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
REFERENCE_COLOUR = "#8c8c8c"
PERFECT = "perfect calibration"
LEGEND = {"title": None, "orient": "right", "labelLimit": 400}


def _colour(labels: list[str], references: tuple[str, ...] = ()) -> dict[str, Any]:
    """A colour scale naming each curve once, references drawn in grey."""
    domain = [*labels, *references]
    colours = [CURVE_COLOURS[i % len(CURVE_COLOURS)] for i in range(len(labels))]
    return {"domain": domain, "range": colours + [REFERENCE_COLOUR] * len(references)}


@dataclass(frozen=True)
class ReliabilityCurve:
    """One curve of the reliability diagram: its non-empty bins and its ECE.

    Attributes:
        name: What the curve is ("all sources, after temperature", "kaggle, after ...").
        predicted: Mean predicted tumour probability per bin.
        observed: Observed frequency of tumour per bin.
        count: Samples per bin.
        ece: The report's ECE of the same probabilities (None when it is undefined).
    """

    name: str
    predicted: list[float]
    observed: list[float]
    count: list[int]
    ece: float | None

    @property
    def label(self) -> str:
        """The legend entry: the name and the ECE."""
        ece = "n/a" if self.ece is None else f"{self.ece:.3f}"
        return f"{self.name} (ECE {ece})"


@dataclass(frozen=True)
class Reliability:
    """The model card's reliability diagram, or why there is none.

    Attributes:
        curves: All sources before and after temperature, then each source after it
            (only when there are several sources).
        binning: How the report binned the probabilities ("10 equal-mass bins").
        missing: One line saying why there is no diagram; None when there is one.
    """

    curves: list[ReliabilityCurve]
    binning: str
    missing: str | None


NO_REPORT = (
    "No reliability diagram: the service was started without --report "
    "(a `tumorscope evaluate --out` folder)."
)
NO_BINS = (
    "No reliability diagram: this report has no reliability bins "
    "(written by an earlier tumorscope evaluate; run it again)."
)


def _curve(name: str, bins: Mapping[str, Any], ece: Mapping[str, Any] | None) -> ReliabilityCurve:
    value = None if ece is None else ece.get("value")
    return ReliabilityCurve(
        name=name,
        predicted=[float(x) for x in bins["predicted"]],
        observed=[float(x) for x in bins["observed"]],
        count=[int(n) for n in bins["count"]],
        ece=None if value is None else float(value),
    )


def reliability(report: Mapping[str, Any] | None) -> Reliability:
    """The reliability diagram of ``/model/info``'s ``report`` (an ``evaluate`` folder's
    ``metrics.json``): its ``calibration.reliability`` bins, with the ECE of the same
    section beside each curve."""
    if report is None:
        return Reliability([], "", NO_REPORT)
    cal = report.get("calibration") or {}
    rel = cal.get("reliability")
    if not rel:
        return Reliability([], "", NO_BINS)
    temperature = (report.get("meta") or {}).get("temperature")
    after = "after temperature" + ("" if temperature is None else f" (T={temperature:.2f})")
    curves = [
        _curve("all sources, before temperature", rel["before_temperature"], cal.get("ece")),
        _curve(f"all sources, {after}", rel["after_temperature"], cal.get("ece_after_temperature")),
    ]
    sources = cal.get("by_source") or {}
    if len(sources) > 1:
        curves += [
            _curve(
                f"{src}, after temperature",
                fig["reliability"]["after_temperature"],
                fig.get("ece_after_temperature"),
            )
            for src, fig in sources.items()
            if fig.get("reliability")
        ]
    curves = [c for c in curves if c.count]
    if not curves:
        return Reliability([], "", "No reliability diagram: the report has no classified sample.")
    b = cal.get("binning") or {}
    binning = f"{b.get('bins', '?')} {b.get('strategy', '')} bins".replace("  ", " ")
    return Reliability(curves, binning, None)


def reliability_chart(rel: Reliability) -> dict[str, Any]:
    """Vega-Lite spec: observed frequency against mean predicted probability per bin (the
    point's size is the bin's count), the diagonal of perfect calibration, ECE in the legend."""
    labels = [c.label for c in rel.curves]
    rows = [
        {"curve": c.label, "predicted": p, "observed": o, "count": n}
        for c in rel.curves
        for p, o, n in zip(c.predicted, c.observed, c.count, strict=True)
    ]
    colour = {
        "field": "curve",
        "type": "nominal",
        "scale": _colour(labels, (PERFECT,)),
        "legend": LEGEND,
    }
    unit = {"type": "quantitative", "scale": {"domain": [0, 1]}}
    x = {"field": "predicted", **unit, "title": "mean predicted tumour probability"}
    y = {"field": "observed", **unit, "title": "observed frequency of tumour"}
    return {
        "title": f"Reliability diagram ({rel.binning})",
        "height": 420,
        "layer": [
            {
                "data": {
                    "values": [
                        {"curve": PERFECT, "predicted": v, "observed": v} for v in (0.0, 1.0)
                    ]
                },
                "mark": {"type": "line", "strokeDash": [6, 4]},
                "encoding": {"x": x, "y": y, "color": colour},
            },
            {
                "data": {"values": rows},
                "mark": {"type": "line", "point": False},
                "encoding": {"x": x, "y": y, "color": colour},
            },
            {
                "data": {"values": rows},
                "mark": {"type": "circle", "opacity": 0.9},
                "encoding": {
                    "x": x,
                    "y": y,
                    "color": colour,
                    "size": {
                        "field": "count",
                        "type": "quantitative",
                        "title": "samples in bin",
                        "scale": {"zero": False, "range": [30, 300]},
                    },
                    "tooltip": [
                        {"field": "curve"},
                        {"field": "predicted", "format": ".3f"},
                        {"field": "observed", "format": ".3f"},
                        {"field": "count"},
                    ],
                },
            },
        ],
    }


PATIENT = "this patient (predicted)"


@dataclass(frozen=True)
class SurvivalChart:
    """The Volume page's survival plot: the patient's predicted curve and the cohort's.

    Attributes:
        rows: ``{"curve", "days", "survival"}`` per point, each curve starting at
            ``(0, 1)`` (``S(0) = 1``).
        curves: The curves' legend entries, the patient's first.
        note: One line about a missing curve; None when both are drawn.
    """

    rows: list[dict[str, Any]]
    curves: list[str]
    note: str | None


def _steps(name: str, time_days: list[float], survival: list[float]) -> list[dict[str, Any]]:
    points = list(zip(time_days, survival, strict=True))
    if not points or points[0][0] > 0:
        points.insert(0, (0.0, 1.0))
    return [{"curve": name, "days": float(t), "survival": float(s)} for t, s in points]


def survival_chart(
    patient: Mapping[str, Any] | None, cohort: Mapping[str, Any] | None
) -> SurvivalChart:
    """The patient's curve (``/predict/volume``'s ``survival.survival_curve``) against the
    training cohort's (``/model/info``'s ``survival``: Kaplan–Meier), as one chart's rows."""
    rows: list[dict[str, Any]] = []
    curves: list[str] = []
    notes: list[str] = []
    if patient and patient["time_days"]:
        rows += _steps(PATIENT, list(patient["time_days"]), list(patient["survival"]))
        curves.append(PATIENT)
    else:
        notes.append("the run has no survival baseline, so no predicted curve")
    if cohort:
        n, events = cohort["patients"], cohort["events"]
        name = f"training cohort (Kaplan–Meier, {n} patients, {events} events)"
        c = cohort["cohort_curve"]
        rows += _steps(name, list(c["time_days"]), list(c["survival"]))
        curves.append(name)
    else:
        notes.append("the run stores no training outcomes, so no cohort curve")
    note = None if not notes else "No complete survival plot: " + "; ".join(notes) + "."
    return SurvivalChart(rows, curves, note)


def survival_spec(chart: SurvivalChart) -> dict[str, Any]:
    """Vega-Lite spec of :func:`survival_chart`'s rows: step curves, time in days."""
    return {
        "title": "Predicted survival against the training cohort's",
        "height": 360,
        "data": {"values": chart.rows},
        "mark": {"type": "line", "interpolate": "step-after"},
        "encoding": {
            "x": {"field": "days", "type": "quantitative", "title": "time (days)"},
            "y": {
                "field": "survival",
                "type": "quantitative",
                "scale": {"domain": [0, 1]},
                "title": "survival probability",
            },
            "color": {
                "field": "curve",
                "type": "nominal",
                "scale": _colour(chart.curves),
                "legend": LEGEND,
            },
            "tooltip": [
                {"field": "curve"},
                {"field": "days", "format": ".0f"},
                {"field": "survival", "format": ".3f"},
            ],
        },
    }
