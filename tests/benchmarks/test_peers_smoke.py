"""Pure helpers of benchmarks/peers_lib.py: radiomics features, budgets, seed-wise metrics."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from peers_lib import (  # noqa: E402
    Budget,
    compare,
    per_seed_mean,
    radiomics_features,
    recipe_overrides,
)

BUDGET = Budget(
    patients=10,
    kaggle=4,
    shape=(16, 16, 16),
    image_size=32,
    step_scale=0.1,
    seeds=1,
    folds=3,
    n_boot=50,
)


def test_radiomics_features_hand_computed(tmp_path: Path) -> None:
    seg = np.zeros((7, 9, 5), dtype=np.int16)
    seg[1:3, 1:4, 1:3] = 2  # 12 oedema voxels
    seg[1:3, 1:2, 1:3] = 4  # 4 of them enhancing
    seg[5, 5, 4] = 1  # one necrotic voxel
    path = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(seg, np.diag([2.0, 1.0, 1.5, 1.0])), path)
    img = nib.load(path)
    vol, enh = radiomics_features(np.asarray(img.dataobj), img.header.get_zooms())
    assert vol == pytest.approx(13 * 2.0 * 1.0 * 1.5 / 1000.0)
    assert enh == pytest.approx(4 / 13)


def test_radiomics_features_empty_mask() -> None:
    vol, enh = radiomics_features(np.zeros((3, 4, 5), dtype=np.int16), (1.0, 1.0, 1.0))
    assert (vol, enh) == (0.0, 0.0)


def test_recipe_overrides_load_and_share_one_step_budget() -> None:
    from tumorscope.config import load_config

    demo = load_config(
        ROOT / "configs" / "demo.yaml", recipe_overrides("demo", BUDGET, seed=2, fold=1)
    )
    image_steps = sum(s.max_steps for s in demo.stages if s.name != "surv_head")
    assert image_steps == BUDGET.image_steps == 50 + 10 + 25  # demo.yaml: 500, 100, 250
    assert (demo.runtime.seed, demo.data.fold, demo.data.n_folds) == (2, 1, 3)
    for config in ("seg_only", "cls_only", "surv_only"):
        # Unscaled, each single-task recipe has the demo's image steps.
        stock = load_config(ROOT / "configs" / f"{config}.yaml")
        assert stock.stages[0].max_steps == sum(
            s.max_steps for s in load_config(ROOT / "configs" / "demo.yaml").stages[:3]
        )
        cfg = load_config(
            ROOT / "configs" / f"{config}.yaml", recipe_overrides(config, BUDGET, seed=0, fold=0)
        )
        assert cfg.stages[0].max_steps == BUDGET.image_steps
        assert cfg.data.image_size == 32


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
    c = compare(per_seed_mean(np.mean), a, a.copy(), [seed], np.arange(30), n_boot=50)
    assert c["delta"] == 0.0 and c["delta_ci95"] == [0.0, 0.0]
    assert c["ratio"] == pytest.approx(1.0)
    worse = compare(per_seed_mean(np.mean), a, a - 0.1, [seed], np.arange(30), n_boot=50)
    assert worse["delta"] == pytest.approx(0.1) and worse["a_better"]


def test_survival_only_summary_and_state_round_trip(tmp_path: Path) -> None:
    """A survival-only run: C-indices match lifelines, image goals are None, and the saved
    state re-summarises to the same result (``--from-state``)."""
    from lifelines.utils import concordance_index
    from peers import Bench, summarise

    rng = np.random.default_rng(3)
    pids = [f"p{i:02d}" for i in range(40)]
    risk = rng.normal(size=40)
    time = np.ceil(rng.exponential(np.exp(-risk)) * 300)
    event = rng.random(40) < 0.7
    noisy = risk + rng.normal(size=40)
    bench = Bench(BUDGET, tmp_path)
    bench.table = {
        p: {"time": float(t), "event": float(e), "true_risk": float(r)}
        for p, t, e, r in zip(pids, time, event, risk, strict=True)
    }
    bench.oof = {
        "tumorscope": dict(zip(pids, noisy.tolist(), strict=True)),
        "radiomics_cox": dict(zip(pids, (-risk).tolist(), strict=True)),
        "oracle": dict(zip(pids, risk.tolist(), strict=True)),
    }
    bench.train_s, bench.train_cpu = {"tumorscope": [10.0, 12.0]}, {"tumorscope": [20.0, 22.0]}
    bench.folds = [(pids[:20], pids[20:]), (pids[20:], pids[:20])]
    result = summarise(bench)
    peers = result["peers"]
    for name, r in (("tumorscope", noisy), ("oracle", risk), ("radiomics_cox", -risk)):
        expected = concordance_index(time, -r, event)  # lifelines: higher score, longer life
        assert peers[name]["c_index_harrell"]["value"] == pytest.approx(expected, abs=1e-4)
    assert (
        peers["radiomics_cox"]["c_index_harrell"]["value"]
        < 0.5
        < peers["oracle"]["c_index_harrell"]["value"]
    )
    assert peers["tumorscope"]["train_seconds"] == 11.0
    assert "dice" not in peers["tumorscope"] and result["survival_patients"] == 40
    assert result["goals"]["c_index_ge_radiomics_cox"] is True
    assert result["goals"]["dice_ge_monai_basicunet"] is None
    bench.save_state(tmp_path / "state.json")
    again = Bench(BUDGET, tmp_path)
    again.load_state(tmp_path / "state.json")
    assert summarise(again) == result
