"""Cost of MC-dropout uncertainty and Grad-CAM relative to one deterministic pass, on CPU.

An untrained ``demo``-size model (cost does not depend on the weights), a batch of random
slices at 128² and 256²: ``mc_cost_ratio`` = (trunk once + 20 dropout tails) / one pass,
``gradcam_cost_ratio`` = (forward + backward for the tumour map) / one pass, both measured
in this run by ``tumorscope.inference.uncertainty.measure_costs``. Prints one JSON object on
its last stdout line.

    python benchmarks/uncertainty.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import json

import torch
from machine import cpu

from tumorscope.inference.uncertainty import measure_costs
from tumorscope.models.registry import create_model, size_config


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
    print(json.dumps({"model": "demo", "quick": args.quick, "results": results, "cpu": cpu()}))


if __name__ == "__main__":
    main()
