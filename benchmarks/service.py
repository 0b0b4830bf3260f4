"""The HTTP service on loopback: its overhead over a direct ``Predictor.predict`` call, its
behaviour under an open-loop overload, and its memory across that load.

One real ``python -m tumorscope.cli serve`` process (uvicorn, one worker) on a free
loopback port, with ``TUMORSCOPE_TORCH_THREADS=1``, ``TUMORSCOPE_CONCURRENCY=1`` and
``TUMORSCOPE_QUEUE_SIZE=2`` (:data:`SERVER_SETTINGS`); this process uses one torch thread
too. The input is one 240×240 grey PNG made from a synthetic Kaggle-style image.

- ``overhead``: ``n`` direct ``Predictor.predict(path)`` calls in this process and ``n``
  ``POST /predict`` calls (httpx, one keep-alive connection), interleaved one by one so a
  change of the shared machine's load hits both alike; p50/p95 of each and
  ``overhead_ms_p50 = http p50 − direct p50`` (goal ≤ 10 ms).
- ``capacity_rps``: ``1 / p50`` of the sequential HTTP calls (one slot, no waiting).
- ``overload``: an open-loop generator (asyncio, ``httpx.AsyncClient``) sends ``POST
  /predict`` on a fixed schedule at 2× capacity for a bounded time (10 s ``--quick``, 30 s
  full; at most :data:`MAX_RATE` requests/s), each request from its scheduled send time and
  its latency timed from that time, so a late client or a queue is never hidden. Counts
  by status (only 200 and 503 are expected), p50/p99 of the 200s, p99 of the 503s (goal
  < 50 ms); ``send_lag_ms`` (how late the client sent) and ``*_from_send`` (latency from
  the actual send) tell the client's share of it from the server's, and ``server_side``
  (the server's ``/metrics`` histogram of ``/predict``, before/after difference) what its
  own clock saw. A separate prober process polls ``GET /health/live`` meanwhile (p99 goal ≤ 20
  ms), and for a short idle stretch before the load (``health_live_idle``).
- ``memory``: the server's ``VmRSS`` (``/proc/PID/status``) before and after the load.

Without ``--run`` the tiny test recipe (``configs/tiny.yaml``) is trained first on 8 tiny
synthetic patients (about 20 s): the service's overhead does not depend on the weights.
``--quick`` ≤ 1 min with ``--run``. Prints one JSON object on its last stdout line and
writes it to ``--out``/``service.json``.

    python benchmarks/service.py [--quick] [--run RUN] [--out bench-out]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from machine import cpu
from PIL import Image

from tumorscope.config import load_config
from tumorscope.inference.predictor import Predictor
from tumorscope.runtime import runtime_info
from tumorscope.synthetic import synthesize, synthesize_kaggle
from tumorscope.training.run import train_run

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key-0123456789abcdef"
SIDE = 240
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
#: The server's settings (as ``TUMORSCOPE_*`` variables): one slot, two queue places.
SERVER_SETTINGS = {"torch_threads": "1", "concurrency": "1", "queue_size": "2"}
#: Upper bound of the open-loop rate (requests/s): bounds the count and the client's CPU.
MAX_RATE = 400.0
#: The load client's connection pool (a request past it waits in the client, timed too).
MAX_CONNECTIONS = 128
SIZES: dict[str, dict[str, Any]] = {
    "quick": {"n": 30, "warmup": 3, "load_s": 10.0, "idle_health_s": 2.0},
    "full": {"n": 200, "warmup": 5, "load_s": 30.0, "idle_health_s": 5.0},
}
HEALTH_INTERVAL_S = 0.02
GOALS = {"overhead_ms_p50": 10.0, "busy_ms_p99": 50.0, "health_live_ms_p99": 20.0}

# The health prober: its own process (no torch, its own GIL), so the load generator's CPU
# does not show up as health latency. Polls one after another, each ``interval`` after
# the previous one's start, from the wall-clock ``start`` for ``duration`` seconds.
PROBER = r"""
import json, sys, time
import httpx
url, start, duration, interval = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
lat, errors = [], 0
with httpx.Client(timeout=10.0) as c:
    c.get(url)
    time.sleep(max(0.0, start - time.time()))
    end = time.perf_counter() + duration
    nxt = time.perf_counter()
    while nxt < end:
        t0 = time.perf_counter()
        try:
            ok = c.get(url).status_code == 200
        except httpx.HTTPError:
            ok = False
        if ok:
            lat.append(1000 * (time.perf_counter() - t0))
        else:
            errors += 1
        nxt += interval
        time.sleep(max(0.0, nxt - time.perf_counter()))
print(json.dumps({"ms": lat, "errors": errors}))
"""


# --------------------------------------------------------------------------- helpers


def pct(ms: list[float], *qs: int) -> dict[str, Any]:
    """``{"n", "p<q>"...}`` of latencies in milliseconds (None when there are none)."""
    a = np.asarray(ms, dtype=float)
    out: dict[str, Any] = {"n": int(a.size)}
    for q in qs:
        out[f"p{q}"] = round(float(np.percentile(a, q)), 2) if a.size else None
    out["max"] = round(float(a.max()), 2) if a.size else None
    return out


def status_kib(pid: int) -> dict[str, int]:
    """``VmRSS``, ``VmHWM`` (kB) and ``Threads`` of a process, from ``/proc/PID/status``."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


def predict_metrics(url: str) -> dict[str, dict[str, float]]:
    """``/predict``'s cumulative latency buckets (``le`` → count) and counts by status,
    from the server's Prometheus text."""
    text = httpx.get(f"{url}/metrics", headers={"X-API-Key": KEY}, timeout=10.0).text
    buckets: dict[str, float] = {}
    statuses: dict[str, float] = {}
    for line in text.splitlines():
        if 'route="/predict"' not in line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        labels = dict(
            kv.split("=", 1) for kv in name[name.index("{") + 1 : name.rindex("}")].split(",")
        )
        labels = {k: v.strip('"') for k, v in labels.items()}
        if name.startswith("tumorscope_request_seconds_bucket"):
            buckets[labels["le"]] = float(value)
        elif name.startswith("tumorscope_requests_total"):
            statuses[labels["status"]] = float(value)
    return {"buckets": buckets, "statuses": statuses}


def server_side(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict:
    """What the server's own clock says of the load's ``/predict`` requests (from arrival
    in the middleware to the answer): counts by status and the share over each bound."""
    total = after["buckets"].get("+Inf", 0.0) - before["buckets"].get("+Inf", 0.0)
    over = {}
    for le in ("0.05", "0.25", "1.0"):
        within = after["buckets"].get(le, 0.0) - before["buckets"].get(le, 0.0)
        over[f"share_over_{int(float(le) * 1000)}ms"] = (
            round(1 - within / total, 4) if total else None
        )
    counts = {
        k: int(v - before["statuses"].get(k, 0.0)) for k, v in sorted(after["statuses"].items())
    }
    return {"requests": int(total), "status_counts": counts, **over}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One ``tumorscope serve`` process on a free loopback port; :meth:`stop` in a finally."""

    def __init__(self, run: Path, work: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = work / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TUMORSCOPE_")}
        env.update({f"TUMORSCOPE_{k.upper()}": v for k, v in SERVER_SETTINGS.items()})
        env["TUMORSCOPE_API_KEY"] = KEY
        cmd = [sys.executable, "-m", "tumorscope.cli", "serve", "--run", str(run),
               "--port", str(self.port)]  # fmt: skip
        t0 = time.perf_counter()
        with self.log.open("w", encoding="utf-8") as out:  # the child keeps its own handle
            # cwd: a folder of its own, so no stray .env changes the settings
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=work, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - t0

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready in {START_TIMEOUT_S:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> int | None:
        """SIGTERM (the service drains), then wait; SIGKILL if it does not end in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# --------------------------------------------------------------------------- inputs


def train_tiny(work: Path) -> Path:
    """The tests' tiny run: 8 tiny synthetic patients, ``configs/tiny.yaml``."""
    data = work / "data"
    synthesize(
        profile="brain-mri", patients=8, out=data, kaggle=12, difficulty="easy", seed=1,
        shape=(48, 56, 40),
    )  # fmt: skip
    run = work / "run"
    train_run(cfg=load_config(ROOT / "configs" / "tiny.yaml"), data=[data], out=run,
              cache=work / "cache")  # fmt: skip
    return run


def make_png(work: Path) -> Path:
    """A 240×240 8-bit grey PNG of a synthetic Kaggle-style image with a tumour."""
    folder = work / "kaggle"
    synthesize_kaggle(count=2, out=folder, difficulty="easy", seed=0)
    src = sorted((folder / "yes").iterdir())[0]
    png = work / "slice240.png"
    with Image.open(src) as im:
        im.convert("L").resize((SIDE, SIDE), Image.Resampling.BICUBIC).save(png)
    return png


# --------------------------------------------------------------------------- phases


def overhead(server: Server, predictor: Predictor, png: Path, n: int, warmup: int) -> dict:
    """Direct and HTTP calls, interleaved one by one, after ``warmup`` untimed pairs."""
    body = png.read_bytes()
    direct, http = [], []
    with httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=60.0) as c:
        for i in range(warmup + n):
            t0 = time.perf_counter()
            predictor.predict(png)
            t1 = time.perf_counter()
            r = c.post("/predict", files={"file": ("slice.png", body, "image/png")})
            t2 = time.perf_counter()
            if r.status_code != 200:
                raise RuntimeError(f"/predict answered {r.status_code}: {r.text[:300]}")
            if i >= warmup:
                direct.append(1000 * (t1 - t0))
                http.append(1000 * (t2 - t1))
    d, h = pct(direct, 50, 95), pct(http, 50, 95)
    return {
        "n": n,
        "direct_ms": {**d, "min": round(min(direct), 2)},
        "http_ms": {**h, "min": round(min(http), 2)},
        "overhead_ms_p50": round(h["p50"] - d["p50"], 2),
        "overhead_ms_p95": round(h["p95"] - d["p95"], 2),
        "overhead_ms_min": round(min(http) - min(direct), 2),
    }


def start_prober(url: str, start_epoch: float, duration: float) -> subprocess.Popen[str]:
    args = [url, str(start_epoch), str(duration), str(HEALTH_INTERVAL_S)]
    return subprocess.Popen(
        [sys.executable, "-c", PROBER, *args], stdout=subprocess.PIPE, text=True
    )


def prober_result(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"n": 0, "errors": None, "failed": "prober timed out"}
    if proc.returncode != 0 or not out.strip():
        return {"n": 0, "errors": None, "failed": f"prober exit {proc.returncode}"}
    found = json.loads(out.strip().splitlines()[-1])
    return {**pct(found["ms"], 50, 99), "errors": found["errors"]}


async def open_loop(
    url: str, body: bytes, rate: float, duration: float, start_epoch: float
) -> dict[str, Any]:
    """``rate`` requests/s for ``duration`` s from the wall-clock ``start_epoch``, each sent
    at its scheduled time (never waiting for an answer) and timed from it."""
    n = int(rate * duration)
    # (status, latency ms, send lag ms, scheduled s from the start)
    records: list[tuple[str, float, float, float]] = []
    limits = httpx.Limits(
        max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
    )
    in_flight = {"now": 0, "peak": 0}
    async with httpx.AsyncClient(
        base_url=url, headers={"X-API-Key": KEY}, timeout=60.0, limits=limits
    ) as client:

        async def one(scheduled: float) -> None:
            lag = time.perf_counter() - scheduled
            in_flight["now"] += 1
            in_flight["peak"] = max(in_flight["peak"], in_flight["now"])
            try:
                r = await client.post("/predict", files={"file": ("s.png", body, "image/png")})
                status = str(r.status_code)
            except httpx.HTTPError as err:
                status = f"error:{type(err).__name__}"
            finally:
                in_flight["now"] -= 1
            ms = 1000 * (time.perf_counter() - scheduled)
            records.append((status, ms, 1000 * lag, scheduled - t0))

        t0 = time.perf_counter() + (start_epoch - time.time())
        await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
        tasks = []
        for i in range(n):
            scheduled = t0 + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled)))
        sent_s = time.perf_counter() - t0
        _, pending = await asyncio.wait(tasks, timeout=60.0) if tasks else (set(), set())
        for t in pending:
            t.cancel()
    by_status = Counter(r[0] for r in records)
    ok = [ms for s, ms, _, _ in records if s == "200"]
    busy = [ms for s, ms, _, _ in records if s == "503"]
    # The same latencies from the actual send: what the server (not a late client) added.
    busy_sent = [ms - lag for s, ms, lag, _ in records if s == "503"]
    ok_sent = [ms - lag for s, ms, lag, _ in records if s == "200"]
    # Every answer's latency by third of the window (by scheduled time): a tail that grows
    # from third to third is a backlog; one even across them, sporadic stalls.
    thirds = [
        pct([ms for _, ms, _, at in records if k * duration / 3 <= at < (k + 1) * duration / 3],
            50, 99)
        for k in range(3)
    ]  # fmt: skip
    return {
        "target_rate_rps": round(rate, 1),
        "duration_s": duration,
        "scheduled": n,
        "schedule_seconds": round(sent_s, 2),
        "status_counts": dict(sorted(by_status.items())),
        "unfinished": len(pending),
        "only_200_and_503": set(by_status) <= {"200", "503"} and not pending,
        "ok_ms": pct(ok, 50, 99),
        "busy_ms": pct(busy, 50, 99),
        "ok_ms_from_send": pct(ok_sent, 50, 99),
        "busy_ms_from_send": pct(busy_sent, 50, 99),
        "ok_rps": round(len(ok) / duration, 1),
        "send_lag_ms": pct([lag for _, _, lag, _ in records], 50, 99),
        "all_ms_by_third": thirds,
        "client_in_flight_peak": in_flight["peak"],
        "client_max_connections": MAX_CONNECTIONS,
    }


def measure(args: argparse.Namespace, size: dict[str, Any], work: Path) -> dict[str, Any]:
    t_all = time.perf_counter()
    run = args.run if args.run is not None else train_tiny(work)
    t_train = time.perf_counter() - t_all
    png = make_png(work)
    predictor = Predictor.from_run(run)
    server = Server(run, work)
    try:
        info: dict[str, Any] = {"start_seconds": round(server.start_seconds, 1)}
        found = overhead(server, predictor, png, size["n"], size["warmup"])
        capacity = 1000.0 / found["http_ms"]["p50"]
        rate = min(2.0 * capacity, MAX_RATE)
        body = png.read_bytes()
        health = f"{server.url}/health/live"

        idle = size["idle_health_s"]
        prober = start_prober(health, time.time() + 1.0, idle)
        idle_health = prober_result(prober, timeout=idle + 30.0)

        before = status_kib(server.proc.pid)
        metrics0 = predict_metrics(server.url)
        start_epoch = time.time() + 1.5  # the prober's imports and first connection first
        prober = start_prober(health, start_epoch, size["load_s"])
        try:
            load = asyncio.run(open_loop(server.url, body, rate, size["load_s"], start_epoch))
        finally:
            live = prober_result(prober, timeout=size["load_s"] + 30.0)
        time.sleep(0.5)  # let finished requests' buffers go
        after = status_kib(server.proc.pid)
        load["server_side"] = server_side(metrics0, predict_metrics(server.url))
        info["threads"] = after.get("Threads")
        if server.proc.poll() is not None:
            raise RuntimeError(f"server died during the load:\n{server.tail()}")
    finally:
        info["exit_code"] = server.stop()
    rss0, rss1 = before["VmRSS"] / 1024, after["VmRSS"] / 1024
    load["capacity_capped"] = rate < 2.0 * capacity
    load["health_live_ms"] = live
    load["health_live_idle_ms"] = idle_health
    memory = {
        "rss_before_mib": round(rss0, 1),
        "rss_after_mib": round(rss1, 1),
        "growth_mib": round(rss1 - rss0, 1),
        "growth_pct": round(100 * (rss1 - rss0) / rss0, 1),
        "peak_rss_mib": round(after["VmHWM"] / 1024, 1),
    }
    goals = {
        "overhead_ms_p50": {"value": found["overhead_ms_p50"], "goal": "<= 10"},
        "busy_ms_p99": {"value": load["busy_ms"]["p99"], "goal": "< 50"},
        "health_live_ms_p99": {"value": live.get("p99"), "goal": "<= 20"},
        "only_200_and_503": {"value": load["only_200_and_503"], "goal": "true"},
    }
    for name, g in goals.items():
        v = g["value"]
        if name == "only_200_and_503":
            g["met"] = bool(v)
        elif v is None:
            g["met"] = None
        elif name == "busy_ms_p99":
            g["met"] = v < GOALS[name]
        else:
            g["met"] = v <= GOALS[name]
    return {
        "quick": args.quick,
        "run": str(run) if args.run is not None else "tiny (trained here)",
        "image": {"shape": [SIDE, SIDE], "mode": "L", "png_bytes": png.stat().st_size},
        "server": {"settings": SERVER_SETTINGS, **info},
        "overhead": found,
        "capacity_rps": round(capacity, 1),
        "overload": load,
        "memory": memory,
        "goals": goals,
        "seconds": {"train": round(t_train, 1), "total": round(time.perf_counter() - t_all, 1)},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpu": cpu(),
        "runtime": runtime_info().as_dict(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="fewer calls, a 10 s load")
    ap.add_argument("--run", type=Path, help="a finished run to serve (default: train tiny)")
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    args = ap.parse_args()
    torch.set_num_threads(1)  # as the server's TUMORSCOPE_TORCH_THREADS=1
    size = SIZES["quick" if args.quick else "full"]
    with tempfile.TemporaryDirectory(prefix="tumorscope-service-") as tmp:
        result = measure(args, size, Path(tmp))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "service.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
