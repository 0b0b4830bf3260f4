"""Speed and disk use of the synthetic generator; prints one JSON object on its last line.

Full run (the issue's target): 200 ``standard`` brain patients at 240×240×155 with two
workers in under 10 minutes. ``--quick``: 8 patients at 120×120×78 plus 20 Kaggle images.

    python benchmarks/synthetic.py [--quick] [--patients N] [--workers W] [--profile P]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small volumes, few patients")
    parser.add_argument("--profile", default="brain-mri", choices=["brain-mri", "petct"])
    parser.add_argument("--patients", type=int, default=None)
    parser.add_argument("--kaggle", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--difficulty", default="standard", choices=["easy", "standard", "hard"])
    parser.add_argument("--keep", type=Path, default=None, help="write here and keep the data")
    args = parser.parse_args()

    from tumorscope.synthetic import synthesize

    patients = args.patients or (8 if args.quick else 200)
    kaggle = args.kaggle if args.kaggle is not None else (20 if args.quick else 0)
    if args.profile == "petct":
        kaggle = 0
    shape = (
        ((120, 120, 78) if args.profile == "brain-mri" else (96, 96, 64)) if args.quick else None
    )
    tmp = Path(tempfile.mkdtemp(prefix="tumorscope-synth-")) if args.keep is None else args.keep
    try:
        t0 = time.perf_counter()
        summary = synthesize(
            profile=args.profile,
            patients=patients,
            out=tmp,
            kaggle=kaggle,
            difficulty=args.difficulty,
            seed=0,
            shape=shape,
            workers=args.workers,
        )
        seconds = time.perf_counter() - t0
        result = {
            "benchmark": "synthetic",
            "profile": args.profile,
            "difficulty": args.difficulty,
            "patients": patients,
            "kaggle_images": kaggle,
            "shape": list(summary.shape),
            "workers": args.workers,
            "cpu_count": os.cpu_count(),
            "seconds": round(seconds, 2),
            "patients_per_s": round(patients / seconds, 4),
            "seconds_per_patient_per_worker": round(seconds * args.workers / patients, 3),
            "mb_per_patient": round(summary.mb_per_patient, 3),
            "total_mb": round(summary.bytes / 1e6, 2),
            "oracle_c_index": None
            if summary.oracle_c_index is None
            else round(summary.oracle_c_index, 4),
            "target_met": (seconds < 600.0) if (patients == 200 and shape is None) else None,
        }
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({**result, "cpu": cpu()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
