"""Inference speed of the Predictor on CPU: slice latency, batch throughput, a whole
240×240×155 volume, and one multi-task pass vs separate segmentation and classification
models of the same size.

Without ``--run`` an untrained ``demo``-size model from ``tumorscope.models.registry`` is
used with the demo preprocessing (``configs/demo.yaml``): latency does not depend on the
weights. Inputs are generated (a bright ellipsoid "head" with a blob on a dark background),
so every stage (foreground mask, normalisation, crop, resize, network, restore) does the
work it does on a real scan. Prints one JSON object on its last stdout line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import cpu

from tumorscope.config import config_from_dict, load_config
from tumorscope.inference.predictor import Predictor
from tumorscope.models.registry import create_model, size_config

ROOT = Path(__file__).resolve().parents[1]
VOLUME_SHAPE = (240, 240, 155)  # BraTS grid, 1 mm isotropic
SLICE_SHAPE = (240, 240)


def head(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Ellipsoid 'head' (value ~100) with a brighter blob, on a dark noisy background."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
    inside = sum(g**2 for g in grid) < 0.6
    blob = sum((g - 0.25) ** 2 for g in grid) < 0.03
    noise = rng.uniform(0, 5, size=shape).astype(np.float32)
    return (100.0 * inside + 80.0 * blob + noise).astype(np.float32)


def timed(fn: Callable[[], Any], reps: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``reps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def ms(seconds: list[float]) -> dict[str, float]:
    """Median and minimum in milliseconds (the minimum is the least disturbed by other
    processes on a shared CPU)."""
    return {
        "median": round(1000 * statistics.median(seconds), 2),
        "min": round(1000 * min(seconds), 2),
        "n": len(seconds),
    }


def build_predictor(run: Path | None) -> tuple[Predictor, str]:
    if run is not None:
        return Predictor.from_run(run), f"run {run}"
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    model = size_config("demo", regions=cfg.model.regions, heads=cfg.model.heads)
    raw = {**cfg.to_dict(), "model": _plain(dataclasses.asdict(model))}
    predictor = Predictor.from_config(config_from_dict(raw), seed=0)
    return predictor, "registry size 'demo', untrained (latency does not depend on the weights)"


@torch.no_grad()
def multitask_vs_separate(predictor: Predictor, batch: int, reps: int) -> dict[str, Any]:
    """One multi-task forward vs a segmentation-only plus a classification-only model of
    the same size (same encoder/decoder widths), on the same preprocessed batch."""
    mc = predictor.cfg.model
    torch.manual_seed(0)
    seg_only = create_model(size_config("demo", **{**_fields(mc), "heads": ()})).eval()
    # A stock classifier has no segmentation map to read (configs/cls_only.yaml): no decoder.
    cls_fields = {**_fields(mc), "heads": ("tumour",), "seg_evidence": False}
    cls_only = create_model(size_config("demo", **cls_fields)).eval()
    s = predictor.spec.image_size
    x = torch.randn(batch, mc.in_channels, s, s)
    tasks = tuple(predictor.model.tasks)
    runs: dict[str, Callable[[], Any]] = {
        "multitask": lambda: predictor.model(x, tasks=tasks),
        "segmentation_model": lambda: seg_only(x, tasks=("segmentation",)),
        "classification_model": lambda: cls_only(x, tasks=("tumour",)),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(reps):  # interleaved, so that a burst of load hits all three alike
        for key, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    separate = med["segmentation_model"] + med["classification_model"]
    separate_best = best["segmentation_model"] + best["classification_model"]
    return {
        "batch": batch,
        "tasks": list(tasks),
        **{f"{k}_ms": ms(v) for k, v in times.items()},
        "separate_total_ms_median": round(1000 * separate, 2),
        "speedup_vs_separate_median": round(separate / med["multitask"], 3),
        "speedup_vs_separate_min": round(separate_best / best["multitask"], 3),
        "parameters": {
            "multitask": sum(p.numel() for p in predictor.model.parameters()),
            "separate_total": sum(p.numel() for p in seg_only.parameters())
            + sum(p.numel() for p in cls_only.parameters()),
        },
    }


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _fields(mc: Any) -> dict[str, Any]:
    return {
        "in_channels": mc.in_channels,
        "base_channels": mc.base_channels,
        "depth": mc.depth,
        "norm": mc.norm,
        "dropout": mc.dropout,
        "regions": mc.regions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument(
        "--run", type=Path, default=None, help="trained run (default: untrained demo)"
    )
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reps = 3 if args.quick else 10
    batch = 16 if args.quick else 32
    load_before = round(os.getloadavg()[0], 2)
    predictor, model_desc = build_predictor(args.run)
    predictor.batch_size = batch

    image = head(SLICE_SHAPE, seed=1)
    slice_s = timed(lambda: predictor.predict(image), reps * 3)
    s = predictor.spec.image_size
    x = np.random.default_rng(0).standard_normal((1, predictor.cfg.model.in_channels, s, s))
    forward_s = timed(lambda: predictor.forward_slices(x.astype(np.float32)), reps * 3)

    images = [head(SLICE_SHAPE, seed=k) for k in range(batch)]
    batch_s = timed(lambda: predictor.predict_batch(images), reps)

    volume = head(VOLUME_SHAPE, seed=2)
    result = predictor.predict_volume(volume)  # warm-up and slice count
    volume_s = timed(lambda: predictor.predict_volume(volume), 1 if args.quick else 3, warmup=0)
    n_slices = len(result.slice_probabilities)

    figures = {
        "model": model_desc,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        # Other processes share the CPU: the load average says how much the figures suffer.
        "load_average_1min_before_after": [load_before, round(os.getloadavg()[0], 2)],
        "image_size": s,
        "slice_latency_ms": ms(slice_s),
        "slice_forward_only_ms": ms(forward_s),
        "batch_throughput": {
            "batch": batch,
            "input_shape": list(SLICE_SHAPE),
            "images_per_s": round(batch / statistics.median(batch_s), 2),
            "ms_per_image": round(1000 * statistics.median(batch_s) / batch, 2),
            "batch_ms": ms(batch_s),
        },
        "volume": {
            "shape": list(VOLUME_SHAPE),
            "seconds": round(statistics.median(volume_s), 3),
            "seconds_min": round(min(volume_s), 3),
            "slices_predicted": n_slices,
            "slices_per_s": round(n_slices / statistics.median(volume_s), 2),
        },
        "multitask_vs_separate": multitask_vs_separate(predictor, batch, reps),
    }
    from tumorscope.inference.uncertainty import measure_costs

    # MC-dropout (20 samples, cached trunk) and Grad-CAM cost relative to one pass, same run.
    costs = measure_costs(predictor.model, s, 16, samples=20, repeats=1 if args.quick else 3)
    figures["mc_dropout_20_over_1_pass"] = round(costs["mc_cost_ratio"], 2)
    figures["gradcam_over_1_pass"] = round(costs["gradcam_cost_ratio"], 2)
    print(json.dumps({**figures, "cpu": cpu()}))


if __name__ == "__main__":
    main()
