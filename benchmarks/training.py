"""Training throughput on this machine: slices/s per stage and precision, data-wait share, RSS.

Prints one JSON object on its last line. ``--quick`` uses fewer patients and steps.

    python benchmarks/training.py [--quick]

Figures:
- per image stage of ``configs/demo.yaml`` and precision (fp32, bf16, bf16 +
  channels_last): slices/s and the share of step time spent waiting for the next batch;
- the augmentation's cost: the ``joint`` stage at the auto precision with
  ``data.augment: light`` and ``full`` (the demo's), as slices/s and data-wait share;
- peak RSS of the training process for a small and a 10× larger cohort (same steps), to
  show memory does not grow with the number of patients.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine import cpu

ROOT = Path(__file__).resolve().parents[1]


def _bench_stage(
    cfg_path: Path,
    data: Path,
    cache: Path,
    stage_name: str,
    precision: str,
    channels_last: bool,
    steps: int,
    overrides: tuple[str, ...] = (),
) -> dict[str, float]:
    from tumorscope.config import load_config
    from tumorscope.losses.multitask import MultiTaskLoss
    from tumorscope.models.registry import create_model
    from tumorscope.runtime import seed_everything
    from tumorscope.training import loop
    from tumorscope.training.data import StageData
    from tumorscope.training.stages import apply_freeze, make_scheduler, param_groups

    cfg = load_config(cfg_path, overrides=list(overrides))
    seed_everything(0)
    stage_data = StageData.build(data=[data], cfg=cfg, cache=cache)
    stage = next(s for s in cfg.stages if s.name == stage_name)
    model = create_model(cfg.model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = MultiTaskLoss(cfg.loss, model.tasks)
    parts = apply_freeze(model, stage)
    opt = torch.optim.AdamW(param_groups(model, stage, parts), lr=stage.lr)
    sched = make_scheduler(opt, stage)
    batches = stage_data.train_batches(stage, seed=0)
    wait = compute = 0.0
    n_slices = 0
    for i in range(steps + 2):
        t0 = time.perf_counter()
        batch = next(batches)
        if channels_last:
            batch.image = batch.image.contiguous(memory_format=torch.channels_last)
        t1 = time.perf_counter()
        loop.train_step(
            model, loss_fn, opt, sched, batch, stage.tasks, precision=precision, grad_clip=1.0
        )
        t2 = time.perf_counter()
        if i >= 2:  # warm-up steps excluded
            wait += t1 - t0
            compute += t2 - t1
            n_slices += len(batch)
    return {
        "slices_per_s": round(n_slices / (wait + compute), 1),
        "data_wait_share": round(wait / (wait + compute), 3),
        "ms_per_step": round(1000 * (wait + compute) / steps, 1),
    }


def _bench_stage_ms(figures: object) -> float:
    assert isinstance(figures, dict)
    return float(figures["ms_per_step"])


def _rss_child(cfg_path: Path, data: Path, cache: Path, steps: int) -> float:
    """Peak RSS (MB) of a fresh process running ``steps`` joint steps on ``data``."""
    cmd = [
        sys.executable,
        __file__,
        "--rss-child",
        str(cfg_path),
        str(data),
        str(cache),
        str(steps),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rss-child", nargs=4, metavar=("CONFIG", "DATA", "CACHE", "STEPS"))
    args = parser.parse_args()
    if args.rss_child:
        cfg, data, cache, n = args.rss_child
        _bench_stage(Path(cfg), Path(data), Path(cache), "joint", "fp32", False, int(n))
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return 0
    from tumorscope.runtime import bf16_supported
    from tumorscope.synthetic import synthesize

    small, large = (6, 30) if args.quick else (20, 200)
    steps = 10 if args.quick else 30
    shape = (96, 112, 80) if args.quick else (160, 192, 144)
    cfg_path = ROOT / "configs" / "demo.yaml"
    figures: dict[str, object] = {
        "bf16_supported": bf16_supported(),
        "threads": torch.get_num_threads(),
        "steps": steps,
    }
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        t0 = time.perf_counter()
        for name, n in (("small", small), ("large", large)):
            synthesize(
                profile="brain-mri",
                patients=n,
                out=t / name,
                kaggle=4 * n,
                difficulty="easy",
                seed=0,
                shape=shape,
                workers=2,
            )
        figures["synth_seconds"] = round(time.perf_counter() - t0, 1)
        precisions = [("fp32", False)] + (
            [("bf16", False), ("bf16", True)] if bf16_supported() else []
        )
        per_stage: dict[str, dict[str, object]] = {}
        from tumorscope.config import load_config

        image_stages = [s.name for s in load_config(cfg_path).stages if not s.cohort_refit]
        for stage in image_stages:
            per_stage[stage] = {}
            for precision, cl in precisions:
                key = precision + ("+channels_last" if cl else "")
                per_stage[stage][key] = _bench_stage(
                    cfg_path, t / "small", t / "cache-small", stage, precision, cl, steps
                )
            if "bf16" in per_stage[stage]:
                fp32 = per_stage[stage]["fp32"]["slices_per_s"]  # type: ignore[index]
                per_stage[stage]["bf16_speedup"] = round(
                    per_stage[stage]["bf16"]["slices_per_s"] / fp32, 2
                )  # type: ignore[index]
                per_stage[stage]["bf16_channels_last_speedup"] = round(
                    per_stage[stage]["bf16+channels_last"]["slices_per_s"] / fp32,
                    2,  # type: ignore[index]
                )
        figures["stages"] = per_stage
        auto = "bf16" if bf16_supported() else "fp32"
        augment: dict[str, object] = {
            level: _bench_stage(
                cfg_path,
                t / "small",
                t / "cache-small",
                image_stages[0],
                auto,
                False,
                steps,
                (f"data.augment={level}",),
            )
            for level in ("light", "full")
        }
        light, full = (_bench_stage_ms(augment[k]) for k in ("light", "full"))
        augment["full_over_light_step_time"] = round(full / light, 3)
        figures["augment"] = augment
        from tumorscope.config import load_config
        from tumorscope.training.data import StageData

        t1 = time.perf_counter()
        StageData.build(data=[t / "large"], cfg=load_config(cfg_path), cache=t / "cache-large")
        figures["cache_build_seconds_large"] = round(time.perf_counter() - t1, 1)
        # Caches exist now: the children only iterate, so RSS reflects training, not building.
        rss_small = _rss_child(cfg_path, t / "small", t / "cache-small", steps)
        rss_large = _rss_child(cfg_path, t / "large", t / "cache-large", steps)
        figures["peak_rss_mb"] = {
            f"{small}_patients": round(rss_small),
            f"{large}_patients": round(rss_large),
            "ratio": round(rss_large / rss_small, 2),
        }
    figures["self_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps({**figures, "cpu": cpu()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
