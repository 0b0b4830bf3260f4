"""Run every benchmark script in this folder and collect their JSON figures.

``--quick`` runs each at small size (``make bench-quick``, < 10 minutes in all);
``--full`` at full size (``make bench``, < 90 minutes). Each script takes ``--quick``
and prints one JSON object on its last stdout line; the collected figures go to ``bench-out/results.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Order matters: cheap, independent figures first.
SCRIPTS = [
    "model_size.py",
    "synthetic.py",
    "dataset.py",
    "training.py",
    "inference.py",
    "uncertainty.py",
    "faults.py",
    "peers.py",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="small sizes")
    mode.add_argument("--full", action="store_true", help="full sizes")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {}
    failed = []
    for name in SCRIPTS:
        script = HERE / name
        if not script.is_file():
            continue
        cmd = [sys.executable, str(script), *(["--quick"] if args.quick else [])]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        # stderr (progress logs) streams through; stdout is kept for the JSON line.
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
        seconds = time.perf_counter() - t0
        lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
        if len(lines) > 1:  # what a script prints before its JSON line (the peer tables)
            print(proc.stdout.rstrip().rsplit("\n", 1)[0], flush=True)
        if proc.returncode != 0 or not lines:
            failed.append(name)
            print(f"   failed (exit {proc.returncode}) after {seconds:.0f} s", flush=True)
            continue
        try:
            figures = json.loads(lines[-1])
        except json.JSONDecodeError:
            failed.append(name)
            print(f"   last line is not JSON: {lines[-1][:200]}", flush=True)
            continue
        results[name.removesuffix(".py")] = {**figures, "wall_seconds": round(seconds, 1)}
        print(json.dumps(figures), flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({"scripts": list(results), "failed": failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
