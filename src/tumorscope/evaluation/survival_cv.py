"""Survival figures on a whole small cohort: out-of-fold risks of the run's survival model.

A test split of 8 patients measures no C-index, so the survival model is cross-validated
over every patient with a mask and an outcome: in each fold it is refitted, as training
fits it, on the ground-truth-mask features of the other folds, and applied to the features
of the masks the network predicts for the held-out fold. The network itself is not
refitted per fold: on the patients it trained on its masks are in-sample (the figure says
so), which matters little when its held-out Dice is high.

Beside it, on the same patients and folds: the same model on ground-truth-mask features
(the upper reference), clinical covariates alone, and the observable ceiling and oracle
of synthetic data (the true log-hazard without and with its unobserved term).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tumorscope.data.layout import discover
from tumorscope.evaluation.schema import boot_figure, undefined
from tumorscope.inference.predictor import Predictor
from tumorscope.metrics import survival as sm
from tumorscope.survival.cohort import ground_truth_rows, outcome_row
from tumorscope.survival.model import PET_CHANNEL, PatientRow, out_of_fold_risk

log = logging.getLogger(__name__)

#: The figures, in report order.
CV_KEYS = (
    "c_index",
    "c_index_gt_features",
    "c_index_clinical",
    "c_index_observable",
    "c_index_oracle",
)


def predicted_rows(
    predictor: Predictor, data: Sequence[str | Path], patients: Sequence[str]
) -> list[PatientRow]:
    """Rows of ``patients`` with the features of the masks ``predictor`` predicts."""
    index = discover(data)
    cases = {c.patient_id: c for c in index.cases}
    cols = predictor.clinical_covariates
    rows = []
    for pid in patients:
        outcome = index.outcomes[pid]
        clinical = {c: outcome.clinical.get(c) for c in cols}
        result = predictor.predict_volume(cases[pid], clinical=clinical)
        if result.risk is None or not result.risk.features:
            raise ValueError(f"{pid}: the prediction carries no tumour features")
        rows.append(outcome_row(outcome, result.risk.features, result.risk.deep_log_hazard))
    return rows


def survival_cross_validation(
    predictor: Predictor,
    data: Sequence[str | Path],
    *,
    folds: int = 5,
    repeats: int = 3,
    seed: int = 0,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Out-of-fold Harrell C-indices over every patient of ``data`` with a mask and an outcome.

    Args:
        predictor: The run (its survival model's settings are refitted per fold).
        data: Data folders.
        folds: Outer folds (stratified by event).
        repeats: Repetitions with reshuffled folds; C-indices are averaged over them.
        seed: Seed of the folds.
        n_boot: Bootstrap replicates of the CIs (over patients, on the repeat-mean risk).

    Returns:
        ``{key: figure}`` for :data:`CV_KEYS`, plus ``patients``, ``events``, ``folds``,
        ``repeats``, ``ratio_to_observable`` and ``note``.
    """
    model = predictor.survival
    if model is None:
        why = "the run has no survival model (survival.model: deep, or no outcomes)"
        return {k: undefined(why) for k in CV_KEYS}
    cfg = predictor.cfg
    index = discover(data)
    truth = ground_truth_rows(cfg, index)
    if len(truth) < 2 * folds or sum(r.event for r in truth) < folds:
        why = f"{len(truth)} patients with a mask and an outcome: too few for {folds} folds"
        return {k: undefined(why, len(truth)) for k in CV_KEYS}
    pids = [r.patient_id for r in truth]
    predicted = predicted_rows(predictor, data, pids)
    deep = {r.patient_id: r.deep_risk for r in predicted}
    truth = [
        outcome_row(index.outcomes[r.patient_id], r.features, deep[r.patient_id]) for r in truth
    ]
    sc = cfg.survival
    fit: dict[str, Any] = {
        "pet": PET_CHANNEL in cfg.data.channels,
        "clinical": model.design.clinical,
        "deep_risk": sc.deep_risk if all(v is not None for v in deep.values()) else "never",
        "l1_ratio": sc.l1_ratio,
        "inner_folds": sc.inner_folds,
        "min_gain": sc.min_gain,
        "bootstrap": 0,
    }
    split: dict[str, Any] = {"folds": folds, "repeats": repeats, "seed": seed}
    regions = list(model.regions)
    time = np.asarray([r.time for r in truth], dtype=np.float64)
    event = np.asarray([r.event for r in truth], dtype=bool)
    kw: dict[str, Any] = {"groups": None, "n_boot": n_boot, "seed": seed}

    def c_of(risks: np.ndarray) -> dict[str, Any]:
        per_repeat = [sm.harrell_c_index(r, time, event) for r in risks]
        f = boot_figure(
            [risks.mean(0), time, event], sm.harrell_c_index, reason="no comparable pair", **kw
        )
        f["value"] = float(np.mean(per_repeat))
        f["per_repeat"] = [float(c) for c in per_repeat]
        return f

    out: dict[str, Any] = {
        "c_index": c_of(out_of_fold_risk(truth, predicted, regions, **split, **fit)),
        "c_index_gt_features": c_of(out_of_fold_risk(truth, truth, regions, **split, **fit)),
    }
    if model.design.clinical:
        clinical_fit = {**fit, "use_features": False, "deep_risk": "never"}
        out["c_index_clinical"] = c_of(
            out_of_fold_risk(truth, truth, regions, **split, **clinical_fit)
        )
    else:
        out["c_index_clinical"] = undefined("the data has no clinical covariates", len(truth))
    for key, known in (
        ("c_index_observable", index.observable_risk),
        ("c_index_oracle", index.true_risk),
    ):
        if all(p in known for p in pids):
            risk = np.asarray([known[p] for p in pids], dtype=np.float64)
            out[key] = boot_figure(
                [risk, time, event], sm.harrell_c_index, reason="no comparable pair", **kw
            )
        else:
            out[key] = undefined("the data has no true-risk sidecar with that column", len(truth))
    ceiling = out["c_index_observable"].get("value")
    out["ratio_to_observable"] = (
        None if ceiling is None else float(out["c_index"]["value"]) / float(ceiling)
    )
    out.update(
        patients=len(truth),
        events=int(event.sum()),
        folds=folds,
        repeats=repeats,
        note=(
            "out-of-fold survival model; the network's masks of the patients it trained on "
            "are in-sample"
        ),
    )
    log.info(
        "survival cross-validation: C %.3f (ground-truth features %.3f, observable ceiling %s) "
        "on %d patients",
        out["c_index"]["value"],
        out["c_index_gt_features"]["value"],
        ceiling,
        len(truth),
    )
    return out
