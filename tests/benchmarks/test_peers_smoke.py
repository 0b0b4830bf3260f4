"""Pure helpers of benchmarks/peers_lib.py: budgets, seed-wise metrics, the survival summary."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from peers_lib import (  # noqa: E402
    Budget,
    compare,
    curve_steps,
    per_seed_mean,
    recipe_overrides,
)

BUDGET = Budget(
    patients=10,
    kaggle=4,
    kaggle_test=4,
    shape=(16, 16, 16),
    image_size=32,
    step_scale=0.1,
    seeds=1,
    folds=3,
    repeats=2,
    n_boot=50,
    curve_patients=2,
    probe_steps=4,
)


def test_recipe_overrides_load_and_share_one_step_budget() -> None:
    from tumorscope.config import load_config

    demo = load_config(
        ROOT / "configs" / "demo.yaml",
        recipe_overrides("demo", BUDGET, seed=2, fold=1, split_seed=4, snapshots=[20, 40]),
    )
    image_steps = sum(s.max_steps for s in demo.stages if s.name != "surv_head")
    assert image_steps == BUDGET.image_steps == 360  # demo.yaml: one 3600-step schedule
    assert BUDGET.total_steps == image_steps + 15
    assert (demo.runtime.seed, demo.data.fold, demo.data.n_folds) == (2, 1, 3)
    assert demo.data.split_seed == 4 and demo.runtime.snapshot_steps == (20, 40)
    # Warm-up is the same fraction of every stage's steps; the full-batch refit has none.
    warm = {s.name: s.warmup for s in demo.stages}
    assert warm == {"joint": 18, "surv_head": 0}  # round(0.05 x 360)
    assert all(s.eval_every == s.max_steps for s in demo.stages)
    joint = load_config(ROOT / "configs" / "demo.yaml").stages[0]
    for config in ("seg_only", "cls_only", "surv_only"):
        # Unscaled, the image single-task recipes see the demo's slices in their own
        # batches; survival keeps batches of 16 (a Cox batch needs risk sets), 900 steps.
        first = load_config(ROOT / "configs" / f"{config}.yaml").stages[0]
        seen = first.max_steps * first.batch_size
        assert seen == (joint.max_steps * joint.batch_size if config != "surv_only" else 14400)
        cfg = load_config(
            ROOT / "configs" / f"{config}.yaml", recipe_overrides(config, BUDGET, seed=0, fold=0)
        )
        assert cfg.stages[0].max_steps == BUDGET.image_steps
        assert cfg.data.image_size == 32
        planned = load_config(
            ROOT / "configs" / f"{config}.yaml",
            recipe_overrides(config, BUDGET, seed=0, fold=0, steps=140),
        )
        assert planned.stages[0].max_steps == planned.stages[0].eval_every == 140
        assert planned.stages[0].warmup == 7


def test_curve_steps_are_fractions_of_the_models_steps() -> None:
    assert curve_steps(80) == {0.25: 20, 0.5: 40}
    assert curve_steps(3) == {0.25: 1, 0.5: 2}


def test_per_seed_mean_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    score, label = rng.normal(size=40), np.tile([0, 1], 20)
    seed = np.repeat([0, 1], 20)
    expected = np.mean([roc_auc_score(label[seed == s], score[seed == s]) for s in (0, 1)])

    def auc(s: np.ndarray, y: np.ndarray) -> float:
        return float(roc_auc_score(y, s))

    assert per_seed_mean(auc)(score, label, seed) == pytest.approx(expected)


def test_compare_identical_models_is_a_tie() -> None:
    rng = np.random.default_rng(1)
    a = rng.uniform(size=30)
    seed = np.zeros(30, dtype=int)
    m = per_seed_mean(np.mean)
    c = compare(m, a, a.copy(), [seed], np.arange(30), n_boot=50, margin=0.02)
    assert c["delta"] == 0.0 and c["delta_ci95"] == [0.0, 0.0]
    assert c["ratio"] == pytest.approx(1.0)
    assert c["verdict"] == "non_inferior" and c["non_inferior"]
    better = compare(m, a, a - 0.1, [seed], np.arange(30), n_boot=50, margin=0.02)
    assert better["delta"] == pytest.approx(0.1) and better["a_better"]
    assert better["verdict"] == "better"
    worse = compare(m, a - 0.1, a, [seed], np.arange(30), n_boot=50, margin=0.02)
    assert worse["verdict"] == "worse" and not worse["non_inferior"]


def test_survival_only_summary_and_state_round_trip(tmp_path: Path) -> None:
    """A survival-only run: C-indices match lifelines, the IBS scikit-survival's, image goals
    are None, and the saved state re-summarises to the same result (``--from-state``)."""
    from lifelines.utils import concordance_index
    from peers import Bench, summarise
    from sksurv.metrics import integrated_brier_score
    from sksurv.util import Surv

    rng = np.random.default_rng(3)
    n = 60
    pids = [f"p{i:02d}" for i in range(n)]
    risk = rng.normal(size=n)
    time = np.ceil(rng.exponential(np.exp(-risk)) * 300)
    event = rng.random(n) < 0.7
    noisy = risk + rng.normal(size=n)
    bench = Bench(BUDGET, tmp_path)
    bench.table = {
        p: {"time": float(t), "event": float(e)} for p, t, e in zip(pids, time, event, strict=True)
    }
    bench.grid = np.quantile(time, [0.1, 0.3, 0.5, 0.7]).tolist()
    grid = np.asarray(bench.grid)

    def curves(r: np.ndarray) -> np.ndarray:  # an exponential model: S(t) = exp(-t e^r / 300)
        return np.exp(-np.outer(np.exp(r), grid) / 300.0)

    # Two repeats of the same out-of-fold risks: every figure is their mean.
    peers_in = {"tumorscope": noisy, "clinical_cox": -risk, "oracle": risk}
    for name, values in peers_in.items():
        surv = curves(values) if name != "oracle" else [[]] * n
        for repeat in (0, 1):
            for p, v, s in zip(pids, values.tolist(), surv, strict=True):
                bench.put("oof", name, (repeat, p), v, list(s))
    bench.train_s, bench.train_cpu = {"tumorscope": [10.0, 12.0]}, {"tumorscope": [20.0, 22.0]}
    bench.folds = [(0, pids[:30], pids[30:]), (0, pids[30:], pids[:30])]
    result = summarise(bench)
    peers = result["peers"]
    for name, r in peers_in.items():
        expected = concordance_index(time, -r, event)  # lifelines: higher score, longer life
        assert peers[name]["c_index_harrell"]["value"] == pytest.approx(expected, abs=1e-4)
    y = Surv.from_arrays(event, time)
    ibs = integrated_brier_score(y, y, curves(noisy), grid)
    assert peers["tumorscope"]["ibs"]["value"] == pytest.approx(ibs, abs=1e-4)
    assert "ibs" not in peers["oracle"]  # no survival curves
    assert len(peers["tumorscope"]["td_auc"]) == 3
    assert (
        peers["clinical_cox"]["c_index_harrell"]["value"]
        < 0.5
        < peers["oracle"]["c_index_harrell"]["value"]
    )
    assert peers["tumorscope"]["train_seconds"] == 11.0
    assert "dice" not in peers["tumorscope"] and result["survival_patients"] == n
    assert result["survival_rows"] == 2 * n
    by = {c["peer"]: c for c in result["comparisons"]}
    assert by["clinical_cox"]["verdict"] == "better"
    assert by["oracle"]["verdict"] in ("worse", "undecided")
    assert result["goals"]["c_index_above_clinical_cox"] is True
    assert result["goals"]["dice_ge_monai_basicunet"] is None
    bench.save_state(tmp_path / "state.json")
    again = Bench(BUDGET, tmp_path)
    again.load_state(tmp_path / "state.json")
    assert summarise(again) == result
