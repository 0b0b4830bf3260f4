"""Model size figures: parameters per part, GFLOP and eager fp32 forward time per 256² slice.

Prints one JSON object on its last stdout line (see ``run_all.py``). FLOPs are counted by
``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts as 2 FLOPs) for one
1×1×256×256 slice with every head of the size's default config plus ``tumour_type``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from machine import cpu
from torch.utils.flop_counter import FlopCounterMode

from tumorscope.models.registry import MODEL_SIZES, create_model, size_config

SIDE = 256
HEADS = ("tumour", "tumour_type", "survival")


def measure(size: str, reps: int) -> dict[str, object]:
    """Parameter counts, GFLOP and median forward milliseconds of one size."""
    torch.manual_seed(0)
    model = create_model(size_config(size, heads=HEADS)).eval()
    x = torch.randn(1, 1, SIDE, SIDE)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            model(x)
        model(x)  # warm-up
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1000)
    cfg = model.cfg
    return {
        "base_channels": cfg.base_channels,
        "depth": cfg.depth,
        "parameters": model.parameter_counts(),
        "gflop_per_slice": round(counter.get_total_flops() / 1e9, 3),
        "forward_ms_fp32": round(statistics.median(times), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer timing repetitions")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reps = 3 if args.quick else 10
    result = {
        "input": f"1x1x{SIDE}x{SIDE}",
        "threads": args.threads,
        "sizes": {size: measure(size, reps) for size in MODEL_SIZES},
    }
    print(json.dumps({**result, "cpu": cpu()}))


if __name__ == "__main__":
    main()
