"""Benchmark run options: weight snapshots at run-wide steps, and a split seed of its own.

``configs/tiny.yaml`` runs seg_warmup (steps 1-8), cls_head (9-12), joint (13-18) and the
cohort refit surv_head (19-22), so the snapshots below hit every stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tumorscope.config import ConfigError, load_config
from tumorscope.data.cache import load_prepared
from tumorscope.runs.load import load_run
from tumorscope.training.run import train_run

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SNAPSHOTS = {5: ("seg_warmup", 5), 12: ("cls_head", 4), 15: ("joint", 3), 20: ("surv_head", 4)}


@pytest.fixture(scope="module")
def snapshot_run(synth_brain: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``configs/tiny.yaml`` with ``runtime.snapshot_steps`` set (read-only for tests)."""
    root = tmp_path_factory.mktemp("snapshot-run")
    steps = ",".join(str(g) for g in SNAPSHOTS)
    cfg = load_config(CONFIGS / "tiny.yaml", [f"runtime.snapshot_steps=[{steps}]"])
    assert cfg.runtime.snapshot_steps == tuple(SNAPSHOTS)
    run = root / "run"
    train_run(cfg=cfg, data=[synth_brain], out=run, cache=root / "cache")
    return run


def _tensors(folder: Path) -> dict[str, np.ndarray]:
    return load_file(str(folder / "model.safetensors"))


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_snapshots_are_saved_in_every_stage_and_load(snapshot_run: Path) -> None:
    folders = sorted((snapshot_run / "snapshots").iterdir())
    assert [p.name for p in folders] == sorted(f"step-{g}" for g in SNAPSHOTS)
    parent = load_run(snapshot_run)
    for g, (stage, step) in SNAPSHOTS.items():
        snap = load_run(snapshot_run / "snapshots" / f"step-{g}")  # verifies every hash
        assert snap.manifest.is_stage
        assert (snap.manifest.stage, snap.manifest.step) == (stage, step)
        assert snap.manifest.splits == parent.manifest.splits  # the parent run was found
        assert snap.calibration is not None and snap.calibration.threshold == 0.5


def test_a_snapshot_at_a_stages_only_validation_is_its_best_checkpoint(
    snapshot_run: Path,
) -> None:
    # cls_head and the surv_head refit have eval_every == max_steps: best = last step.
    for g, stage in ((12, "cls_head"), (20, "surv_head")):
        snap = snapshot_run / "snapshots" / f"step-{g}"
        _assert_same(_tensors(snap), _tensors(snapshot_run / "stages" / stage))
    snap = json.loads((snapshot_run / "snapshots" / "step-12" / "manifest.json").read_text())
    best = json.loads((snapshot_run / "stages" / "cls_head" / "manifest.json").read_text())
    assert snap["metrics"] == best["metrics"] and snap["metrics"]


def test_a_snapshot_between_validations_holds_the_live_weights(snapshot_run: Path) -> None:
    snap = snapshot_run / "snapshots" / "step-5"  # seg_warmup validates at steps 4 and 8
    best = _tensors(snapshot_run / "stages" / "seg_warmup")
    assert any(not np.array_equal(v, best[k]) for k, v in _tensors(snap).items())
    assert json.loads((snap / "manifest.json").read_text())["metrics"] in ({}, None)


def test_snapshots_do_not_change_training(snapshot_run: Path, tiny_run: Path) -> None:
    # tiny_run: the same config without snapshots, same data.
    assert (snapshot_run / "model.safetensors").read_bytes() == (
        tiny_run / "model.safetensors"
    ).read_bytes()
    for stage in ("seg_warmup", "cls_head", "joint", "surv_head"):
        _assert_same(
            _tensors(snapshot_run / "stages" / stage), _tensors(tiny_run / "stages" / stage)
        )


@pytest.mark.parametrize("steps", ["[0]", "[5, 3]"])  # more in tests/test_config.py
def test_bad_snapshot_steps_name_the_key(steps: str) -> None:
    with pytest.raises(ConfigError, match=r"runtime\.snapshot_steps"):
        load_config(CONFIGS / "tiny.yaml", [f"runtime.snapshot_steps={steps}"])


def test_a_split_seed_fixes_the_splits_while_runtime_seed_varies(snapshot_run: Path) -> None:
    cache = snapshot_run.parent / "cache"  # holds splits.json drawn with runtime.seed 0

    def splits(*overrides: str) -> tuple[object, ...]:
        s = load_prepared(cache, load_config(CONFIGS / "tiny.yaml", overrides)).splits
        return s.seed, s.test, s.folds, s.train, s.val

    fixed = [splits(f"runtime.seed={r}", "data.split_seed=7") for r in (0, 1)]
    assert fixed[0] == fixed[1] and fixed[0][0] == 7
    followed = [splits(f"runtime.seed={r}") for r in (0, 1)]
    assert [f[0] for f in followed] == [0, 1]
    assert followed[0][1:3] != followed[1][1:3]  # test set or folds differ with the seed
