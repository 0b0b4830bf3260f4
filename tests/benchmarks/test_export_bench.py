"""benchmarks/export_lib.py, the helpers of benchmarks/export.py: latency figures,
per-round ratios, the interleaved timing loop and the synthetic slices."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from export_lib import fastest, interleaved, latency, phantom_slices, round_ratio  # noqa: E402


def test_latency_reports_percentiles_and_throughput_at_the_median() -> None:
    got = latency([0.010, 0.020, 0.030, 0.040], slices=8)
    assert got["p50_ms"] == pytest.approx(25.0)
    assert got["p95_ms"] == pytest.approx(38.5)  # numpy's linear interpolation
    assert got["n"] == 4 and got["slices"] == 8
    assert got["slices_per_s"] == pytest.approx(8 / 0.025)


def test_round_ratio_is_the_median_of_each_rounds_ratio() -> None:
    # A burst of load in round 2 hits both variants: the per-round ratio stays 0.5.
    times = {"a": [1.0, 10.0, 1.0], "b": [2.0, 20.0, 2.0]}
    assert round_ratio(times, "a", "b") == 0.5
    assert round_ratio(times, "a", "missing") is None
    assert round_ratio({"a": [1.0], "b": [0.0]}, "a", "b") is None


def test_fastest_takes_the_lowest_median_among_the_named_variants() -> None:
    times = {"eager": [3.0, 3.0], "ort_fp32": [2.0, 9.0, 2.0], "ort_int8": [1.0]}
    assert fastest(times) == "ort_int8"
    assert fastest(times, among=("eager", "ort_fp32")) == "ort_fp32"
    assert fastest(times, among=("compiled",)) is None
    assert fastest({}) is None


def test_interleaved_warms_up_then_alternates_and_stops_at_the_cap() -> None:
    order: list[str] = []
    calls = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    got = interleaved(calls, rounds=3, cap_s=60.0)
    assert order == ["a", "b"] * 4  # one untimed warm-up call each, then three rounds
    assert [len(v) for v in got.seconds.values()] == [3, 3]
    assert set(got.peak_mib) == set(got.growth_mib) == {"a", "b"}
    if Path("/proc/self/status").is_file():  # Linux: the RSS figures come from there
        assert all(v > 0 for v in got.peak_mib.values())
    # A spent cap still leaves ``min_rounds`` rounds.
    capped = interleaved(calls, rounds=50, cap_s=0.0, min_rounds=2)
    assert [len(v) for v in capped.seconds.values()] == [2, 2]


def test_phantom_slices_are_deterministic_z_scored_heads_of_any_side() -> None:
    x = phantom_slices(3, 37, seed=5)
    assert x.shape == (3, 1, 37, 37) and x.dtype == np.float32
    assert np.array_equal(x, phantom_slices(3, 37, seed=5))
    assert not np.array_equal(x, phantom_slices(3, 37, seed=6))
    assert np.all(x[:, :, 0, 0] == 0.0)  # background outside the head
    inside = x[0, 0][x[0, 0] != 0]
    assert abs(float(inside.mean())) < 0.05 and abs(float(inside.std()) - 1.0) < 0.05
