"""Structured pruning of a trained run's network: does any pruned variant pay?

Channels are removed physically with torch-pruning (``MetaPruner``, L2-magnitude
importance, the same ratio in every prunable layer), then the network is fine-tuned for a
few steps of the run's own first stage (its tasks, loss, data and augmentation, a quarter
of its learning rate, cosine decay), and scored on the run's validation split exactly as
``tumorscope export`` scores its variants. Kept at full width: the heads, and the two
encoder convolutions the slice heads' readout pools (so the heads keep their inputs).
Beside each variant: parameters, multiply-accumulates per slice (torch-pruning's
counter), and the latency of one batch in PyTorch and ONNX Runtime.

The goal this answers (export issue): a variant at least 1.3x faster at a Dice loss of at
most 0.01, or the measured statement that none exists for this model.

    python benchmarks/pruning.py --run runs/demo --data runs/demo-data [--quick]

The last stdout line is the JSON (with the CPU model and flags).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import cpu

from tumorscope.data.layout import discover
from tumorscope.export.graphs import export_graphs
from tumorscope.export.prune import finetune, finetune_stage, macs_per_slice, prune
from tumorscope.export.run import LATENCY_BATCH, Validation, latency_ms, real_slices
from tumorscope.inference.predictor import Predictor
from tumorscope.models.multitask import MultiTaskNet
from tumorscope.runs import TorchBackend, load_run
from tumorscope.runs.onnx import OnnxBackend
from tumorscope.training.data import StageData

GOAL_SPEEDUP = 1.3
GOAL_DICE_LOSS = 0.01


def _ort_latency(model: MultiTaskNet, size: int, batch: np.ndarray) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="tumorscope-prune-") as tmp:
        masks = export_graphs(model, Path(tmp), size)
        backend = OnnxBackend.of_network(tmp, model, size, masks)
        return latency_ms(backend.forward_slices, batch)


def measure(
    name: str, model: MultiTaskNet, validation: Validation, size: int, batch: np.ndarray
) -> dict[str, Any]:
    figures = validation.figures(TorchBackend(model))
    return {
        "variant": name,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "macs_per_slice": macs_per_slice(model, size),
        "validation": figures,
        "latency_pytorch": latency_ms(TorchBackend(model).forward_slices, batch),
        "latency_onnx": _ort_latency(model, size, batch),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/demo"))
    ap.add_argument("--data", type=Path, nargs="*", default=None)
    ap.add_argument("--cache", type=Path, default=None, help="default: <run>-cache")
    ap.add_argument("--ratios", type=float, nargs="*", default=[0.25, 0.5])
    ap.add_argument("--steps", type=int, default=150, help="fine-tune steps per variant")
    ap.add_argument("--quick", action="store_true", help="one ratio, 20 steps")
    args = ap.parse_args()
    if args.quick:
        args.ratios, args.steps = args.ratios[:1], 20
    started = time.perf_counter()
    torch.manual_seed(0)
    loaded = load_run(args.run)
    model, cfg = loaded.model, loaded.config
    roots = list(args.data) if args.data else [Path(d) for d in loaded.manifest.data]
    cache = args.cache or args.run.parent / f"{args.run.name}-cache"
    stage_data = StageData.build(data=roots, cfg=cfg, cache=cache)
    index = discover(roots)
    validation = Validation(loaded, args.run, index)
    side = int(loaded.spec.image_size)
    size = side + (-side % model.size_multiple)
    predictor = Predictor.from_loaded(loaded)
    splits = loaded.manifest.splits or {}
    batch = real_slices(predictor, index, set(splits["val"]), LATENCY_BATCH)
    stage = finetune_stage(cfg, args.steps)
    rows = [measure("unpruned", model, validation, size, batch)]
    base = rows[0]
    for ratio in args.ratios:
        pruned = prune(model, ratio, size)
        cold = measure(f"pruned-{ratio:g}", pruned, validation, size, batch)
        cpu_s = finetune(pruned, stage_data, stage, seed=cfg.runtime.seed)
        tuned = measure(f"pruned-{ratio:g}+finetune-{args.steps}", pruned, validation, size, batch)
        tuned["finetune_cpu_s"] = round(cpu_s, 1)
        rows += [cold, tuned]
    for row in rows:
        d0, d = base["validation"]["dice"], row["validation"]["dice"]
        row["dice_change"] = None if d0 is None or d is None else d - d0
        for kind in ("pytorch", "onnx"):
            row[f"speedup_{kind}"] = round(
                base[f"latency_{kind}"]["p50_ms"] / row[f"latency_{kind}"]["p50_ms"], 3
            )
    meets = [
        r["variant"]
        for r in rows[1:]
        if r["dice_change"] is not None
        and r["dice_change"] >= -GOAL_DICE_LOSS
        and max(r["speedup_pytorch"], r["speedup_onnx"]) >= GOAL_SPEEDUP
    ]
    print(
        json.dumps(
            {
                "cpu": cpu(),
                "threads": torch.get_num_threads(),
                "run": str(args.run),
                "batch": LATENCY_BATCH,
                "size": size,
                "finetune": {"steps": args.steps, "lr": stage.lr, "tasks": list(stage.tasks)},
                "variants": rows,
                "goal": {"speedup": GOAL_SPEEDUP, "max_dice_loss": GOAL_DICE_LOSS},
                "meets_goal": meets,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
