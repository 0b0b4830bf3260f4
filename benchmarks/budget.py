"""The peer benchmark's rules: one CPU timer, step counts from a CPU budget, CI verdicts.

Every model of ``benchmarks/peers.py`` is trained through :meth:`CpuTimer.measure`, so the
same clock counts the same overheads for everyone: data loading from the shared cache,
the model's own validation passes, calibration and survival refits where a recipe has
them. A peer's step count comes from :func:`plan_steps`: a short probe training, whose
steps are timed one by one, gives a first estimate; a second probe at that estimated
size measures the whole training at full length (occasional slow steps, periodic
checkpoints and validation all included); the line through the two probes' costs gives
the steps that fill the budget. The plan (not the clock) then decides every later
training, so a run is reproducible from its recorded step counts.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

Clock = Callable[[], float]

# Verdicts of a paired comparison, from the delta's 95% CI (tumorscope minus peer).
VERDICTS = ("better", "non_inferior", "worse", "undecided")


@dataclass
class CpuTimer:
    """Seconds spent inside :meth:`measure` blocks, per name, on one clock.

    The default clock is process CPU time (user + system, all threads): on a shared machine
    wall time measures the neighbours, CPU time what the training costs.

    Attributes:
        clock: Monotonic seconds (``time.process_time``; tests pass ``time.perf_counter``).
        spent: Name → the seconds of every measured block, in order.
    """

    clock: Clock = time.process_time
    spent: dict[str, list[float]] = field(default_factory=dict)

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        """Add the block's seconds to ``spent[name]`` (also when it raises)."""
        t0 = self.clock()
        try:
            yield
        finally:
            self.spent.setdefault(name, []).append(self.clock() - t0)

    def last(self, name: str) -> float:
        """Seconds of the latest block measured as ``name``."""
        return self.spent[name][-1]


@dataclass(frozen=True)
class StepPlan:
    """Steps that fit one model into a CPU budget, and the probes they came from.

    Attributes:
        name: The model.
        target_seconds: The budget (the reference model's whole training).
        probe_steps: Steps of the short probe and of the full-length probe.
        probe_seconds: Their whole measured costs.
        step_seconds: Cost of one step: the slope through the two probes.
        fixed_seconds: Cost of a training apart from its steps (setup, validation,
            calibration): the intercept.
        steps: Planned steps: ``(target − fixed) / step``, rounded down, at least ``min_steps``.
    """

    name: str
    target_seconds: float
    probe_steps: tuple[int, ...]
    probe_seconds: tuple[float, ...]
    step_seconds: float
    fixed_seconds: float
    steps: int

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("target_seconds", "fixed_seconds"):
            d[k] = round(d[k], 2)
        d["probe_seconds"] = [round(v, 2) for v in self.probe_seconds]
        d["step_seconds"] = round(d["step_seconds"], 4)
        return d


Train = Callable[[int, Callable[[], None]], object]


def plan_steps(
    name: str,
    train: Train,
    target_seconds: float,
    timer: CpuTimer,
    *,
    probe_steps: int = 24,
    min_steps: int = 2,
) -> StepPlan:
    """Plan the steps of ``train`` so that one whole training costs ``target_seconds``.

    A short probe of ``probe_steps`` steps times every step: the mean step-to-step time
    (the last, which holds a final validation, left out) and the rest of the probe as
    fixed cost give a first estimate. Unless that estimate is within a few steps of the
    probe, a second probe trains at the estimated length, and the line through the two
    probes' whole costs gives the plan.

    Args:
        name: The model (its probes are recorded as ``probe:<name>`` in ``timer``).
        train: ``train(steps, tick)`` runs one whole training of ``steps`` steps, every
            overhead of the real training included, and calls ``tick()`` after each step.
        target_seconds: The budget.
        timer: The shared timer (the probes run under it, ticks read its clock).
        probe_steps: Steps of the short probe (≥ 3).
        min_steps: Fewest steps planned, however small the budget.

    Returns:
        The :class:`StepPlan` (cost model: ``fixed + steps · step``).

    Raises:
        ValueError: Fewer than 3 probe steps, or ``train`` did not tick once per step.
    """
    if probe_steps < 3:
        raise ValueError(f"probe_steps must be at least 3, got {probe_steps}")
    key = f"probe:{name}"
    ticks: list[float] = []
    with timer.measure(key):
        train(probe_steps, lambda: ticks.append(timer.clock()))
    if len(ticks) != probe_steps:
        raise ValueError(f"{name}: train ticked {len(ticks)} times for {probe_steps} steps")
    short = timer.last(key)
    deltas = [b - a for a, b in itertools.pairwise(ticks)][:-1]
    step = max(statistics.fmean(deltas), 1e-9)
    fixed = max(0.0, short - probe_steps * step)
    first = max(min_steps, math.floor((target_seconds - fixed) / step))
    steps_run, costs = [probe_steps], [short]
    if first > probe_steps + 2:
        with timer.measure(key):
            train(first, lambda: None)
        steps_run.append(first)
        costs.append(timer.last(key))
        slope = (costs[1] - costs[0]) / (first - probe_steps)
        if slope > 0:
            step = slope
            fixed = max(0.0, costs[0] - probe_steps * step)
    return StepPlan(
        name=name,
        target_seconds=target_seconds,
        probe_steps=tuple(steps_run),
        probe_seconds=tuple(costs),
        step_seconds=step,
        fixed_seconds=fixed,
        steps=max(min_steps, math.floor((target_seconds - fixed) / step)),
    )


def verdict(
    delta_ci95: tuple[float, float] | list[float], margin: float, *, lower_is_better: bool = False
) -> str:
    """The verdict of ``delta = tumorscope − peer`` from its 95% CI.

    ``better``: the whole CI favours tumorscope; ``non_inferior``: it is not better but the
    CI excludes a loss of ``margin`` or more; ``worse``: the whole CI favours the peer by
    more than nothing and reaches past the margin; ``undecided``: anything else (a CI
    across zero and the margin, or a missing CI).

    Args:
        delta_ci95: ``(lo, hi)`` of the paired difference.
        margin: Non-inferiority margin (≥ 0), in the metric's units.
        lower_is_better: The metric improves downwards (HD95): the rule is mirrored.
    """
    lo, hi = (float(v) for v in delta_ci95)
    if not (math.isfinite(lo) and math.isfinite(hi)) or margin < 0:
        return "undecided"
    if lower_is_better:
        lo, hi = -hi, -lo
    if lo > 0:
        return "better"
    if lo > -margin:
        return "non_inferior"
    if hi < 0:
        return "worse"
    return "undecided"
