"""benchmarks/survival_lib.py: the survival peers of one fold, and the survival curve grid."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from survival_lib import fit_kwargs, fold_peers, survival_at  # noqa: E402

from tumorscope.survival.features import feature_names  # noqa: E402
from tumorscope.survival.model import PatientRow, fit_survival_model  # noqa: E402


def _cfg(*, pet: bool) -> SimpleNamespace:
    survival = SimpleNamespace(clinical=True, l1_ratio=0.5, inner_folds=3, min_gain=0.005)
    channels = ["ct", "pet"] if pet else ["flair"]
    regions = ["GTVp"] if pet else ["WT"]
    return SimpleNamespace(
        survival=survival,
        data=SimpleNamespace(channels=channels),
        model=SimpleNamespace(regions=regions),
    )


def _table(cfg: SimpleNamespace, n: int = 60) -> dict:
    """Rows whose log-hazard is the first feature (volume) plus age."""
    rng = np.random.default_rng(0)
    names = feature_names(cfg.model.regions, pet="pet" in cfg.data.channels)
    rows = {}
    for i in range(n):
        f = {k: float(rng.normal()) for k in names}
        age = float(rng.normal(60, 10))
        lh = f[names[0]] + (age - 60) / 10
        t = float(np.ceil(rng.exponential(np.exp(-lh)) * 300))
        pid = f"p{i:02d}"
        rows[pid] = PatientRow(pid, f, {"Age": age}, None, t, bool(rng.random() < 0.8))
    return {"rows": rows, "true_risk": {}, "observable_risk": {}}


@pytest.mark.parametrize("pet", [False, True])
def test_fold_peers_apply_one_model_to_each_peer_s_features(pet: bool) -> None:
    """radiomics_cox_gt, _basicunet and tumorscope are one features model (fitted on the
    training rows' ground truth) applied to three sets of features; clinical_cox ignores
    them; the PET features are part of the design where the config has a PET channel."""
    cfg = _cfg(pet=pet)
    table = _table(cfg)
    pids = sorted(table["rows"])
    train, val = pids[:40], pids[40:]
    rng = np.random.default_rng(1)
    shifted = {
        p: {k: v + float(rng.normal(0, 0.3)) for k, v in table["rows"][p].features.items()}
        for p in val
    }
    own = {p: {k: -v for k, v in table["rows"][p].features.items()} for p in val[:10]}
    grid = np.array([100.0, 200.0, 300.0])
    out = fold_peers(table, cfg, 0, train, val, shifted, grid, own=own)
    assert set(out) == {"clinical_cox", "radiomics_cox_gt", "radiomics_cox_basicunet", "tumorscope"}
    assert set(out["tumorscope"]) == set(own) and set(out["radiomics_cox_basicunet"]) == set(val)
    rows = [table["rows"][p] for p in train]
    kw = fit_kwargs(cfg, rows)
    assert kw["pet"] is pet and kw["clinical"] == ["Age"]
    model = fit_survival_model(rows, cfg.model.regions, seed=0, **kw)
    assert ("suvmax" in model.design.features) is pet
    for name, feats in (("radiomics_cox_basicunet", shifted), ("tumorscope", own)):
        for p, (lh, surv) in out[name].items():
            expect = model.predict(feats[p], table["rows"][p].clinical).log_hazard
            assert lh == pytest.approx(expect, abs=1e-9)
            assert surv == pytest.approx(model.cox.survival(np.asarray([expect]), grid)[0].tolist())
    gt = {p: v[0] for p, v in out["radiomics_cox_gt"].items()}
    truth = {p: table["rows"][p].features[feature_names(cfg.model.regions)[0]] for p in val}
    # The features model ranks by the driving feature: concordant with it on held-out rows.
    order = sorted(val, key=gt.__getitem__)
    assert np.corrcoef([gt[p] for p in order], [truth[p] for p in order])[0, 1] > 0.3
    # Without ``own`` there is no tumorscope entry (the first repeat scores the run itself).
    assert "tumorscope" not in fold_peers(table, cfg, 0, train, val, shifted, grid)


def test_survival_at_is_a_right_continuous_step() -> None:
    got = survival_at([10.0, 20.0], [0.9, 0.5], np.array([5.0, 10.0, 15.0, 20.0, 99.0]))
    assert got == [1.0, 0.9, 0.9, 0.5, 0.5]
