"""The survival peers of ``benchmarks/peers.py --survival-only``.

Every peer is scored out of fold on the same (repeat, fold) splits as tumorscope's runs:

- ``tumorscope``: the product, the run's survival model on the features of its own
  predicted masks (clinical covariates and, where inner CV chose it, the deep risk);
- ``tumorscope_deep_only``: the same run's survival head alone (today's deep risk);
- ``clinical_cox``: the penalised Cox on the clinical covariates alone;
- ``radiomics_cox_basicunet``: the penalised Cox fitted on the training folds'
  ground-truth-mask features and applied to features of the masks a MONAI BasicUNet, trained
  on the same folds for the same CPU seconds, predicts;
- ``radiomics_cox_gt``: the same model applied to ground-truth-mask features (the upper
  reference: perfect segmentation);
- ``observable_ceiling``: the generator's true coefficients on its exact features (the
  true log-hazard without the unobserved term);
- ``oracle``: the true log-hazard.

Every fitted peer goes through :func:`tumorscope.survival.model.fit_survival_model`, the
code training uses, so the only difference between them is the covariates they see.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SURVIVAL_LABELS = {
    "tumorscope": "tumorscope (features of its masks + clinical, penalised Cox)",
    "tumorscope_deep_only": "tumorscope survival head alone (deep risk)",
    "clinical_cox": "clinical covariates, penalised Cox",
    "radiomics_cox_basicunet": "features of BasicUNet's masks + clinical, penalised Cox",
    "radiomics_cox_gt": "features of ground-truth masks + clinical (upper reference)",
    "observable_ceiling": "observable ceiling (true coefficients, exact features)",
    "oracle": "oracle (true hazard)",
}
#: Peers tumorscope is compared with, and the goal of each comparison.
SURVIVAL_COMPARISONS = (
    "clinical_cox",
    "radiomics_cox_basicunet",
    "radiomics_cox_gt",
    "tumorscope_deep_only",
    "observable_ceiling",
    "oracle",
)
#: Survival-curve grid: these quantiles of all follow-up times (IBS, td-AUC horizons).
GRID_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
#: Time-dependent AUC horizons, as quantiles of all follow-up times.
HORIZON_QUANTILES = (0.25, 0.5, 0.75)


def ground_truth_table(cfg: Any, data: Sequence[Path]) -> dict[str, Any]:
    """Every patient's row from its ground-truth masks, plus the true and observable risks."""
    from tumorscope.data.layout import discover
    from tumorscope.survival.cohort import ground_truth_rows

    index = discover(list(data))
    rows = {r.patient_id: r for r in ground_truth_rows(cfg, index)}
    return {
        "rows": rows,
        "true_risk": dict(index.true_risk),
        "observable_risk": dict(index.observable_risk),
    }


def predicted_features(
    pred: Any, cfg: Any, data: Sequence[Path], patients: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Tumour features of the masks ``pred`` predicts (gated and post-processed), with the
    PET inside them where the config has a PET channel (as prediction measures them)."""
    from tumorscope.data.layout import discover, load_case
    from tumorscope.survival.cohort import case_features
    from tumorscope.survival.model import PET_CHANNEL

    cases = {c.patient_id: c for c in discover(list(data)).cases}
    pet = PET_CHANNEL in cfg.data.channels
    out = {}
    for pid in patients:
        result = pred.predict_volume(cases[pid])
        suv = None
        if pet:
            loaded = load_case(cases[pid], [PET_CHANNEL], missing=cfg.data.missing_channels)
            suv = loaded.image[0]
        out[pid] = case_features(cfg, list(result.masks), result.meta.spacing[:3], suv)
    return out


def fit_kwargs(cfg: Any, rows: Sequence[Any]) -> dict[str, Any]:
    """The run config's survival settings as :func:`fit_survival_model` arguments."""
    from tumorscope.survival.model import PET_CHANNEL

    sc = cfg.survival
    return {
        "pet": PET_CHANNEL in cfg.data.channels,
        "clinical": sorted({c for r in rows for c in r.clinical}) if sc.clinical else [],
        "deep_risk": "never",
        "l1_ratio": sc.l1_ratio,
        "inner_folds": sc.inner_folds,
        "min_gain": sc.min_gain,
        "bootstrap": 0,
    }


def grid_of(times: np.ndarray) -> np.ndarray:
    return np.unique(np.quantile(times, GRID_QUANTILES))


def fold_peers(
    table: Mapping[str, Any],
    cfg: Any,
    repeat: int,
    train: Sequence[str],
    val: Sequence[str],
    unet: Mapping[str, dict[str, float]],
    grid: np.ndarray,
    *,
    own: Mapping[str, dict[str, float]] | None = None,
) -> dict[str, dict[str, tuple[float, list[float]]]]:
    """``{peer: {pid: (log_hazard, survival at grid)}}`` of one fold's validation patients;
    with ``own`` (tumorscope's predicted-mask features) also ``tumorscope``: the features
    model applied to them, as a run fitted on ``train`` would apply its own."""
    from dataclasses import replace

    from tumorscope.survival.model import fit_survival_model

    rows = table["rows"]
    fit_rows = [rows[p] for p in train if p in rows]
    kw = fit_kwargs(cfg, fit_rows)
    regions = list(cfg.model.regions)
    models = {
        "clinical_cox": fit_survival_model(
            fit_rows, regions, use_features=False, seed=repeat, **kw
        ),
        "features": fit_survival_model(fit_rows, regions, seed=repeat, **kw),
    }
    out: dict[str, dict[str, tuple[float, list[float]]]] = {
        "clinical_cox": {},
        "radiomics_cox_gt": {},
        "radiomics_cox_basicunet": {},
        **({"tumorscope": {}} if own is not None else {}),
    }

    def score(model: Any, row: Any) -> tuple[float, list[float]]:
        risk = model.predict(row.features, row.clinical)
        lh = np.asarray([risk.log_hazard])
        return risk.log_hazard, model.cox.survival(lh, grid)[0].tolist()

    for p in val:
        if p not in rows:
            continue
        out["clinical_cox"][p] = score(models["clinical_cox"], rows[p])
        out["radiomics_cox_gt"][p] = score(models["features"], rows[p])
        if p in unet:
            row = replace(rows[p], features=unet[p])
            out["radiomics_cox_basicunet"][p] = score(models["features"], row)
        if own is not None and p in own:
            out["tumorscope"][p] = score(models["features"], replace(rows[p], features=own[p]))
    return out


def survival_at(times: Sequence[float], surv: Sequence[float], grid: np.ndarray) -> list[float]:
    """A right-continuous step curve ``S`` given at ``times`` (1 before the first), at ``grid``."""
    t = np.asarray(times, dtype=np.float64)
    s = np.asarray(surv, dtype=np.float64)
    idx = np.searchsorted(t, grid, side="right") - 1
    return np.where(idx >= 0, s[np.clip(idx, 0, None)], 1.0).tolist()
