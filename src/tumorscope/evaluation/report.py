"""Writing a report folder: ``metrics.json``, ``predictions.json``, ``report.md``, plots.

``predictions.json`` holds the raw per-patient / per-slice / per-image outputs that
``tumorscope compare`` pairs on (same patient ids, same slice ids). Every file is written
atomically (temp file, fsync, rename), as every other artefact, through an
:class:`~tumorscope.fileio.OutputFolder`: never over a file tumorscope did not write, and
over an earlier report only with ``overwrite``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tumorscope import DISCLAIMER
from tumorscope.evaluation import plots
from tumorscope.evaluation.collect import HeldOut, classification_units, survival_arrays
from tumorscope.evaluation.domain import domain_lines, domain_rows
from tumorscope.evaluation.schema import validate_metrics
from tumorscope.evaluation.sections import risk_groups
from tumorscope.evaluation.seen import describe
from tumorscope.evaluation.selective import unit_confidence
from tumorscope.fileio import OutputFolder
from tumorscope.metrics.calibration import apply_temperature
from tumorscope.runs.manifest import Calibration

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.json"
REPORT_FILE = "report.md"
PLOT_FILES = {
    "roc": "roc.png",
    "pr": "pr.png",
    "reliability": "reliability.png",
    "risk_coverage": "risk_coverage.png",
    "km": "km.png",
    "dice": "dice.png",
    "overlays": "overlays.png",
}
REPORT_FILES = (METRICS_FILE, PREDICTIONS_FILE, REPORT_FILE, *PLOT_FILES.values())
"""Every file :func:`write_report` writes."""


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(float(x)) else None


def predictions_dict(held: HeldOut) -> dict[str, Any]:
    """JSON-able raw outputs: ``cases``, ``classification`` units, ``survival`` patients
    and the held-out inputs' out-of-domain verdicts (``domain``)."""
    u = classification_units(held)
    s = survival_arrays(held)
    cases = [
        {
            "patient_id": pid,
            "source": held.case_source[i],
            "dice": held.dice[i],
            "dice_ungated": held.dice_ungated[i],
            "hd95_mm": held.hd95[i],
            "lesion_dice": held.lesion_dice[i],
            "lesion_hd95": held.lesion_hd95[i],
            "gated": held.gated[i],
            "dice_by_region": {r: held.dice_by_region[r][i] for r in held.regions},
        }
        for i, pid in enumerate(held.case_ids)
    ]
    units = [
        {
            "id": str(u.ids[i]),
            "patient_id": str(u.patient[i]),
            "source": str(u.source[i]),
            "kind": str(u.kind[i]),
            "logit": float(u.logit[i]),
            "probability": float(u.prob[i]),
            "label": int(u.label[i]),
            "boundary": bool(u.boundary[i]),
        }
        for i in range(u.ids.size)
    ]
    survival = [
        {
            "patient_id": str(s["patient"][i]),
            "risk": float(s["risk"][i]),
            "time": float(s["time"][i]),
            "event": bool(s["event"][i]),
            "true_risk": _num(s["true_risk"][i]),
        }
        for i in range(s["risk"].size)
    ]
    return {
        "schema_version": 1,
        "regions": held.regions,
        "temperature": held.temperature,
        "threshold": held.threshold,
        "cases": cases,
        "classification": units,
        "survival": survival,
        "domain": domain_rows(held),
    }


def load_predictions(folder: Path) -> dict[str, Any]:
    """Read a report folder's ``predictions.json`` and ``metrics.json``.

    Raises:
        ValueError: ``"PATH: fault"`` when the folder is not a report of ``tumorscope evaluate``.
    """
    pred, met = folder / PREDICTIONS_FILE, folder / METRICS_FILE
    for f in (pred, met):
        if not f.is_file():
            raise ValueError(f"{f}: missing; not a report folder of `tumorscope evaluate`")
    try:
        out: dict[str, Any] = json.loads(pred.read_text())
        out["metrics"] = json.loads(met.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{folder}: unreadable report JSON ({err})") from None
    return out


def _plots(
    folder: OutputFolder, metrics: Mapping[str, Any], held: HeldOut, calibration: Calibration
) -> dict[str, Path]:
    u = classification_units(held)
    curves = {
        str(src): (u.prob[u.source == src], u.label[u.source == src])
        for src in sorted(set(u.source.tolist()))
    }
    if len(curves) > 1:
        curves = {"all": (u.prob, u.label), **curves}
    s = survival_arrays(held)
    p = metrics["survival"]["logrank_p"]["value"]
    reliability = {
        "before temperature": (apply_temperature(u.logit, 1.0), u.label),
        f"after temperature (T={held.temperature:.2f})": (u.prob, u.label),
    }
    if len(curves) > 1:  # after temperature, per source
        reliability.update({f"{src}, after": c for src, c in curves.items() if src != "all"})
    groups = risk_groups(s["risk"], calibration)
    conf, wrong = unit_confidence(u, held.threshold)
    kinds = {"slices": u.kind == "slice", "images": u.kind == "image"}
    selective = {k: (conf[m], wrong[m]) for k, m in kinds.items()}
    for src in sorted(set(u.source.tolist())):  # a source that is not a kind on its own
        m = u.source == src
        if not any(np.array_equal(m, k) for k in kinds.values()):
            selective[str(src)] = (conf[m], wrong[m])
    draw = {
        "roc": lambda path: plots.plot_roc(curves, path),
        "pr": lambda path: plots.plot_pr(curves, path),
        "reliability": lambda path: plots.plot_reliability(reliability, path),
        "risk_coverage": lambda path: plots.plot_risk_coverage(
            selective, path, review_confidence=calibration.review_confidence
        ),
        "km": lambda path: plots.plot_km(s["time"], s["event"], groups, p, path),
        "dice": lambda path: plots.plot_dice(held.dice_by_region, path),
        "overlays": lambda path: plots.plot_overlays(held.overlays, path),
    }
    return {key: folder.write_with(PLOT_FILES[key], fn) for key, fn in draw.items()}


def format_figure(f: Mapping[str, Any]) -> str:
    """``0.812 [0.701, 0.902]`` or ``n/a (reason)``."""
    if f.get("value") is None:
        return f"n/a ({f.get('reason', 'undefined')})"
    text = f"{f['value']:.3f}"
    ci = f.get("ci95")
    if ci and None not in ci:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text + (f" {f['unit']}" if f.get("unit") else "")


# Sub-objects with a table of their own.
_OWN_TABLE = ("meta", "by_stratum")


def _rows(node: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Mapping[str, Any]]]:
    rows: list[tuple[str, Mapping[str, Any]]] = []
    for k, v in node.items():
        if isinstance(v, Mapping) and "value" in v and "ci95" in v:
            rows.append((prefix + k, v))
        elif isinstance(v, Mapping) and k not in _OWN_TABLE:
            rows.extend(_rows(v, f"{prefix}{k}."))
    return rows


def stratum_table(metrics: Mapping[str, Any]) -> list[str]:
    """``report.md`` lines of ``classification.by_stratum`` and the strata warnings
    (none when no image folder has a ``strata.csv``)."""
    by = metrics["classification"].get("by_stratum")
    if by is None:
        return []
    strata = metrics.get("meta", {}).get("strata", {})
    files = ", ".join(f"`{f}`" for f in strata.get("files", []))
    lines = [
        "### classification by stratum",
        "",
        f"Image AUC per value of each column of {files or '`strata.csv`'} and per contrast × "
        f"plane cell; offset `near` is within {strata.get('near_mm', float('nan')):g} mm of "
        "the plane's target.",
        "",
        "| stratum | value | AUC [95% CI] | n |",
        "|---|---|---|---|",
    ]
    for column, values in by.items():
        for value, figs in values.items():
            f = figs["roc_auc"]
            lines.append(f"| {column} | {value} | {format_figure(f)} | {f['n']} |")
    lines.append("")
    lines += [f"- warning: {w}" for w in strata.get("warnings", [])]
    return lines + ([""] if strata.get("warnings") else [])


def selective_table(metrics: Mapping[str, Any]) -> list[str]:
    """``report.md`` lines of the ``selective`` section (none for a report without it)."""
    sel = metrics.get("selective")
    if sel is None:
        return []
    cut = sel.get("review_confidence")
    target = sel.get("review_target_error")
    at = (
        "The run has no review cut-off (trained before `review_confidence` existed): no review rate"
        if cut is None
        else f"Review cut-off: confidence < {cut:.3f}"
        + ("" if target is None else f", chosen on validation for error ≤ {100 * target:g} %")
    )
    pct = f"{100 * sel['coverage']:g} %"
    lines = [
        "## selective prediction",
        "",
        f"Confidence = {sel['confidence_definition']}. Error at {pct} coverage: the error "
        f"rate of the {pct} most confident decisions; ratio = that over the error of all. "
        f"AURC: area under the risk–coverage curve. {at}.",
        "",
        "| decisions | n | wrong | uncertainty AUROC | error (all) | error at "
        f"{pct} | ratio | AURC | review rate | accepted error |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = (
        "uncertainty_auroc", "error_full", "error_at_90", "error_ratio_at_90", "aurc",
        "review_rate", "accepted_error",
    )  # fmt: skip
    groups = [("slices", sel["slices"]), ("images", sel["images"])]
    groups += [(f"source {k}", v) for k, v in sel["by_source"].items()]
    shown = keys if cut is not None else keys[:-2]  # the note above says why not
    for name, g in groups:
        cells = " | ".join([format_figure(g[k]) for k in shown] + ["–"] * (len(keys) - len(shown)))
        lines.append(f"| {name} | {g['n_decisions']} | {g['n_wrong']} | {cells} |")
    v = sel["volumes"]
    lines += [
        "",
        f"Volumes: AUROC of the case uncertainty ({v['uncertainty_definition']}) for Dice < "
        f"{v['dice_cut']:g} ({v['n_low_dice']} of {v['n_volumes']} volumes): "
        f"{format_figure(v['low_dice_auroc'])}.",
        "",
    ]
    return lines


def _shown(x: Any, spec: str) -> str:
    """``x`` formatted, or ``n/a`` (a value the fit could not estimate, stored as null)."""
    return "n/a" if x is None or not math.isfinite(float(x)) else format(float(x), spec)


def survival_model_table(calibration: Calibration | None) -> list[str]:
    """The survival model's coefficients with their bootstrap CIs (a clinician reads these
    first); nothing for a run whose risk is the survival head's."""
    raw = None if calibration is None else calibration.survival_model
    if not raw:
        return []
    cox = raw["cox"]
    inner = raw.get("inner_c_index") or {}
    lines = [
        "### survival model",
        "",
        f"Penalised Cox (elastic net, l1_ratio {_shown(cox['l1_ratio'], 'g')}, penalty "
        f"{_shown(cox['alpha'], '.4g')} chosen by inner cross-validation, inner C "
        f"{_shown(cox['inner_c_index'], '.3f')}), fitted on the {raw.get('fitted_on')} "
        f"({raw.get('events')} events); the deep risk is "
        f"{'a covariate' if raw['deep_risk'] else 'not used'} (inner C without / with it: "
        f"{_shown(inner.get('without_deep'), '.3f')} / {_shown(inner.get('with_deep'), '.3f')}).",
        "Coefficients are log hazard ratios per training standard deviation.",
        "",
        "| covariate | coefficient [95% CI] | hazard ratio per SD |",
        "|---|---|---|",
    ]
    for name, b, ci in zip(cox["columns"], cox["coef"], cox["coef_ci95"], strict=True):
        lo, hi = (None, None) if ci is None else ci
        lines.append(
            f"| {name} | {_shown(b, '+.3f')} [{_shown(lo, '+.3f')}, {_shown(hi, '+.3f')}] | "
            f"{_shown(math.exp(b), '.2f')} |"
        )
    return [*lines, ""]


def markdown_report(
    metrics: Mapping[str, Any],
    held: HeldOut,
    plot_files: Mapping[str, Path],
    calibration: Calibration | None = None,
) -> str:
    """``report.md``: settings, one table per section, and the plots.

    Args:
        metrics: The ``metrics.json`` content (with ``meta``).
        held: The collected outputs the figures come from.
        plot_files: Plot name → PNG path (linked by file name).
        calibration: The run's calibration (its survival model's coefficients).
    """
    m = metrics
    meta = m.get("meta", {})
    lines = [
        "# tumorscope evaluation report",
        "",
        f"- run: `{meta.get('run')}`"
        + (f" (stage `{meta['stage']}`)" if meta.get("stage") else ""),
        f"- data: {', '.join(f'`{d}`' for d in meta.get('data', []))}",
        f"- split: `{meta.get('split')}` of the run's units, plus every unit it never saw",
        f"- held out: {describe(meta.get('held_out', {}))}",
        f"- temperature {meta.get('temperature', float('nan')):.3f}, decision threshold "
        f"{meta.get('threshold', float('nan')):.3f}, gate {meta.get('gate_threshold', float('nan')):.2f}",
        f"- volumes {len(held.case_ids)}, survival patients {len(held.risk)} "
        f"({sum(e for _, e in held.outcomes.values())} events), "
        f"slices {len(held.slice_prob)}, images {len(held.image_prob)}",
        "- 95% CIs: percentile bootstrap over patients "
        f"({meta.get('n_boot')} replicates); `n` = patients. Small test sets give wide CIs.",
        "",
    ]
    for section in ("segmentation", "classification", "survival", "calibration"):
        lines += [f"## {section}", "", "| figure | value [95% CI] | n |", "|---|---|---|"]
        for key, f in _rows(m[section]):
            lines.append(f"| {key} | {format_figure(f)} | {f['n']} |")
        lines.append("")
        if section == "classification":
            lines += stratum_table(m)
        if section == "survival":
            lines += survival_model_table(calibration)
    lines += selective_table(m)
    lines += domain_lines(m)
    lines += ["## plots", ""]
    for name, path in plot_files.items():
        lines += [f"### {name}", "", f"![{name}]({path.name})", ""]
    lines += [f"_{DISCLAIMER}_", ""]
    return "\n".join(lines)


def write_report(
    out: Path,
    metrics: Mapping[str, Any],
    held: HeldOut,
    calibration: Calibration,
    *,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write every file of the report folder; returns plot name → path.

    ``metrics.json`` is validated against the schema before it is written, and every file
    name (:data:`REPORT_FILES`) is checked before the first is written.

    Args:
        out: Report folder (created).
        metrics: The ``metrics.json`` content (with ``meta``).
        held: The collected outputs (``predictions.json``, plots).
        calibration: The run's calibration (risk groups of the KM plot).
        overwrite: Replace the files of an earlier report in ``out`` (never other files).

    Raises:
        OutputExistsError: A file would replace one it may not; nothing is written then.
    """
    folder = OutputFolder(out, overwrite=overwrite)
    folder.check_all(REPORT_FILES)
    validate_metrics(metrics)
    folder.write_json(METRICS_FILE, metrics)
    # compact: per-slice rows make this file large
    folder.write_bytes(PREDICTIONS_FILE, (json.dumps(predictions_dict(held)) + "\n").encode())
    plot_files = _plots(folder, metrics, held, calibration)
    folder.write_bytes(
        REPORT_FILE, markdown_report(metrics, held, plot_files, calibration).encode()
    )
    log.info("report written to %s", out)
    return plot_files


__all__ = [
    "METRICS_FILE",
    "PLOT_FILES",
    "PREDICTIONS_FILE",
    "REPORT_FILE",
    "REPORT_FILES",
    "format_figure",
    "load_predictions",
    "markdown_report",
    "predictions_dict",
    "selective_table",
    "stratum_table",
    "write_report",
]
