"""The dataset of slices with partial labels, its collate function and the training samplers.

Samples carry optional targets (masks, tumour label, tumour type, survival time/event,
clinical covariates) with presence flags; :func:`collate` batches them into a
:class:`~tumorscope.data.batch.Batch`. Batches are assembled by
:class:`tumorscope.training.data.StageData` (training draws from :func:`train_samplers`,
validation walks :meth:`SliceDataset.eligible` slices in order). Slices are read row by
row from the ``.npy`` caches with ``os.pread`` at the offset the ``.npy`` header gives, so
memory stays flat however large the cache is: pages live in the OS page cache, not in the
process (a ``np.memmap`` would count every touched page in the process's resident set).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tumorscope.config import DataConfig
from tumorscope.data import augment
from tumorscope.data.batch import Batch
from tumorscope.data.prepared import PreparedData
from tumorscope.data.samplers import BalancedSampler, PatientBagSampler, ShareSampler
from tumorscope.data.types import DataError


class NpyRows:
    """Row reader of a ``.npy`` file: ``rows[i]`` is ``array[i]``, read with ``os.pread``.

    Args:
        path: ``.npy`` file (C order).
        mode: ``pread`` (flat memory) or ``mmap`` (``np.load(mmap_mode="r")``, for comparison).
    """

    def __init__(self, path: str | Path, mode: str = "pread") -> None:
        self.path = Path(path)
        self.mode = mode
        with self.path.open("rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            self.offset = f.tell()
        if fortran:
            raise ValueError(f"{self.path}: Fortran-ordered arrays are not supported")
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd: int | None = None
        self._pid = -1
        self._mm: np.ndarray | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < self.shape[0]:
            raise IndexError(f"{self.path}: row {i} not in [0, {self.shape[0]})")
        if self.mode == "mmap":
            if self._mm is None:
                self._mm = np.load(self.path, mmap_mode="r")
            return np.array(self._mm[i])
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDONLY)
            self._pid = os.getpid()
        buf = os.pread(self._fd, self.row_bytes, self.offset + i * self.row_bytes)
        if len(buf) != self.row_bytes:
            raise DataError(
                self.path, f"truncated: row {i} has {len(buf)} of {self.row_bytes} bytes"
            )
        return np.frombuffer(buf, dtype=self.dtype).reshape(self.shape[1:])

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)


@dataclass
class Sample:
    """One slice with optional targets (see :class:`~tumorscope.data.batch.Batch`).

    Attributes:
        image: ``(C, S, S)`` float32.
        mask: ``(R, S, S)`` uint8 (zeros when ``has_mask`` is False).
        has_mask: Mask present.
        tumour: 1.0 tumour in slice, 0.0 not (0.0 when absent).
        has_tumour: Tumour label present.
        tumour_type: Index into ``TUMOUR_TYPES``, -1 when absent.
        time: Follow-up in days (0 when absent).
        event: Event observed.
        has_survival: Survival outcome present.
        clinical: ``(K,)`` float32 imputed covariates.
        patient_id: Patient.
        source: Source layout.
        slice_index: Axial index in the volume, -1 for 2D images.
    """

    image: np.ndarray
    mask: np.ndarray
    has_mask: bool
    tumour: float
    has_tumour: bool
    tumour_type: int
    time: float
    event: bool
    has_survival: bool
    clinical: np.ndarray
    patient_id: str
    source: str
    slice_index: int


class SliceDataset:
    """The slices of one split of a :class:`PreparedData`.

    Args:
        prepared: Output of :func:`~tumorscope.data.cache.prepare`.
        split: ``train``, ``val``, ``test`` or ``all``.
        train: Apply augmentation (``data.augment``: :mod:`tumorscope.data.augment`; channel
            drop-out with ``missing_channels: zero_fill``) and keep the slices of every
            plane; otherwise only axial slices, as prediction cuts them.
        seed: Seed of the augmentation draws.
        use_clinical: Include the clinical vector (default: ``model.clinical_features > 0``).
        reader: ``pread`` or ``mmap`` (see :class:`NpyRows`).
    """

    def __init__(
        self,
        prepared: PreparedData,
        split: str,
        *,
        train: bool = False,
        seed: int = 0,
        use_clinical: bool | None = None,
        reader: str = "pread",
    ) -> None:
        t = prepared.slice_table(split)
        if not train:
            t = t[t["plane"] == 0]
        t = t.reset_index(drop=True)
        self.split = split
        self.augment = prepared.cfg.data.augment
        self.train = train
        self.seed = seed
        self.spec = prepared.spec
        self.zero_fill = prepared.spec.missing_channels == "zero_fill"
        self.cache = t["cache"].to_numpy(np.int64)
        self.row = t["row"].to_numpy(np.int64)
        self.has_mask = t["has_mask"].to_numpy(bool)
        self.tumour = t["tumour"].to_numpy(np.int64)
        self.has_tumour = t["has_tumour"].to_numpy(bool)
        self.tumour_type = t["tumour_type"].to_numpy(np.int64)
        self.slice_index = t["slice_index"].to_numpy(np.int64)
        self.plane = t["plane"].to_numpy(np.int64)
        self.contrasts = t["contrasts"].to_numpy(np.int64)
        self.patient_ids: list[str] = [str(p) for p in t["patient_id"]]
        self.sources: list[str] = [str(s) for s in t["source"]]
        self.has_survival = np.array([p in prepared.outcomes for p in self.patient_ids], dtype=bool)
        use = prepared.cfg.model.clinical_features > 0 if use_clinical is None else use_clinical
        self.n_clinical = len(prepared.clinical_columns) if use else 0
        here = set(self.patient_ids)
        self.outcomes = {
            pid: (o.time, o.event, prepared.imputer.transform(o.clinical)[: self.n_clinical])
            for pid, o in prepared.outcomes.items()
            if pid in here
        }
        self._no_clinical = prepared.imputer.transform(None)[: self.n_clinical]
        used = sorted(set(self.cache.tolist()))
        self.images = {i: NpyRows(prepared.cache_dir(i) / "images.npy", reader) for i in used}
        self.masks = {
            i: NpyRows(prepared.cache_dir(i) / "masks.npy", reader)
            for i in used
            if (prepared.cache_dir(i) / "masks.npy").is_file()
        }
        self.alternates = {
            i: NpyRows(prepared.cache_dir(i) / "alternates.npy", reader)
            for i in used
            if train and (prepared.cache_dir(i) / "alternates.npy").is_file()
        }
        self.n_regions = len(prepared.spec.regions)
        self._draws = 0

    def __len__(self) -> int:
        return int(self.cache.size)

    def eligible(self, tasks: Sequence[str]) -> np.ndarray:
        """``(N,)`` bool: the slice carries a target of at least one of ``tasks``."""
        have = {
            "segmentation": self.has_mask,
            "tumour": self.has_tumour,
            "tumour_type": self.tumour_type >= 0,
            "survival": self.has_survival,
        }
        unknown = [t for t in tasks if t not in have]
        if unknown:
            raise ValueError(f"unknown tasks {unknown}; expected {sorted(have)}")
        out = np.zeros(len(self), dtype=bool)
        for t in tasks:
            out |= have[t]
        return out

    def __getitem__(self, i: int) -> Sample:
        draw = self._draws
        self._draws += 1
        return self.get(i, draw=draw)

    def get(self, i: int, *, draw: int = 0) -> Sample:
        """Slice ``i``; with ``train`` its augmentation is a pure function of ``(seed, i, draw)``
        (so a resumed run can replay exactly the draws of an uninterrupted one)."""
        c, r = int(self.cache[i]), int(self.row[i])
        image = self.images[c][r].astype(np.float32)
        S = image.shape[-1]
        if self.has_mask[i] and c in self.masks:
            mask = np.array(self.masks[c][r], dtype=np.uint8)
        else:
            mask = np.zeros((self.n_regions, S, S), dtype=np.uint8)
        has_mask = bool(self.has_mask[i])
        if self.train:
            rng = np.random.default_rng([self.seed, i, draw])
            image, mask, own = self._augment(rng, i, image, mask)
            has_mask = has_mask and own
        pid = self.patient_ids[i]
        time, event, clinical = self.outcomes.get(pid, (0.0, False, self._no_clinical))
        return Sample(
            image=image,
            mask=mask,
            has_mask=has_mask,
            tumour=float(max(self.tumour[i], 0)),
            has_tumour=bool(self.has_tumour[i]),
            tumour_type=int(self.tumour_type[i]),
            time=float(time),
            event=bool(event),
            has_survival=bool(self.has_survival[i]),
            clinical=clinical,
            patient_id=pid,
            source=self.sources[i],
            slice_index=int(self.slice_index[i]),
        )

    def _augment(
        self, rng: np.random.Generator, i: int, image: np.ndarray, mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """``data.augment`` of slice ``i``, then channel drop-out (``zero_fill``); and
        whether the slice is in its own contrast (its mask holds)."""
        own = True
        if self.augment == "full":
            c, r = int(self.cache[i]), int(self.row[i])
            alternates = self.alternates[c][r] if c in self.alternates else None
            image, mask, own = augment.full(
                rng,
                image,
                mask,
                self.spec,
                volume=bool(self.slice_index[i] >= 0),
                alternates=alternates,
                bits=int(self.contrasts[i]),
            )
        else:
            image, mask = augment.light(rng, image, mask)
        if self.zero_fill and image.shape[0] > 1:
            drop = np.asarray(rng.random(image.shape[0]) < 0.1)
            if not drop.all():
                image[drop] = 0.0
        return np.ascontiguousarray(image), np.ascontiguousarray(mask), own


def collate(samples: Sequence[Sample]) -> Batch:
    """Stack samples into a :class:`Batch`; ``patient_index`` numbers patients by first appearance."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    order: dict[str, int] = {}
    for s in samples:
        order.setdefault(s.patient_id, len(order))

    def t(values: list[Any], dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype)

    return Batch(
        image=torch.from_numpy(np.stack([s.image for s in samples]).astype(np.float32)),
        mask=torch.from_numpy(np.stack([s.mask for s in samples]).astype(np.float32)),
        has_mask=t([s.has_mask for s in samples], torch.bool),
        tumour=t([s.tumour for s in samples], torch.float32),
        has_tumour=t([s.has_tumour for s in samples], torch.bool),
        tumour_type=t([s.tumour_type for s in samples], torch.int64),
        has_tumour_type=t([s.tumour_type >= 0 for s in samples], torch.bool),
        time=t([s.time for s in samples], torch.float32),
        event=t([s.event for s in samples], torch.bool),
        has_survival=t([s.has_survival for s in samples], torch.bool),
        clinical=torch.from_numpy(np.stack([s.clinical for s in samples]).astype(np.float32)),
        patient_index=t([order[s.patient_id] for s in samples], torch.int64),
        patient_ids=[s.patient_id for s in samples],
        sources=[s.source for s in samples],
        slice_index=t([s.slice_index for s in samples], torch.int64),
    )


def train_samplers(
    ds: SliceDataset, tasks: Sequence[str], *, batch_size: int, seed: int, data: DataConfig
) -> tuple[BalancedSampler | ShareSampler, PatientBagSampler | None]:
    """The training samplers of a stage: source-balanced slices, and patient bags for survival.

    Args:
        ds: Training dataset.
        tasks: The stage's tasks; only slices carrying one of their targets are drawn.
        batch_size: Slices per batch (bags are topped up to it with balanced draws).
        seed: Seed of the draw streams.
        data: ``data`` config (``bag_patients``, ``bag_slices``).

    Returns:
        ``(balanced, bags)``; ``bags`` is None unless ``survival`` is a task and the split
        has patients with outcomes.
    """
    idx = np.nonzero(ds.eligible(tasks))[0]
    names = sorted(set(ds.sources))

    def groups(items: np.ndarray) -> np.ndarray:
        return np.array([names.index(ds.sources[i]) for i in items], dtype=np.int64)

    def sampler(items: np.ndarray, s: int) -> BalancedSampler | ShareSampler:
        """Source-balanced draws, or ``data.image_share`` of 2D images in every draw."""
        flat = ds.slice_index[items] < 0  # 2D images carry no slice index
        if data.image_share is None or flat.all() or not flat.any():
            return BalancedSampler(items, groups(items), seed=s)
        volume, images = items[~flat], items[flat]
        pools = [
            BalancedSampler(volume, groups(volume), seed=s),
            BalancedSampler(images, groups(images), seed=s + 2),
        ]
        return ShareSampler(pools, [1.0 - data.image_share, data.image_share], seed=s + 3)

    balanced = sampler(idx, seed)
    axial = ds.plane[idx] == 0  # patient bags hold the slices prediction cuts
    surv = idx[ds.has_survival[idx] & axial] if "survival" in tasks else idx[:0]
    if not surv.size:
        return balanced, None
    others = [t for t in tasks if t != "survival"]
    fill_idx = np.nonzero(ds.eligible(others))[0] if others else idx[:0]
    fill = sampler(fill_idx, seed + 1) if fill_idx.size else None
    bags = PatientBagSampler(
        [ds.patient_ids[i] for i in surv],
        {p: bool(o[1]) for p, o in ds.outcomes.items()},
        items=surv,
        bag_patients=data.bag_patients,
        bag_slices=data.bag_slices,
        seed=seed,
        fill=fill,
        batch_size=batch_size,
    )
    return balanced, bags
