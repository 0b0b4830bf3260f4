"""What ``export.py`` and ``export_peer.py`` measure with: interleaved timing rounds with
the peak RSS of each call, latency figures, per-round ratios, FLOP counts, the matmul
peak, synthetic slices and INT8 quantisation as ``tumorscope export`` does it."""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import reset_peak, status_mib
from torch.utils.flop_counter import FlopCounterMode

from tumorscope.export.quantise import float_fallbacks, kernel_profile, quantise
from tumorscope.runs.onnx import PATIENT_FILE

MATMUL_N = 2048


def latency(seconds: Sequence[float], slices: int) -> dict[str, float]:
    """p50/p95 milliseconds of ``seconds`` (one entry per call of ``slices`` slices) and
    slices per second at the p50."""
    ms = 1000.0 * np.asarray(seconds, dtype=np.float64)
    p50 = float(np.percentile(ms, 50))
    return {
        "p50_ms": round(p50, 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "n": len(seconds),
        "slices": slices,
        "slices_per_s": round(slices / (p50 / 1000.0), 2) if p50 > 0 else float("nan"),
    }


def round_ratio(times: Mapping[str, Sequence[float]], num: str, den: str) -> float | None:
    """Median over rounds of ``times[num][r] / times[den][r]`` (None if either is absent)."""
    if num not in times or den not in times:
        return None
    pairs = [a / b for a, b in zip(times[num], times[den], strict=False) if b > 0]
    return round(float(np.median(pairs)), 3) if pairs else None


def fastest(times: Mapping[str, Sequence[float]], among: Sequence[str] | None = None) -> str | None:
    """The variant of ``times`` (optionally only those in ``among``) with the lowest median."""
    keys = [k for k in times if (among is None or k in among) and times[k]]
    return min(keys, key=lambda k: float(np.median(times[k]))) if keys else None


def phantom_slices(n: int, side: int, seed: int = 0) -> np.ndarray:
    """``(n, 1, side, side)`` float32 slices like preprocessed MRI: an ellipse 'head' with a
    brighter blob that moves from slice to slice, noise, z-scored over the head."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(*[np.linspace(-1, 1, side, dtype=np.float32)] * 2, indexing="ij")
    head = (yy / 0.85) ** 2 + (xx / 0.7) ** 2 < 1.0
    out = np.empty((n, 1, side, side), dtype=np.float32)
    for k in range(n):
        cy, cx = rng.uniform(-0.4, 0.4, size=2)
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(0.005, 0.05)
        img = 100.0 * head + 80.0 * (blob & head) + rng.normal(0, 5, size=head.shape)
        inside = img[head]
        out[k, 0] = np.where(head, (img - inside.mean()) / (inside.std() + 1e-6), 0.0)
    return out


@dataclass
class Timings:
    """Seconds per round of each variant, and the peak RSS (MiB) during its calls and that
    peak's growth over the RSS before the call, the largest over rounds."""

    seconds: dict[str, list[float]]
    peak_mib: dict[str, float]
    growth_mib: dict[str, float]


def interleaved(
    calls: Mapping[str, Callable[[], Any]], rounds: int, cap_s: float, min_rounds: int = 2
) -> Timings:
    """One untimed call of each, then ``rounds`` rounds calling each in turn, so that a
    burst of load from other processes hits every variant alike (fewer rounds once
    ``cap_s`` seconds are spent, but at least ``min_rounds``)."""
    for fn in calls.values():
        fn()
    out = Timings({k: [] for k in calls}, dict.fromkeys(calls, 0.0), dict.fromkeys(calls, 0.0))
    start = time.perf_counter()
    for r in range(rounds):
        if r >= min_rounds and time.perf_counter() - start > cap_s:
            break
        for key, fn in calls.items():
            before = status_mib("VmRSS")
            exact = reset_peak()
            t0 = time.perf_counter()
            fn()
            out.seconds[key].append(time.perf_counter() - t0)
            peak = status_mib("VmHWM") if exact else status_mib("VmRSS")
            out.peak_mib[key] = max(out.peak_mib[key], peak)
            out.growth_mib[key] = max(out.growth_mib[key], peak - before)
    return out


def figures(
    timings: Timings, key: str, slices: int, nbytes: int, gflop: float, peak_gflop_s: float
) -> dict[str, Any]:
    """One variant × input entry: latency, size, RSS and achieved GFLOP/s (against the
    matmul peak) of ``timings``' variant ``key``."""
    lat = latency(timings.seconds[key], slices)
    achieved = gflop / (lat["p50_ms"] / 1000.0)
    return {
        **lat,
        "bytes": nbytes,
        "mb": round(nbytes / 1e6, 2),
        "peak_rss_mib": round(timings.peak_mib[key], 1),
        "rss_growth_mib": round(timings.growth_mib[key], 1),
        "gflop": round(gflop, 3),
        "achieved_gflop_per_s": round(achieved, 1),
        "share_of_matmul_peak": round(achieved / peak_gflop_s, 3),
    }


def seconds(fn: Callable[[], Any]) -> float:
    """Wall-clock seconds of one call of ``fn``."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def count_gflop(fn: Callable[[], Any]) -> float:
    """GFLOP of one call of ``fn``: PyTorch's convolutions and matrix products, a
    multiply-add counted as 2 (``torch.utils.flop_counter``, as ``model_size.py``)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def matmul_peak(n: int = MATMUL_N, reps: int = 10) -> dict[str, Any]:
    """Best FP32 GFLOP/s of an ``n × n`` ``torch.matmul`` over ``reps`` calls."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = min(seconds(lambda: torch.matmul(a, b)) for _ in range(reps))
    return {
        "n": n,
        "threads": torch.get_num_threads(),
        "gflop_per_s": round(2 * n**3 / best / 1e9, 1),
    }


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The exporter's and quantiser's chatter off stdout (the JSON line's), warnings off."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        yield


def quantise_like_export(
    src: Path, dst: Path, feeds: Mapping[str, Sequence[Mapping[str, np.ndarray]]]
) -> dict[str, Any]:
    """INT8 (MinMax) into ``dst`` of each graph of ``src`` that ``feeds`` names, then again
    with the nodes the first quantised graph's kernel profile shows running in float kept
    in float, as ``tumorscope export`` does; the patient graph is copied (it stays float)."""
    dst.mkdir(parents=True, exist_ok=True)
    if (src / PATIENT_FILE).is_file():
        shutil.copy2(src / PATIENT_FILE, dst / PATIENT_FILE)
    described: dict[str, Any] = {}
    for name, graph_feeds in feeds.items():
        with quiet():
            quantise(src / name, dst / name, graph_feeds, method="minmax")
            profile = kernel_profile(dst / name, graph_feeds[:1], runs=1)
            fallen = float_fallbacks(dst / name, profile)
            if fallen:
                quantise(src / name, dst / name, graph_feeds, method="minmax", exclude=fallen)
        described[name] = {"kept_float": len(fallen), "kept_float_nodes": fallen}
    return described
