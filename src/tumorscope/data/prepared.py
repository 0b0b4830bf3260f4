"""``PreparedData``: the slice caches, patient splits, outcomes and imputer as one object.

:func:`tumorscope.data.cache.prepare` builds the caches and calls :func:`assemble`;
:func:`tumorscope.data.cache.load_prepared` reopens them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tumorscope.config import Config
from tumorscope.data.imputation import ClinicalImputer
from tumorscope.data.spec import PreprocessSpec
from tumorscope.data.splits import (
    SPLIT_NAMES,
    Splits,
    check_disjoint,
    cross_split_duplicates,
    patient_strata,
    resolve_splits,
    save_splits,
)
from tumorscope.data.types import Outcome

log = logging.getLogger(__name__)

CACHE_DIR = "cache"
SPLITS_FILE = "splits.json"
PREPARED_FILE = "prepared.json"
SLICE_COLUMNS = (
    "patient_id",
    "source",
    "slice_index",
    "tumour",
    "has_tumour",
    "tumour_type",
    "has_mask",
    "foreground",
    "sha1",
    "plane",
    "contrasts",
)


def read_slice_table(folder: Path) -> pd.DataFrame:
    """The ``slices.csv`` of a cache folder with fixed dtypes."""
    df = pd.read_csv(
        folder / "slices.csv",
        dtype={"patient_id": str, "source": str, "sha1": str},
        keep_default_na=False,
    )
    for col in ("slice_index", "tumour", "tumour_type", "plane", "contrasts"):
        df[col] = df[col].astype(np.int64)
    for col in ("has_tumour", "has_mask"):
        df[col] = df[col].astype(str).str.lower().isin(("true", "1"))
    df["foreground"] = df["foreground"].astype(np.float32)
    return df


@dataclass
class PreparedData:
    """Everything :func:`prepare` produced: caches, slice table, splits, outcomes, imputer.

    Attributes:
        root: The ``OUT`` folder.
        cfg: Config the data was prepared with.
        spec: Preprocessing spec (saved with every run).
        caches: Cache folder names under ``root/cache``, indexed by the ``cache`` column.
        slices: One row per cached slice: ``patient_id, source, slice_index, tumour,
            has_tumour, tumour_type, has_mask, foreground, sha1, cache, row, split``.
        splits: Patient-level splits.
        outcomes: Patient id → survival outcome (patients in the data only).
        true_risk: Patient id → true log-hazard (synthetic data), if known.
        imputer: Clinical imputation fitted on the training split only.
        problems: Faults met while discovering or building (``"PATH: fault"``).
        duplicates: Exact-duplicate 2D images: ``{"sha1", "patients", "splits"}`` each.
        built: Cache folders built by this call.
        reused: Cache folders reused by this call.
    """

    root: Path
    cfg: Config
    spec: PreprocessSpec
    caches: list[str]
    slices: pd.DataFrame
    splits: Splits
    outcomes: dict[str, Outcome]
    true_risk: dict[str, float]
    imputer: ClinicalImputer
    problems: list[str]
    duplicates: list[dict[str, Any]]
    built: list[str] | None = None
    reused: list[str] | None = None

    @property
    def clinical_columns(self) -> tuple[str, ...]:
        """Column order of the clinical vector."""
        return self.imputer.columns

    def cache_dir(self, i: int) -> Path:
        """Folder of cache ``i``."""
        return self.root / CACHE_DIR / self.caches[i]

    def patients(self, split: str) -> list[str]:
        """Patient ids of ``train``, ``val``, ``test`` or ``all``."""
        return list(self.splits.patients(split))

    def slice_table(self, split: str = "all") -> pd.DataFrame:
        """Rows of :attr:`slices` whose patient is in ``split``."""
        if split == "all":
            return self.slices
        return self.slices[self.slices["split"] == split]

    def with_fold(self, fold: int) -> PreparedData:
        """The same data with cross-validation fold ``fold`` as validation (imputer refitted)."""
        splits = self.splits.with_fold(fold)
        return _finish(self, splits)

    def restore_records(self) -> dict[str, dict[str, list[int]]]:
        """Patient id → ``{"shape": [X, Y, Z], "box": [x0, y0, side]}`` of volume patients."""
        out: dict[str, dict[str, list[int]]] = {}
        for i in range(len(self.caches)):
            path = self.cache_dir(i) / "restore.json"
            if path.is_file():
                out.update(json.loads(path.read_text()))
        return out

    def __str__(self) -> str:
        lines = [f"prepared data in {self.root} (spec {self.spec.hash()})"]
        for i, name in enumerate(self.caches):
            sub = self.slices[self.slices["cache"] == i]
            lines.append(
                f"  cache {name}: {len(sub)} slices, {sub['patient_id'].nunique()} patients"
            )
        for name in SPLIT_NAMES:
            sub = self.slice_table(name)
            lines.append(f"  {name}: {len(self.patients(name))} patients, {len(sub)} slices")
        lines.append(
            f"  folds: {[len(f) for f in self.splits.folds]} (validation fold {self.splits.fold})"
        )
        lines.append(
            f"  outcomes: {len(self.outcomes)}; clinical columns: {list(self.clinical_columns)}"
        )
        if self.duplicates:
            lines.append(f"  exact-duplicate images across splits: {len(self.duplicates)}")
        if self.problems:
            lines.append(f"  problems: {len(self.problems)} (see the log)")
        return "\n".join(lines)


def _finish(p: PreparedData, splits: Splits) -> PreparedData:
    """Attach ``splits``: split column, leak check, duplicate report, imputer fit on train."""
    check_disjoint({k: splits.patients(k) for k in SPLIT_NAMES}, p.root / SPLITS_FILE)
    where = {pid: k for k in SPLIT_NAMES for pid in splits.patients(k)}
    slices = p.slices.assign(split=p.slices["patient_id"].map(where).fillna("none"))
    dups = cross_split_duplicates(slices)
    columns = sorted({c for o in p.outcomes.values() for c in o.clinical})
    train_rows = [p.outcomes[pid].clinical for pid in splits.train if pid in p.outcomes]
    imputer = ClinicalImputer.fit(train_rows, columns)
    return PreparedData(
        p.root, p.cfg, p.spec, p.caches, slices, splits, p.outcomes, p.true_risk, imputer,
        p.problems, dups, p.built, p.reused,
    )  # fmt: skip


def assemble(
    out: Path,
    cfg: Config,
    spec: PreprocessSpec,
    names: Sequence[str],
    state: dict[str, Any],
    *,
    write: bool,
) -> PreparedData:
    """Join cache tables, reuse or draw splits, fit the imputer; write ``splits.json`` if ``write``."""
    tables = []
    seen: set[str] = set()
    for i, name in enumerate(names):
        t = read_slice_table(out / CACHE_DIR / name).assign(cache=i)
        t["row"] = np.arange(len(t), dtype=np.int64)
        clash = t["patient_id"].isin(seen)
        if clash.any():  # the same id in two sources: keep both, prefixed by source
            log.warning(
                "%d patient ids of %s also occur in another source; prefixed", clash.sum(), name
            )
            t.loc[clash, "patient_id"] = t.loc[clash, "source"] + ":" + t.loc[clash, "patient_id"]
        seen.update(t["patient_id"])
        tables.append(t)
    slices = (
        pd.concat(tables, ignore_index=True)
        if tables
        else pd.DataFrame(columns=[*SLICE_COLUMNS, "cache", "row"])
    )
    present = set(slices["patient_id"])
    outcomes = {
        pid: Outcome(pid, float(o["time"]), bool(o["event"]), dict(o["clinical"]))
        for pid, o in state["outcomes"].items()
        if pid in present
    }
    pids, strata = patient_strata(slices, outcomes)
    d = cfg.data
    path = out / SPLITS_FILE
    splits = resolve_splits(
        path,
        pids,
        strata,
        n_folds=d.n_folds,
        fold=d.fold,
        test_fraction=d.test_fraction,
        seed=d.split_seed if d.split_seed is not None else cfg.runtime.seed,
    )
    if write:
        save_splits(splits, path)
    base = PreparedData(
        out, cfg, spec, list(names), slices, splits, outcomes, dict(state.get("true_risk", {})),
        ClinicalImputer(), list(state.get("problems", [])), [],
    )  # fmt: skip
    return _finish(base, splits)
