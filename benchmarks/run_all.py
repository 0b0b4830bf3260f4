"""Run the benchmark scripts of this folder and collect their JSON figures.

``--full`` (``make bench``) runs :data:`SCRIPTS` at full size within the time budget of
``benchmarks/README.md`` (image peers ≤ 45 min, survival peers ≤ 50 min, every other
script ≤ 10 min, the whole ≤ 100 min); ``--long`` (``make bench-long``) the long runs (:data:`LONG`); ``--quick``
(``make bench-quick``, ≤ 10 min) every script at small size. Each script takes
``--quick`` and prints one JSON object on its last stdout line; the collected figures,
each script's wall time against its budget and the CPU go to ``bench-out/results.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu

HERE = Path(__file__).resolve().parent
# Order matters: cheap, independent figures first. An entry may carry arguments; its
# results key is the script's stem, plus its arguments (``peers-survival-only-profile-petct``).
SCRIPTS = [
    "model_size.py",
    "synthetic.py",
    "dataset.py",
    "training.py",
    "inference.py",
    "uncertainty.py",
    "export.py",
    "service.py",
    "peers.py",
    "peers.py --survival-only",
]
# Long runs: their own target (``make bench-long``), not in ``make bench``.
LONG = ["faults.py", "service_soak.py", "peers.py --survival-only --profile petct"]
# Wall-time budget of each script in ``make bench`` on this machine, and of the whole.
BUDGET_S = {
    "peers": 2700.0,
    "peers-survival-only": 3000.0,
    "peers-survival-only-profile-petct": 3000.0,
}
SCRIPT_BUDGET_S = 600.0
TOTAL_BUDGET_S = 6000.0


def key_of(entry: str) -> str:
    """Results key of a :data:`SCRIPTS` entry: ``peers.py --survival-only`` → ``peers-survival-only``."""
    file, *extra = entry.split()
    return "-".join([file.removesuffix(".py"), *(a.lstrip("-") for a in extra)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="small sizes")
    mode.add_argument("--full", action="store_true", help="full sizes")
    mode.add_argument("--long", action="store_true", help="the long runs, full size")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {}
    failed = []
    scripts = LONG if args.long else SCRIPTS + (LONG if args.quick else [])
    start = time.perf_counter()
    for entry in scripts:
        file, *extra = entry.split()
        name = key_of(entry)
        script = HERE / file
        if not script.is_file():
            continue
        cmd = [sys.executable, str(script), *extra, *(["--quick"] if args.quick else [])]
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
        results[name] = {**figures, "wall_seconds": round(seconds, 1)}
        print(json.dumps(figures), flush=True)
    total = time.perf_counter() - start
    budget = {
        key_of(e): {
            "wall_seconds": results[key_of(e)]["wall_seconds"],
            "budget_seconds": BUDGET_S.get(key_of(e), SCRIPT_BUDGET_S),
        }
        for e in scripts
        if key_of(e) in results
    }
    summary = {
        "mode": "long" if args.long else "quick" if args.quick else "full",
        "cpu": cpu(),
        "wall_seconds": round(total, 1),
        # The budgets are for full runs; a quick run's whole budget is 10 minutes.
        "budget_seconds": 600.0 if args.quick else None if args.long else TOTAL_BUDGET_S,
        "scripts_budget": None if args.quick or args.long else budget,
        "over_budget": []
        if args.quick or args.long
        else [n for n, b in budget.items() if b["wall_seconds"] > b["budget_seconds"]],
    }
    results["run_all"] = summary
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(
        json.dumps({"scripts": [k for k in results if k != "run_all"], "failed": failed, **summary})
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
