"""The service under a steady nominal load for a long stretch: memory growth and errors.

One real ``tumorscope serve`` process (one slot, one torch thread and the default queue
of 8 places: :data:`SETTINGS`), an open-loop
generator at half the measured capacity (``POST /predict``, a 240×240 PNG) for 10 minutes
(``--quick``: 20 s), the server's ``VmRSS`` sampled every 30 s (``--quick``: 5 s). Goal: RSS
growth < 10 % from the first sample after warm-up to the last, no answer but 200.

    python benchmarks/service_soak.py [--quick] [--run RUN] [--out bench-out]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import service
import torch
from machine import cpu
from service import Server, make_png, open_loop, overhead, status_kib, train_tiny

from tumorscope.inference.predictor import Predictor

GROWTH_GOAL_PCT = 10.0
#: The product's default queue: a steady load meets the stalls of a shared machine (one
#: of 325 ms in a measured soak) that service.py's 2-place queue answers with 503s.
SETTINGS = {"torch_threads": "1", "concurrency": "1", "queue_size": "8"}
SIZES = {"quick": {"soak_s": 20.0, "every_s": 5.0}, "full": {"soak_s": 600.0, "every_s": 30.0}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--run", type=Path)
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    size = SIZES["quick" if args.quick else "full"]
    with tempfile.TemporaryDirectory(prefix="tumorscope-soak-") as tmp:
        work = Path(tmp)
        run = args.run if args.run is not None else train_tiny(work)
        png = make_png(work)
        service.SERVER_SETTINGS = SETTINGS
        server = Server(run, work)
        samples: list[tuple[float, float]] = []
        try:
            found = overhead(server, Predictor.from_run(run), png, 20, 3)
            rate = 0.5 * 1000.0 / found["http_ms"]["p50"]
            stop = threading.Event()

            def sample() -> None:
                t0 = time.perf_counter()
                while not stop.wait(size["every_s"]):
                    rss = status_kib(server.proc.pid)["VmRSS"] / 1024
                    samples.append((round(time.perf_counter() - t0, 1), round(rss, 1)))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            load = asyncio.run(
                open_loop(server.url, png.read_bytes(), rate, size["soak_s"], time.time() + 1)
            )
            stop.set()
            sampler.join()
        finally:
            code = server.stop()
    first, last = samples[0][1], samples[-1][1]
    growth = 100 * (last - first) / first
    result: dict[str, Any] = {
        "quick": args.quick,
        "rate_rps": round(rate, 1),
        "soak_s": size["soak_s"],
        "settings": SETTINGS,
        "status_counts": load["status_counts"],
        "ok_ms": load["ok_ms"],
        "rss_mib": samples,
        "rss_growth_pct": round(growth, 1),
        "goal": {"rss_growth_pct": f"< {GROWTH_GOAL_PCT}", "met": growth < GROWTH_GOAL_PCT
                 and set(load["status_counts"]) == {"200"}},
        "exit_code": code,
        "cpu": cpu(),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "service_soak.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
