"""The peer benchmark's rules (benchmarks/budget.py): shared timer, step plans, verdicts."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from budget import CpuTimer, plan_steps, verdict  # noqa: E402


def _sleeping_trainer(fixed_s: float, step_s: float) -> tuple[list[int], object]:
    """A training whose whole run sleeps ``fixed_s`` (half before, half after the steps,
    as set-up and validation) plus ``step_s`` per step."""
    calls: list[int] = []

    def train(steps: int, tick: object) -> None:
        calls.append(steps)
        time.sleep(fixed_s / 2)
        for _ in range(steps):
            time.sleep(step_s)
            tick()  # type: ignore[operator]
        time.sleep(fixed_s / 2)

    return calls, train


def test_plan_gives_a_sleeping_peer_the_steps_that_fill_the_budget() -> None:
    # Wall clock: sleep is what this peer spends. fixed 0.10 s + 0.02 s/step; a budget of
    # 0.50 s leaves 0.40 s for 20 steps.
    timer = CpuTimer(clock=time.perf_counter)
    calls, train = _sleeping_trainer(0.10, 0.02)
    plan = plan_steps("sleepy", train, 0.50, timer, probe_steps=8)
    assert calls[0] == 8 and len(calls) == 2  # the short probe, then one at full length
    assert 17 <= calls[1] <= 21
    assert plan.step_seconds == pytest.approx(0.02, rel=0.25)
    assert plan.fixed_seconds == pytest.approx(0.10, abs=0.03)
    assert 17 <= plan.steps <= 21  # sleep overshoots a little, never undershoots
    assert len(timer.spent["probe:sleepy"]) == 2  # the probes ran on the shared timer
    # The planned training costs the budget on the same timer.
    with timer.measure("sleepy"):
        train(plan.steps, lambda: None)
    assert timer.last("sleepy") == pytest.approx(0.50, rel=0.15)


def test_plan_on_process_cpu_time_counts_work_not_sleep() -> None:
    # The default clock is CPU time: a peer that spins for a known CPU time per step is
    # planned from it, and sleeping (waiting on nothing) costs it nothing.
    timer = CpuTimer()

    def spin(seconds: float) -> None:
        t0 = time.process_time()
        while time.process_time() - t0 < seconds:
            pass

    def train(steps: int, tick: object) -> None:
        time.sleep(0.05)  # not CPU
        spin(0.03)
        for _ in range(steps):
            spin(0.01)
            tick()  # type: ignore[operator]

    plan = plan_steps("spinner", train, 0.33, timer, probe_steps=8)
    assert plan.step_seconds == pytest.approx(0.01, rel=0.3)
    assert plan.fixed_seconds == pytest.approx(0.03, abs=0.02)
    assert 27 <= plan.steps <= 33


class _Clock:
    """A fake CPU clock that a fake training advances."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_slow_last_step_lands_in_the_fixed_cost() -> None:
    # 2 s set-up, 1 s per step, 4 s of validation inside the last step: fixed 6, step 1.
    clock = _Clock()

    def train(steps: int, tick: object) -> None:
        clock.now += 2.0
        for i in range(steps):
            clock.now += 1.0 + (4.0 if i == steps - 1 else 0.0)
            tick()  # type: ignore[operator]

    plan = plan_steps("v", train, 26.0, CpuTimer(clock=clock), probe_steps=4)
    assert plan.probe_steps == (4, 20) and plan.probe_seconds == (10.0, 26.0)
    assert (plan.step_seconds, plan.fixed_seconds, plan.steps) == (1.0, 6.0, 20)


def test_the_full_length_probe_corrects_costs_a_short_probe_cannot_see() -> None:
    # A checkpoint every 10 steps costs 5 s more: invisible to a 4-step probe, which
    # alone would plan 94 steps (139 s). The line through both probes fits the budget.
    clock = _Clock()

    def cost(steps: int) -> float:
        return 6.0 + steps + 5.0 * (steps // 10)

    def train(steps: int, tick: object) -> None:
        clock.now += 6.0
        for i in range(1, steps + 1):
            clock.now += 1.0 + (5.0 if i % 10 == 0 else 0.0)
            tick()  # type: ignore[operator]

    plan = plan_steps("ckpt", train, 100.0, CpuTimer(clock=clock), probe_steps=4)
    assert plan.probe_steps == (4, 94)
    assert cost(plan.steps) == pytest.approx(100.0, rel=0.08)
    assert cost(plan.steps) < cost(94)


def test_plan_floors_at_min_steps_and_rejects_bad_probes() -> None:
    timer = CpuTimer(clock=time.perf_counter)
    _, train = _sleeping_trainer(0.05, 0.01)
    assert plan_steps("late", train, 0.0, timer, probe_steps=4, min_steps=2).steps == 2
    with pytest.raises(ValueError, match="at least 3"):
        plan_steps("bad", train, 1.0, timer, probe_steps=2)
    with pytest.raises(ValueError, match="ticked 0 times"):
        plan_steps("silent", lambda steps, tick: None, 1.0, timer, probe_steps=4)


def test_timer_records_a_block_that_raises() -> None:
    ticks = iter([10.0, 12.5])
    timer = CpuTimer(clock=lambda: next(ticks))
    with pytest.raises(RuntimeError), timer.measure("x"):
        raise RuntimeError("boom")
    assert timer.spent == {"x": [2.5]}


@pytest.mark.parametrize(
    ("ci", "lower_is_better", "expected"),
    [
        ((0.01, 0.05), False, "better"),  # whole CI above zero
        ((-0.01, 0.03), False, "non_inferior"),  # across zero, above −margin
        ((-0.015, -0.005), False, "non_inferior"),  # below zero but within the margin
        ((-0.08, -0.03), False, "worse"),  # whole CI below zero, past the margin
        ((-0.05, 0.04), False, "undecided"),  # across zero and the margin
        ((-0.02, 0.01), False, "undecided"),  # lower bound exactly at −margin: not excluded
        ((-4.0, -1.0), True, "better"),  # HD95: lower is better
        ((1.0, 3.0), True, "worse"),
        ((-1.0, 1.5), True, "non_inferior"),
        ((float("nan"), 0.1), False, "undecided"),
    ],
)
def test_verdict_from_ci_bounds(
    ci: tuple[float, float], lower_is_better: bool, expected: str
) -> None:
    margin = 2.0 if lower_is_better else 0.02
    assert verdict(ci, margin, lower_is_better=lower_is_better) == expected
