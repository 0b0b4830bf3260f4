"""benchmarks/ablations.py: every variant is a valid config that differs from the full
recipe in exactly the named change, and the staged curriculum gets the same steps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from ablations import (  # noqa: E402
    VARIANTS,
    AblationBench,
    main,
    markdown,
    selected,
    staged_overrides,
)
from peers import QUICK  # noqa: E402


def _cfg(tmp_path: Path, name: str):  # type: ignore[no-untyped-def]
    bench = AblationBench(QUICK, tmp_path)
    config, sets = VARIANTS[name]
    bench.variant_sets = sets + bench.step_overrides(name)
    return bench.cfg(config, seed=1, fold=0, split_seed=0)


def test_every_variant_changes_only_its_own_setting(tmp_path: Path) -> None:
    full = _cfg(tmp_path, "full")
    assert full.model.deep_supervision == 2 and full.model.readout == "multiscale"
    assert full.model.seg_evidence and not full.loss.dice_batch and full.data.image_share == 0.25
    assert full.model.evidence_grad and full.loss.task_weights["tumour"] == 0.1
    changed = {
        "no_deep_supervision": ("model", "deep_supervision", 0),
        "bottleneck_readout": ("model", "readout", "bottleneck"),
        "no_seg_evidence": ("model", "seg_evidence", False),
        "batch_dice": ("loss", "dice_batch", True),
        "no_dropout": ("model", "dropout", 0.0),
        "no_image_share": ("data", "image_share", None),
        "width_8": ("model", "base_channels", 8),
        "width_24": ("model", "base_channels", 24),
        "width_32": ("model", "base_channels", 32),
        "evidence_detached": ("model", "evidence_grad", False),
        "tumour_weight_1": (
            "loss",
            "task_weights",
            {"segmentation": 1.0, "tumour": 1.0, "survival": 0.5},
        ),
    }
    for name, (section, key, value) in changed.items():
        cfg = _cfg(tmp_path, name)
        assert getattr(getattr(cfg, section), key) == value, name
        # Everything else as the full recipe: the same stages, seed and data.
        assert cfg.stages == full.stages and cfg.runtime.seed == full.runtime.seed == 1
        for other in ("data", "model", "loss"):
            if other != section:
                assert getattr(cfg, other) == getattr(full, other), (name, other)


def test_stage_variants_change_only_the_joint_stage(tmp_path: Path) -> None:
    full = _cfg(tmp_path, "full")
    half = _cfg(tmp_path, "batch_8")
    seg = _cfg(tmp_path, "segmentation_task_only")
    (fj, fs), (hj, hs), (sj, ss) = full.stages, half.stages, seg.stages
    # Twice the batch for half the steps: the same number of slices seen.
    assert (hj.batch_size, fj.batch_size) == (8, 4)
    assert hj.max_steps * hj.batch_size == fj.max_steps * fj.batch_size
    old = _cfg(tmp_path, "batch_16").stages[0]
    assert old.batch_size == 16 and old.max_steps * 4 == fj.max_steps
    assert hj.eval_every == hj.max_steps and hs == fs
    assert sj.tasks == ("segmentation",) and fj.tasks == ("segmentation", "tumour")
    assert sj.max_steps == fj.max_steps and ss == fs
    for cfg in (half, seg):
        assert (cfg.model, cfg.data, cfg.loss) == (full.model, full.data, full.loss)


def test_only_picks_variants_beside_full_and_rejects_unknown_names(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert selected() == list(VARIANTS)
    assert selected(["width_8", "batch_8"]) == ["full", "width_8", "batch_8"]
    with pytest.raises(ValueError, match="width_9"):
        selected(["width_9"])
    # The command line says so before any data is made.
    monkeypatch.setattr(sys, "argv", ["ablations.py", "--only", "batch_8,width_9"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2 and "unknown variants ['width_9']" in capsys.readouterr().err


def test_staged_schedule_has_the_recipes_image_steps(tmp_path: Path) -> None:
    staged = _cfg(tmp_path, "staged_schedule")
    full = _cfg(tmp_path, "full")
    names = [s.name for s in staged.stages]
    assert names == ["seg_warmup", "cls_head", "joint", "surv_head"]
    image = sum(s.max_steps for s in staged.stages if not s.cohort_refit)
    # Rounded per stage: within one step per stage of the full recipe's image steps.
    assert abs(image - QUICK.image_steps) <= 3
    assert staged.stages[-1].max_steps == full.stages[-1].max_steps
    assert staged.model == full.model and staged.loss == full.loss and staged.runtime.seed == 1
    assert all(s.eval_every == s.max_steps for s in staged.stages)
    assert "stages.seg_warmup.warmup_fraction=0.05" in staged_overrides(QUICK)


def test_markdown_lists_every_variant() -> None:
    fig = {"value": 0.5, "ci95": [0.4, 0.6], "n": 3}
    cmp = {"delta": -0.01, "delta_ci95": [-0.03, 0.01], "verdict": "undecided"}
    rows = {
        "full": {m: fig for m in ("dice", "dice_ungated", "hd95_mm", "slice_auc", "kaggle_auc")},
        "width_8": {m: fig for m in ("dice", "dice_ungated", "hd95_mm", "slice_auc", "kaggle_auc")},
    }
    rows["full"]["train_cpu_s"] = 10.0  # type: ignore[assignment]
    rows["width_8"]["train_cpu_s"] = 6.0  # type: ignore[assignment]
    rows["width_8"]["vs_full"] = {"dice": cmp, "slice_auc": cmp}  # type: ignore[assignment]
    curve = [{"base_channels": 8, "fraction": 1.0, "cpu_s": 6.0, "dice": 0.5}]
    md = markdown({"variants": rows, "width_curve": curve})
    assert "| width_8 | 0.500 [0.400, 0.600]" in md
    assert "-0.010 [-0.030, +0.010] undecided" in md
    assert "| 8 | 1.0 | 6.0 | 0.500 |" in md
    with pytest.raises(KeyError):
        markdown({"variants": {"x": {}}, "width_curve": []})
