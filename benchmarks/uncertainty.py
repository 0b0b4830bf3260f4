"""Cost of MC-dropout uncertainty and Grad-CAM relative to one deterministic pass, on CPU.

An untrained ``demo``-size model (cost does not depend on the weights), a batch of random
slices at 128² and 256²: ``mc_cost_ratio`` = (trunk once + 20 dropout tails) / one pass,
``gradcam_cost_ratio`` = (forward + backward for the tumour map) / one pass, both measured
in this run by ``tumorscope.inference.uncertainty.measure_costs``. Test-time augmentation
(:func:`tta_costs`): 8 views batched through trunk passes of the same batch size against the
same 8 views run one after another (goal ≤ 0.6×), and MC dropout on top of it (2 dropout samples per view, 16
members; goal ≤ +30 %). Prints one JSON object on its last stdout line.

    python benchmarks/uncertainty.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch
from machine import cpu

from tumorscope.inference.uncertainty import measure_costs, tta
from tumorscope.inference.views import default_views
from tumorscope.models.multitask import MultiTaskNet
from tumorscope.models.registry import create_model, size_config

TTA_VIEWS = 8
TTA_MC_SAMPLES = 2


def tta_costs(model: MultiTaskNet, size: int, batch: int, repeats: int) -> dict[str, Any]:
    """Seconds of batched TTA, sequential TTA and TTA + MC dropout; ratios per round, the
    median over rounds (a round's three timings share the machine's load of the moment)."""
    x = torch.randn(
        batch, model.cfg.in_channels, size, size, generator=torch.Generator().manual_seed(0)
    )
    views = default_views(TTA_VIEWS)

    def seconds(fn: Any) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    steps = {
        "batched": lambda: tta(model, x, views=views, batch_size=batch),
        "sequential": lambda: [tta(model, x, views=(v,), batch_size=batch) for v in views],
        "with_mc": lambda: tta(model, x, views=views, mc_samples=TTA_MC_SAMPLES, batch_size=batch),
    }
    rounds = [{k: seconds(f) for k, f in steps.items()} for _ in range(repeats + 1)][1:]
    return {
        "views": TTA_VIEWS,
        "mc_samples_per_view": TTA_MC_SAMPLES,
        "batched_s": min(r["batched"] for r in rounds),
        "sequential_s": min(r["sequential"] for r in rounds),
        "with_mc_s": min(r["with_mc"] for r in rounds),
        "batched_over_sequential": float(
            np.median([r["batched"] / r["sequential"] for r in rounds])
        ),
        "mc_on_top_ratio": float(np.median([r["with_mc"] / r["batched"] for r in rounds])),
        "goals": {"batched_over_sequential": "<= 0.6", "mc_on_top_ratio": "<= 1.3"},
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="128² only, batch 4, one repeat")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--samples", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(size_config("demo")).eval()
    sizes, batch, repeats = ((128,), 4, 1) if args.quick else ((128, 256), 16, 3)
    results = {
        f"{s}px": measure_costs(model, s, batch, samples=args.samples, repeats=repeats)
        for s in sizes
    }
    tta_batch = 2 if args.quick else 4
    tta_results = {f"{s}px": tta_costs(model, s, tta_batch, repeats) for s in sizes}
    print(
        json.dumps(
            {"model": "demo", "quick": args.quick, "results": results, "tta": tta_results,
             "cpu": cpu()}
        )
    )  # fmt: skip


if __name__ == "__main__":
    main()
