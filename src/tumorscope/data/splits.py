"""Patient-level, stratified splits: a fixed test set plus k cross-validation folds.

The test split is a stratified fraction of patients; the rest is divided into stratified
folds; ``val`` is one fold and ``train`` the others. Strata combine source, tumour
presence and event/censored/none, and are coarsened (last level dropped first) until
every stratum is large enough for scikit-learn's splitters. Tiny cohorts get fewer folds,
with a warning; an empty split is logged, never an exception.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from tumorscope.data.types import DataError, Outcome

log = logging.getLogger(__name__)

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


class SplitError(DataError):
    """A split file is malformed, or a patient is in two splits."""


@dataclass(frozen=True)
class Splits:
    """Patient ids per split.

    Attributes:
        train: Training patients (all folds but ``fold``).
        val: Validation patients (fold ``fold``).
        test: Held-out test patients.
        folds: Cross-validation folds over the non-test patients.
        fold: Index of the fold used as ``val``.
        seed: Seed the splits were drawn with.
        n_folds: Folds asked for (``len(folds)`` may be fewer for tiny cohorts).
        test_fraction: Test fraction asked for.
    """

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    folds: tuple[tuple[str, ...], ...]
    fold: int = 0
    seed: int = 0
    n_folds: int = 0
    test_fraction: float = 0.0

    def patients(self, split: str) -> tuple[str, ...]:
        """Patients of ``train``, ``val``, ``test`` or ``all``."""
        if split == "all":
            return self.train + self.val + self.test
        if split not in SPLIT_NAMES:
            raise ValueError(f"unknown split {split!r}; expected one of {[*SPLIT_NAMES, 'all']}")
        return tuple(getattr(self, split))

    def with_fold(self, fold: int) -> Splits:
        """The same test set and folds with fold ``fold`` as validation."""
        if not 0 <= fold < len(self.folds):
            raise ValueError(f"fold {fold} not in [0, {len(self.folds)})")
        train = tuple(p for i, f in enumerate(self.folds) if i != fold for p in f)
        return dataclasses.replace(self, train=train, val=self.folds[fold], fold=fold)

    def to_dict(self) -> dict[str, Any]:
        """``{"train", "val", "test", "folds", "fold", "seed"}`` with lists."""
        return {
            "train": list(self.train),
            "val": list(self.val),
            "test": list(self.test),
            "folds": [list(f) for f in self.folds],
            "fold": self.fold,
            "seed": self.seed,
            "n_folds": self.n_folds,
            "test_fraction": self.test_fraction,
        }


def check_disjoint(splits: Mapping[str, Sequence[str]], path: str | Path = "<splits>") -> None:
    """Raise :class:`SplitError` if a patient appears in two splits (or twice in one)."""
    seen: dict[str, str] = {}
    for name, ids in splits.items():
        for pid in ids:
            if pid in seen:
                where = "twice in" if seen[pid] == name else f"in both {seen[pid]!r} and"
                raise SplitError(path, f"patient {pid!r} is {where} {name!r}")
            seen[pid] = name


def _strata_key(levels: Sequence[Sequence[str]], depth: int) -> list[str]:
    return ["|".join(lv[:depth]) for lv in levels]


def _coarsen(
    levels: Sequence[Sequence[str]], min_count: int, max_classes: int | None = None
) -> list[str] | None:
    """Finest strata with every class ``>= min_count`` members and at most ``max_classes``
    classes (None: no stratification possible)."""
    depth = len(levels[0]) if levels else 0
    for d in range(depth, 0, -1):
        key = _strata_key(levels, d)
        counts = Counter(key)
        if len(counts) < 2 or min(counts.values()) < min_count:
            continue
        if max_classes is None or len(counts) <= max_classes:
            return key
    return None


def make_splits(
    patients: Sequence[str],
    strata: Sequence[Sequence[str]] | None = None,
    *,
    n_folds: int = 5,
    fold: int = 0,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Splits:
    """Draw patient-level stratified splits.

    Args:
        patients: Unique patient ids.
        strata: Per patient, stratification levels from coarse to fine, e.g.
            ``("brats", "tumour", "event")``; finer levels are dropped when too rare.
        n_folds: Folds over the non-test patients; clamped (with a warning) to what the
            cohort allows.
        fold: Fold used as validation; wrapped into the clamped range with a warning.
        test_fraction: Fraction of patients held out as test (rounded; 0 → empty test).
        seed: Seed of the shuffles.

    Returns:
        :class:`Splits`; splits may be empty for tiny cohorts (logged as a warning).

    Raises:
        SplitError: Duplicate patient ids.
    """
    ids = list(patients)
    check_disjoint({"patients": ids})
    levels = [tuple(s) for s in strata] if strata is not None else [("",)] * len(ids)
    if len(levels) != len(ids):
        raise ValueError(f"{len(levels)} strata for {len(ids)} patients")
    order = np.argsort(ids, kind="stable")  # splits depend on the set of ids, not their order
    ids = [ids[i] for i in order]
    levels = [levels[i] for i in order]

    n = len(ids)
    n_test = round(test_fraction * n) if n >= 3 else 0
    n_test = min(n_test, n - 2) if n_test else 0  # leave two patients for train + val
    if test_fraction > 0 and n_test == 0:
        log.warning(
            "%d patients: too few for a test split (test_fraction=%s); test is empty",
            n,
            test_fraction,
        )
    rest_idx = list(range(n))
    test_idx: list[int] = []
    if n_test > 0:
        # train_test_split needs >= 2 members per class and a class count <= each side.
        key = _coarsen(levels, 2, min(n_test, n - n_test))
        rest_arr, test_arr = train_test_split(
            np.arange(n), test_size=n_test, random_state=seed, shuffle=True, stratify=key
        )
        rest_idx, test_idx = sorted(rest_arr.tolist()), sorted(test_arr.tolist())

    k = min(n_folds, len(rest_idx))
    if k < n_folds:
        log.warning(
            "%d non-test patients: n_folds clamped from %d to %d", len(rest_idx), n_folds, k
        )
    folds: list[list[int]] = []
    if k >= 2:
        rest_levels = [levels[i] for i in rest_idx]
        key = _coarsen(rest_levels, k)
        splitter = (
            StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
            if key
            else KFold(n_splits=k, shuffle=True, random_state=seed)
        )
        y = key if key is not None else np.zeros(len(rest_idx))
        folds = [
            sorted(rest_idx[j] for j in va) for _, va in splitter.split(np.zeros(len(rest_idx)), y)
        ]
    elif rest_idx:
        folds = [rest_idx]
    id_folds = tuple(tuple(ids[i] for i in f) for f in folds)
    test = tuple(ids[i] for i in test_idx)
    if not id_folds:
        log.warning("no patients left for training/validation")
        return Splits((), (), test, (), 0, seed, n_folds, test_fraction)
    if fold >= len(id_folds):
        log.warning(
            "data.fold=%d but only %d folds; using fold %d",
            fold,
            len(id_folds),
            fold % len(id_folds),
        )
        fold %= len(id_folds)
    out = Splits((), (), test, id_folds, 0, seed, n_folds, test_fraction).with_fold(fold)
    for name in SPLIT_NAMES:
        if not out.patients(name):
            log.warning("split %r is empty (%d patients in all)", name, n)
    return out


def save_splits(splits: Splits, path: str | Path) -> None:
    """Write ``splits.json`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(splits.to_dict(), f, indent=1)
    os.replace(tmp, path)


def load_splits(path: str | Path) -> Splits:
    """Read and check a ``splits.json``.

    Raises:
        SplitError: Unreadable file, missing keys, a patient in two splits or two folds,
            or ``train``/``val`` inconsistent with ``folds``.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SplitError(path, f"cannot read splits: {e}") from None
    if not isinstance(raw, dict) or any(k not in raw for k in (*SPLIT_NAMES, "folds")):
        raise SplitError(path, f"expected keys {[*SPLIT_NAMES, 'folds']}")
    check_disjoint({k: raw[k] for k in SPLIT_NAMES}, path)
    check_disjoint(
        {f"folds[{i}]": f for i, f in enumerate(raw["folds"])} | {"test": raw["test"]}, path
    )
    folds = tuple(tuple(str(p) for p in f) for f in raw["folds"])
    fold = int(raw.get("fold", 0))
    splits = Splits(
        tuple(raw["train"]),
        tuple(raw["val"]),
        tuple(raw["test"]),
        folds,
        fold,
        int(raw.get("seed", 0)),
        int(raw.get("n_folds", len(folds))),
        float(raw.get("test_fraction", 0.0)),
    )
    if folds and set(splits.with_fold(fold).train) != set(splits.train):
        raise SplitError(path, f"'train' is not the union of the folds other than fold {fold}")
    if folds and set(folds[fold]) != set(splits.val):
        raise SplitError(path, f"'val' is not fold {fold}")
    return splits


def patient_strata(
    slices: pd.DataFrame, outcomes: Mapping[str, Outcome]
) -> tuple[list[str], list[tuple[str, ...]]]:
    """Patients of a slice table and their strata ``(source, T|N, E|C|-)``.

    Args:
        slices: Slice table with ``patient_id``, ``source`` and ``tumour`` (1, 0 or -1).
        outcomes: Patient id → outcome (event ``E``, censored ``C``, none ``-``).
    """
    per = slices.groupby("patient_id", sort=True).agg(
        source=("source", "first"), tumour=("tumour", "max")
    )
    pids = [str(p) for p in per.index]
    strata: list[tuple[str, ...]] = []
    for pid, row in zip(pids, per.itertuples(), strict=True):
        o = outcomes.get(pid)
        event = "-" if o is None else ("E" if o.event else "C")
        strata.append((str(row.source), "T" if int(row.tumour) > 0 else "N", event))
    return pids, strata


def resolve_splits(
    path: str | Path,
    patients: Sequence[str],
    strata: Sequence[Sequence[str]],
    *,
    n_folds: int,
    fold: int,
    test_fraction: float,
    seed: int,
) -> Splits:
    """Reuse ``path`` if drawn for exactly ``patients`` with the same seed, ``n_folds`` and
    ``test_fraction``; else draw new splits.

    A reused file keeps its test set and folds; only the validation fold follows ``fold``.
    """
    path = Path(path)
    if path.is_file():
        old = load_splits(path)
        same = (old.seed, old.n_folds, old.test_fraction) == (seed, n_folds, test_fraction)
        if set(old.patients("all")) == set(patients) and same and old.folds:
            k = fold if fold < len(old.folds) else fold % len(old.folds)
            log.info("reusing %s", path)
            return old if old.fold == k else old.with_fold(k)
        log.warning(
            "%s: patients, seed, n_folds or test_fraction changed; drawing new splits", path
        )
    return make_splits(
        patients, strata, n_folds=n_folds, fold=fold, test_fraction=test_fraction, seed=seed
    )


def cross_split_duplicates(slices: pd.DataFrame) -> list[dict[str, Any]]:
    """Exact-duplicate images (same ``sha1``) whose patients sit in different splits.

    Args:
        slices: Slice table with ``patient_id``, ``sha1`` ('' for volume slices) and ``split``.

    Returns:
        ``{"sha1", "patients", "splits"}`` per duplicated file content; each is logged.
    """
    out: list[dict[str, Any]] = []
    img = slices[slices["sha1"] != ""]
    for sha, grp in img.groupby("sha1"):
        pats = sorted(set(grp["patient_id"]))
        spl = sorted(set(grp["split"]))
        if len(pats) > 1 and len(spl) > 1:
            out.append({"sha1": str(sha), "patients": pats, "splits": spl})
            log.warning("exact-duplicate image in splits %s: %s", spl, pats)
    return out
