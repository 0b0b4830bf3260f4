"""What training needs from the data: reproducible step-indexed batches and validation passes.

Training batches are a pure function of ``(seed, stage, step)``: the samplers are
re-created and fast-forwarded on resume (they only draw indices, so skipping is cheap),
and augmentation draws are keyed by the step, so a resumed run sees exactly the batches
an uninterrupted one would have seen.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tumorscope.config import Config, ConfigError, StageConfig
from tumorscope.data.batch import Batch
from tumorscope.data.cache import load_prepared, prepare
from tumorscope.data.dataset import SliceDataset, collate, train_samplers
from tumorscope.data.prepared import PreparedData
from tumorscope.losses.multitask import pos_weight_from_labels
from tumorscope.training.collective import SINGLE, DistContext, shard

log = logging.getLogger(__name__)

EVAL_BATCH = 32


def _stage_seed(seed: int, stage: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(stage.encode())) % 2**31


@dataclass
class StageData:
    """Prepared data plus the loaders every stage asks for.

    Attributes:
        prepared: Output of :func:`tumorscope.data.cache.prepare`.
        cfg: Experiment config.
        roots: The data folders it came from, absolute (recorded in the run's manifest;
            empty for a rank that opened another's preparation).
    """

    prepared: PreparedData
    cfg: Config
    roots: tuple[str, ...] = ()

    @classmethod
    def build(cls, *, data: Sequence[str | Path], cfg: Config, cache: Path) -> StageData:
        """Discover, preprocess (or reuse the cache) and split the data."""
        prepared = prepare(list(data), cfg, cache)
        for problem in prepared.problems:
            log.warning("data problem: %s", problem)
        k, cols = cfg.model.clinical_features, list(prepared.clinical_columns)
        if "survival" in cfg.model.heads and k > 0 and len(cols) != k:
            raise ConfigError(
                f"model.clinical_features: {k}, but the data has {len(cols)} clinical "
                f"column(s) {cols}; set it to {len(cols)} (or 0 for none)"
            )
        roots = tuple(str(Path(d).resolve()) for d in data)
        return cls(prepared=prepared, cfg=cfg, roots=roots)

    @classmethod
    def load(cls, *, cfg: Config, cache: Path) -> StageData:
        """Open data another process prepared in ``cache`` (distributed ranks > 0)."""
        return cls(prepared=load_prepared(cache, cfg), cfg=cfg)

    # ------------------------------------------------------------------ facts
    def spec_dict(self) -> dict[str, Any]:
        return dict(self.prepared.spec.to_dict())

    def clinical_columns(self) -> list[str]:
        return list(self.prepared.clinical_columns) if self.cfg.model.clinical_features > 0 else []

    def imputation(self) -> dict[str, Any] | None:
        imputer = self.prepared.imputer
        return imputer.to_dict() if hasattr(imputer, "to_dict") else None

    def split_patients(self) -> dict[str, list[str]]:
        return {s: self.prepared.patients(s) for s in ("train", "val", "test")}

    def tumour_pos_weight(self) -> float:
        t = self.prepared.slice_table("train")
        labels = t.loc[t["has_tumour"].astype(bool), "tumour"].to_numpy()
        return float(pos_weight_from_labels(labels)) if labels.size else 1.0

    def _dataset(self, split: str, *, train: bool, seed: int = 0) -> SliceDataset:
        return SliceDataset(self.prepared, split, train=train, seed=seed)

    def skip_reason(self, stage: StageConfig) -> str | None:
        """Why a stage cannot run on this data (None when it can)."""
        ds = self._dataset("train", train=False)
        if not ds.eligible(stage.tasks).any():
            return f"no training slices carry targets for {list(stage.tasks)}"
        if "survival" in stage.tasks and stage.tasks == ("survival",):
            events = [
                self.prepared.outcomes[p].event
                for p in set(ds.patient_ids)
                if p in self.prepared.outcomes
            ]
            if not any(events):
                return "no events among the training patients"
        return None

    # ------------------------------------------------------------------ batches
    def train_batches(
        self, stage: StageConfig, *, seed: int, start_step: int = 0, ctx: DistContext = SINGLE
    ) -> Iterator[Batch]:
        """Endless training batches for ``stage``, starting at ``start_step``.

        Under distribution every rank draws the same global indices and keeps its shard;
        augmentation is keyed by the position in the global batch, so the shards put
        together are exactly the single-process batch.
        """
        s = _stage_seed(seed, stage.name)
        ds = self._dataset("train", train=True, seed=s)
        d = self.cfg.data
        batch_size = max(stage.batch_size, d.bag_patients * d.bag_slices)
        balanced, bags = train_samplers(ds, stage.tasks, batch_size=batch_size, seed=s, data=d)

        def draw() -> list[int]:
            if bags is not None:
                return [int(i) for i in bags.next_batch()]
            return [int(i) for i in balanced.draw(stage.batch_size)]

        for _ in range(start_step):  # fast-forward: indices only, no data read
            draw()
        step = start_step
        while True:
            indices = draw()
            positions = shard(list(range(len(indices))), ctx, f"stage {stage.name}")
            yield collate([ds.get(indices[j], draw=step * 100_003 + j) for j in positions])
            step += 1

    def eval_batches(
        self, split: str, tasks: Sequence[str], survival_only: bool = False
    ) -> Iterator[Batch]:
        """Every slice of ``split`` carrying a target of ``tasks`` (or an outcome), once,
        without augmentation, in cache order."""
        ds = self._dataset(split, train=False)
        keep = ds.has_survival if survival_only else ds.eligible(tasks)
        idx = np.nonzero(keep)[0]
        for start in range(0, idx.size, EVAL_BATCH):
            yield collate([ds[int(i)] for i in idx[start : start + EVAL_BATCH]])

    def val_batches(self, stage: StageConfig) -> Iterator[Batch]:
        """Every validation slice carrying a target of the stage's tasks, once."""
        return self.eval_batches("val", stage.tasks)

    def val_batches_for(self, tasks: Sequence[str]) -> Iterator[Batch]:
        return self.eval_batches("val", tasks)

    def train_survival_batches(self) -> Iterator[Batch]:
        """Every training slice of patients with an outcome, once, without augmentation."""
        return self.eval_batches("train", ("survival",), survival_only=True)

    def val_survival_batches(self) -> Iterator[Batch]:
        return self.eval_batches("val", ("survival",), survival_only=True)
