"""The sections of ``metrics.json``: every figure computed from collected held-out outputs.

:func:`compute_metrics` turns a :class:`~tumorscope.evaluation.collect.HeldOut` and the
run's calibration into the nested ``metrics.json`` content (without ``meta``): one section
each for segmentation, classification, survival, calibration, selective prediction
(:mod:`~tumorscope.evaluation.selective`) and the out-of-domain flags of the held-out
inputs (:mod:`~tumorscope.evaluation.domain`). Every figure is
``{"value", "ci95", "n", "unit"}`` (``n`` = patients resampled by the bootstrap) and a figure
undefined on the data is ``{"value": null, ..., "reason": ...}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tumorscope.evaluation.collect import HeldOut, Units, classification_units, survival_arrays
from tumorscope.evaluation.domain import domain_section
from tumorscope.evaluation.schema import boot_figure, figure, undefined
from tumorscope.evaluation.selective import selective_section
from tumorscope.evaluation.strata import CELL, STRATA
from tumorscope.metrics import survival as sm
from tumorscope.metrics.calibration import apply_temperature, brier, ece, reliability_curve
from tumorscope.metrics.classification import pr_auc, roc_auc, sensitivity, specificity
from tumorscope.runs.manifest import Calibration

SCHEMA_VERSION = 1


def segmentation_section(held: HeldOut, n_boot: int, seed: int) -> dict[str, Any]:
    """``dice``, ``dice_ungated``, ``hd95_mm``, the BraTS 2023 lesion-wise ``lesion_dice`` and
    ``lesion_hd95`` (mm), the extras, and ``by_region.<name>.{dice, hd95_mm,
    abs_volume_error_ml, lesion_dice, lesion_hd95}``; the top-level figures are per-patient
    means over the regions."""
    reason = "no evaluated case has a ground-truth mask"
    kw: dict[str, Any] = {"groups": None, "n_boot": n_boot, "seed": seed, "reason": reason}
    out: dict[str, Any] = {
        "dice": boot_figure([np.asarray(held.dice)], None, **kw),
        "dice_ungated": boot_figure([np.asarray(held.dice_ungated)], None, **kw),
        "hd95_mm": boot_figure([np.asarray(held.hd95)], None, unit="mm", **kw),
        "lesion_dice": boot_figure([np.asarray(held.lesion_dice)], None, **kw),
        "lesion_hd95": boot_figure([np.asarray(held.lesion_hd95)], None, unit="mm", **kw),
        "iou": boot_figure([np.asarray(held.case_extra.get("iou", []))], None, **kw),
        "boundary_f1_2mm": boot_figure(
            [np.asarray(held.case_extra.get("boundary_f1", []))], None, **kw
        ),
        "abs_volume_error_ml": boot_figure(
            [np.asarray(held.case_extra.get("abs_volume_error", []))], None, unit="mL", **kw
        ),
        "gated_fraction": boot_figure([np.asarray(held.gated, dtype=float)], None, **kw),
        "by_region": {},
    }
    for r in held.regions:
        out["by_region"][r] = {
            "dice": boot_figure([np.asarray(held.dice_by_region.get(r, []))], None, **kw),
            "hd95_mm": boot_figure(
                [np.asarray(held.hd95_by_region.get(r, []))], None, unit="mm", **kw
            ),
            "lesion_dice": boot_figure(
                [np.asarray(held.lesion_dice_by_region.get(r, []))], None, **kw
            ),
            "lesion_hd95": boot_figure(
                [np.asarray(held.lesion_hd95_by_region.get(r, []))], None, unit="mm", **kw
            ),
            "abs_volume_error_ml": boot_figure(
                [np.asarray(held.volume_error_by_region.get(r, []))], None, unit="mL", **kw
            ),
        }
    return out


BINARY_KEYS = ("roc_auc", "pr_auc", "sensitivity", "specificity")


def _binary_figures(
    u: Units,
    sel: np.ndarray,
    threshold: float,
    n_boot: int,
    seed: int,
    keys: tuple[str, ...] = BINARY_KEYS,
) -> dict[str, Any]:
    """Figures ``keys`` (of :data:`BINARY_KEYS`) on the units selected by ``sel`` ``(N,)``."""
    prob, label, groups = u.prob[sel], u.label[sel], u.patient[sel]
    n_pos, n = int(label.sum()), int(label.size)
    if n == 0:
        return {k: undefined("no classification sample in the evaluated data") for k in keys}
    stats = {
        "roc_auc": (roc_auc, f"labels hold one class only ({n_pos} positive of {n})"),
        "pr_auc": (pr_auc, f"no positive sample (of {n})"),
        "sensitivity": (
            lambda s, y: sensitivity(s, y, threshold),
            f"no positive sample (of {n})",
        ),
        "specificity": (
            lambda s, y: specificity(s, y, threshold),
            f"no negative sample (of {n})",
        ),
    }
    return {
        k: boot_figure(
            [prob, label], stats[k][0], groups=groups, n_boot=n_boot, seed=seed, reason=stats[k][1]
        )
        for k in keys
    }


def stratum_section(
    u: Units, strata: list[dict[str, str] | None], threshold: float, n_boot: int, seed: int
) -> dict[str, Any]:
    """``by_stratum.<column>.<value>.roc_auc`` per value of each ``strata.csv`` column, and
    per contrast × plane cell (``contrast_x_plane``, values ``t1ce/axial``).

    Args:
        u: The classification units.
        strata: Per unit ``(N,)``, its strata, or None (slices, images without a row).
        threshold: The run's decision threshold.
        n_boot: Bootstrap replicates.
        seed: Bootstrap seed.
    """
    has = np.asarray([s is not None for s in strata], dtype=bool)
    rows = [s or {} for s in strata]
    columns: dict[str, np.ndarray] = {
        col: np.asarray([r.get(col, "") for r in rows], dtype=object) for col in STRATA
    }
    columns[CELL] = np.asarray(
        [f"{r.get('contrast', '')}/{r.get('plane', '')}" for r in rows], dtype=object
    )
    auc = ("roc_auc",)
    return {
        col: {
            str(v): _binary_figures(u, has & (values == v), threshold, n_boot, seed, auc)
            for v in sorted(set(values[has].tolist()))
        }
        for col, values in columns.items()
    }


def classification_section(held: HeldOut, n_boot: int, seed: int) -> dict[str, Any]:
    """Pooled slices + images, then per kind, boundary-free slices, ``by_source``, and
    ``by_stratum`` where an image folder has a ``strata.csv``.

    Probabilities are the calibrated ones users get; sensitivity and specificity are at the
    run's decision threshold.
    """
    u = classification_units(held)
    everything = np.ones(u.ids.size, dtype=bool)
    out = _binary_figures(u, everything, held.threshold, n_boot, seed)
    slices = u.kind == "slice"
    images = u.kind == "image"
    auc = ("roc_auc",)
    t = held.threshold
    out["slice_roc_auc"] = _binary_figures(u, slices, t, n_boot, seed, auc)["roc_auc"]
    out["slice_roc_auc_boundary_free"] = _binary_figures(
        u, slices & ~u.boundary, t, n_boot, seed, auc
    )["roc_auc"]
    out["image_roc_auc"] = _binary_figures(u, images, t, n_boot, seed, auc)["roc_auc"]
    out["by_source"] = {
        str(src): _binary_figures(u, u.source == src, held.threshold, n_boot, seed)
        for src in sorted(set(u.source.tolist()))
    }
    image_strata = list(held.image_strata)
    if len(image_strata) == len(held.image_ids) and any(s is not None for s in image_strata):
        strata = [None] * int(slices.sum()) + image_strata
        out["by_stratum"] = stratum_section(u, strata, held.threshold, n_boot, seed)
    return out


#: ECE binning of every calibration figure: equal-mass bins, this many.
ECE_BINS = 10
ECE_STRATEGY = "quantile"


def _ece(prob: np.ndarray, label: np.ndarray) -> float:
    return ece(prob, label, ECE_BINS, ECE_STRATEGY)


def reliability_bins(prob: np.ndarray, label: np.ndarray) -> dict[str, list[Any]]:
    """The reliability diagram's bins at the ECE's binning (:data:`ECE_BINS` equal-mass
    bins), empty bins left out: ``predicted`` (mean predicted tumour probability),
    ``observed`` (fraction of tumour labels) and ``count`` (samples) per bin."""
    c = reliability_curve(prob, label, ECE_BINS, ECE_STRATEGY)
    ok = c["count"] > 0
    return {
        "predicted": c["confidence"][ok].tolist(),
        "observed": c["accuracy"][ok].tolist(),
        "count": [int(n) for n in c["count"][ok]],
    }


def _calibration_figures(
    logit: np.ndarray, label: np.ndarray, patient: np.ndarray, t: float, n_boot: int, seed: int
) -> dict[str, Any]:
    reason = "no classification sample in the evaluated data"
    kw: dict[str, Any] = {"groups": patient, "n_boot": n_boot, "seed": seed, "reason": reason}
    raw, scaled = apply_temperature(logit, 1.0), apply_temperature(logit, t)
    return {
        "ece": boot_figure([raw, label], _ece, **kw),
        "ece_after_temperature": boot_figure([scaled, label], _ece, **kw),
        "brier": boot_figure([raw, label], brier, **kw),
        "brier_after_temperature": boot_figure([scaled, label], brier, **kw),
        "reliability": {
            "before_temperature": reliability_bins(raw, label),
            "after_temperature": reliability_bins(scaled, label),
        },
    }


def calibration_section(held: HeldOut, n_boot: int, seed: int) -> dict[str, Any]:
    """ECE (:data:`ECE_BINS` equal-mass bins), Brier score and the reliability diagram's
    bins of ``σ(logit)`` (before temperature) and ``σ(logit/T)`` (the run's temperature),
    over all units and per source (``brats``, ``kaggle``... as ``classification.by_source``
    names them)."""
    u = classification_units(held)
    t = held.temperature
    out = _calibration_figures(u.logit, u.label, u.patient, t, n_boot, seed)
    out["by_source"] = {
        str(src): _calibration_figures(u.logit[m], u.label[m], u.patient[m], t, n_boot, seed)
        for src in sorted(set(u.source.tolist()))
        for m in [u.source == src]
    }
    out["binning"] = {"strategy": "equal-mass", "bins": ECE_BINS}
    return out


SURVIVAL_KEYS = ("c_index", "c_index_uno", "td_auc", "ibs", "c_index_oracle", "logrank_p")


def survival_horizon(time: np.ndarray, train_time: np.ndarray, tau: float | None) -> float:
    """End of the window where IPCW weights exist: ``min(max(time), max(train_time), tau)``,
    kept just under the last training time (the censoring KM ends there)."""
    hi = min(float(time.max()), float(np.nextafter(train_time.max(), -np.inf)))
    return hi if tau is None else min(hi, float(tau))


def survival_grid(time: np.ndarray, event: np.ndarray, horizon: float) -> np.ndarray:
    """Evaluation time points ``(T,)`` in ``[first event time, horizon)`` (before the first
    event AUC(t) has no case): deciles 1–9 of the evaluated follow-up, or, when fewer than
    two fall in the window (small test sets), five equally spaced points across it."""
    if not event.any() or time[event].min() >= horizon:
        return np.zeros(0)
    start = float(time[event].min())
    grid = np.unique(np.quantile(time, np.linspace(0.1, 0.9, 9)))
    grid = grid[(grid >= start) & (grid < horizon)]
    if grid.size < 2:
        grid = np.linspace(start, horizon, 5, endpoint=False)
    return np.asarray(grid, dtype=np.float64)


def censor_at(time: np.ndarray, event: np.ndarray, horizon: float) -> tuple[np.ndarray, np.ndarray]:
    """Administrative censoring at ``horizon``: follow-up beyond it becomes censored there.

    Brier scores and AUC(t) at times before ``horizon`` do not change, and scikit-survival
    no longer needs censoring weights past the training follow-up.
    """
    late = time > horizon
    return np.where(late, horizon, time), np.where(late, False, event)


def survival_section(
    held: HeldOut, calibration: Calibration | Mapping[str, Any], n_boot: int, seed: int
) -> dict[str, Any]:
    """Harrell's and Uno's C, td-AUC, IBS, oracle C-index and the KM log-rank p-value."""
    cal = Calibration.coerce(calibration)
    s = survival_arrays(held)
    risk, time, event = s["risk"], s["time"], s["event"]
    n = int(risk.size)
    if n == 0:
        why = "no evaluated patient has both a survival prediction and an outcome"
        return {k: undefined(why) for k in SURVIVAL_KEYS}
    no_events = f"no event among the {n} evaluated patients" if not event.any() else None
    kw: dict[str, Any] = {"groups": None, "n_boot": n_boot, "seed": seed}
    out: dict[str, Any] = {
        "c_index": boot_figure(
            [risk, time, event], sm.harrell_c_index, reason=no_events or "no comparable pair", **kw
        )
    }
    train = cal.train_survival or None
    tau = cal.tau
    if train is None:
        why = "the run's manifest has no training survival data (needed for IPCW)"
        out.update({k: undefined(why, n) for k in ("c_index_uno", "td_auc", "ibs")})
    else:
        tt = np.asarray(train["time"], dtype=np.float64)
        te = np.asarray(train["event"], dtype=bool)
        out["c_index_uno"] = boot_figure(
            [risk, time, event],
            lambda r, t, e: sm.uno_c_index(r, t, e, tt, te, tau),
            reason=no_events or "no comparable pair before tau",
            **kw,
        )
        horizon = survival_horizon(time, tt, tau)
        grid = survival_grid(time, event, horizon)
        few = f"fewer than two time points inside the follow-up (grid {grid.tolist()})"
        if grid.size < 1:
            out["td_auc"] = undefined(f"no time point inside the follow-up (<{tau})", n)
        else:
            out["td_auc"] = boot_figure(
                [risk, time, event],
                lambda r, t, e: sm.time_dependent_auc(r, *censor_at(t, e, horizon), tt, te, grid)[
                    1
                ],
                reason=no_events or "no time point with both cases and controls",
                **kw,
            )
        base = cal.baseline_hazard
        if not base:
            out["ibs"] = undefined("the model has no Breslow baseline hazard in its manifest", n)
        elif grid.size < 2:
            out["ibs"] = undefined(few, n)
        else:
            baseline = (np.asarray(base["times"]), np.asarray(base["cumulative"]))
            out["ibs"] = boot_figure(
                [risk, time, event],
                lambda r, t, e: sm.integrated_brier_score(
                    sm.survival_curves(r, baseline, grid), *censor_at(t, e, horizon), tt, te, grid
                ),
                reason="IPCW weights undefined on this data",
                **kw,
            )
    known = np.isfinite(s["true_risk"])
    if known.any():
        out["c_index_oracle"] = boot_figure(
            [s["true_risk"][known], time[known], event[known]],
            sm.harrell_c_index,
            reason=no_events or "no comparable pair",
            **kw,
        )
    else:
        out["c_index_oracle"] = undefined("the data has no true-risk sidecar", n)
    groups = risk_groups(risk, cal)
    _, p = sm.logrank(time, event, groups)
    why = no_events or "all patients fall in one predicted risk group"
    out["logrank_p"] = figure(p, None, n, "", why)
    return out


def risk_groups(risk: np.ndarray, calibration: Calibration) -> np.ndarray:
    """``"high"``/``"low"`` per patient: above the training cohort's median risk (the test
    median when the run has no risk quantiles), so groups are fixed before seeing outcomes."""
    q = calibration.risk_quantiles
    cut = float(np.interp(0.5, q["q"], q["value"])) if q else float(np.median(risk))
    return np.where(risk > cut, "high", "low").astype(object)


def compute_metrics(
    held: HeldOut,
    calibration: Calibration | Mapping[str, Any],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The nested ``metrics.json`` content (without ``meta``) from collected outputs."""
    return {
        "schema_version": SCHEMA_VERSION,
        "segmentation": segmentation_section(held, n_boot, seed),
        "classification": classification_section(held, n_boot, seed),
        "survival": survival_section(held, calibration, n_boot, seed),
        "calibration": calibration_section(held, n_boot, seed),
        "selective": selective_section(held, calibration, n_boot, seed),
        "domain": domain_section(held, n_boot, seed),
    }
