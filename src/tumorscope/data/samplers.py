"""Training samplers: source-balanced slices, and patient bags for per-patient survival.

Both are deterministic given a seed and draw on demand (``draw(n)``, ``next_batch()``)
from one stream: training asks for one batch per step and stops on ``max_steps``, not on
epochs, so there are no epochs to iterate. Hand-written: torch's
``WeightedRandomSampler`` covers the balanced draw but no library sampler groups k slices
of m patients with a guaranteed number of events.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def balanced_weights(groups: Sequence[int] | np.ndarray) -> np.ndarray:
    """Per-item probabilities giving every group (e.g. source) the same total mass."""
    g = np.asarray(groups)
    if g.size == 0:
        return np.zeros(0)
    _, inverse, counts = np.unique(g, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inverse]
    return np.asarray(w / w.sum(), dtype=np.float64)


class BalancedSampler:
    """Draw items with replacement so that every group is equally likely.

    Args:
        indices: Dataset indices eligible for drawing (e.g. slices carrying a target).
        groups: Group per eligible index (source id), same length as ``indices``.
        seed: Seed of the draw stream.
    """

    def __init__(
        self,
        indices: Sequence[int] | np.ndarray,
        groups: Sequence[int] | np.ndarray,
        *,
        seed: int = 0,
    ) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        if len(groups) != self.indices.size:
            raise ValueError(f"{len(groups)} groups for {self.indices.size} indices")
        self.weights = balanced_weights(groups)
        self._rng = np.random.default_rng(seed)

    def draw(self, n: int) -> np.ndarray:
        """``(n,)`` int64: the next ``n`` indices of the stream (empty when nothing is eligible)."""
        if self.indices.size == 0 or n <= 0:
            return np.zeros(0, dtype=np.int64)
        return self._rng.choice(self.indices, size=n, replace=True, p=self.weights)


def share_counts(n: int, shares: Sequence[float]) -> list[int]:
    """``n`` split by ``shares`` (normalised) with the largest-remainder rule: sums to ``n``."""
    total = float(sum(shares))
    if n <= 0 or total <= 0:
        return [0] * len(shares)
    exact = [n * s / total for s in shares]
    counts = [int(np.floor(e)) for e in exact]
    order = sorted(range(len(shares)), key=lambda i: (counts[i] - exact[i], i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


class ShareSampler:
    """Every draw of ``n`` holds a fixed share from each pool (e.g. volume slices and 2D
    images), each pool drawn by its own :class:`BalancedSampler`, in shuffled order.

    Args:
        pools: One sampler per pool.
        shares: Share of each pool in every draw (normalised; counts by
            :func:`share_counts`, so a batch of 16 at share 0.25 holds exactly 4).
        seed: Seed of the shuffle.
    """

    def __init__(
        self, pools: Sequence[BalancedSampler], shares: Sequence[float], *, seed: int = 0
    ) -> None:
        if len(pools) != len(shares) or not pools:
            raise ValueError(f"{len(pools)} pools for {len(shares)} shares")
        if any(s < 0 for s in shares) or sum(shares) <= 0:
            raise ValueError(f"shares must be >= 0 with a positive sum, got {list(shares)}")
        self.pools = list(pools)
        self.shares = [float(s) for s in shares]
        self._rng = np.random.default_rng(seed)

    def draw(self, n: int) -> np.ndarray:
        """``(n,)`` int64: the next ``n`` indices, ``share_counts(n, shares)`` from each pool."""
        counts = share_counts(n, self.shares)
        parts = [pool.draw(k) for pool, k in zip(self.pools, counts, strict=True)]
        out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return np.asarray(self._rng.permutation(out), dtype=np.int64)


class PatientBagSampler:
    """Batches of ``bag_slices`` slices from each of ``bag_patients`` patients.

    Each batch holds ``min(min_events, events available, bag_patients)`` patients with an
    observed event, so the per-patient Cox loss always has events when the split has them.
    A patient with fewer slices than ``bag_slices`` contributes repeats (duplicating a
    patient's slices does not change the per-patient loss). Slices of a patient are
    contiguous in the batch. When ``batch_size`` exceeds ``bag_patients·bag_slices`` and a
    ``fill`` sampler is given, the batch is topped up with its draws (slices for the other
    tasks of the stage).

    Args:
        patient_of_item: Patient id per candidate dataset index (survival patients only).
        items: Dataset indices of those items (default ``range(len(patient_of_item))``).
        events: Patient id → event observed.
        bag_patients: Patients per batch (m), clamped to the number of patients.
        bag_slices: Slices per patient (k).
        seed: Seed.
        min_events: Events guaranteed per batch when available.
        fill: Sampler topping batches up to ``batch_size``.
        batch_size: Total batch size (default ``m·k``).
    """

    def __init__(
        self,
        patient_of_item: Sequence[str],
        events: dict[str, bool],
        *,
        items: Sequence[int] | np.ndarray | None = None,
        bag_patients: int,
        bag_slices: int,
        seed: int = 0,
        min_events: int = 2,
        fill: BalancedSampler | ShareSampler | None = None,
        batch_size: int | None = None,
    ) -> None:
        idx = (
            np.arange(len(patient_of_item)) if items is None else np.asarray(items, dtype=np.int64)
        )
        if idx.size != len(patient_of_item):
            raise ValueError(f"{idx.size} items for {len(patient_of_item)} patient ids")
        by_patient: dict[str, list[int]] = {}
        for i, p in zip(idx.tolist(), patient_of_item, strict=True):
            by_patient.setdefault(p, []).append(i)
        self.patients = sorted(by_patient)
        self.items = {p: np.asarray(v, dtype=np.int64) for p, v in by_patient.items()}
        self.event_patients = [p for p in self.patients if events.get(p, False)]
        self.m = min(bag_patients, len(self.patients))
        self.k = bag_slices
        self.n_events = min(min_events, len(self.event_patients), self.m)
        self.fill = fill
        self.batch_size = batch_size if batch_size is not None else self.m * self.k
        self._rng = np.random.default_rng(seed)

    def next_batch(self) -> list[int]:
        """One batch of dataset indices: bags of slices of distinct patients (events first),
        then fill."""
        rng = self._rng
        chosen = (
            list(rng.choice(self.event_patients, size=self.n_events, replace=False))
            if self.n_events
            else []
        )
        taken = set(chosen)
        others = [p for p in self.patients if p not in taken]
        chosen += list(rng.choice(others, size=self.m - len(chosen), replace=False))
        order = rng.permutation(len(chosen))
        batch: list[int] = []
        for j in order:
            its = self.items[str(chosen[j])]
            if its.size >= self.k:
                pick = rng.choice(its, size=self.k, replace=False)
            else:
                pick = np.concatenate([its, rng.choice(its, size=self.k - its.size, replace=True)])
            batch.extend(pick.tolist())
        if self.fill is not None and self.batch_size > len(batch):
            batch.extend(self.fill.draw(self.batch_size - len(batch)).tolist())
        return batch
