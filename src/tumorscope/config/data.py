"""The ``data`` section: where data comes from, how slices are made and augmented."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tumorscope.config.checks import SEED_MAX, _check, _names, _range

# Contrasts a one-channel brain-MRI model can be trained across (data.train_contrasts).
MRI_CONTRASTS: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")


@dataclass(frozen=True)
class DataConfig:
    """Where data comes from and how slices are made.

    Attributes:
        sources: Layouts to read (names in ``tumorscope.data.layouts.LAYOUTS``: ``brats``,
            ``kaggle``, ``hecktor``, ``dicom``, ``msd``, ``nnunet``); empty = all found.
        channels: Channel names the model takes, in order (e.g. ``[flair]`` or ``[ct, pet]``).
        missing_channels: ``error`` drops sources lacking a channel (with a warning);
            ``zero_fill`` zero-fills absent channels.
        image_size: Side of the square slices fed to the model, in pixels.
        clip_percentiles: Intensity percentiles clipped before normalisation.
        tumour_slice_fraction: Target fraction of tumour slices among extracted volume slices.
        slices_per_patient: Maximum slices extracted per volume.
        min_foreground_fraction: Slices whose brain/body mask covers less than this are skipped.
        fold: Cross-validation fold used as validation split.
        n_folds: Number of patient-level folds.
        test_fraction: Fraction of patients held out as the test split.
        bag_patients: Patients per survival batch (patient-bag sampler).
        bag_slices: Slices per patient in a survival batch.
        max_voxels: Largest volume (voxels) a reader accepts, checked from the header.
        split_seed: Seed of the patient splits (None: ``runtime.seed``). A fixed
            ``split_seed`` keeps the test set and folds while ``runtime.seed`` varies
            (nnU-Net's fixed ``splits_final.json``).
        image_share: Share of every training batch drawn from 2D images (sources without
            volumes, e.g. Kaggle folders) in stages whose tasks they carry a target of; the
            rest are volume slices. None: every source gets the same share.
        train_contrasts: MRI contrasts a one-channel model's training volume slices are
            drawn from (``flair``, ``t1``, ``t1ce``, ``t2``), where the case has them: the
            model's own channel in half the draws (only those train segmentation), the
            others in the rest. Empty: only ``channels``.
        planes: Planes training volumes are cut along: ``axial`` (always) and
            ``coronal``/``sagittal`` (one-channel models; uploads come in every plane).
        plane_slices: Slices per volume of each non-axial plane (tumour-balanced).
        augment: ``light`` (flips, small intensity scale/shift) or ``full`` (also rotation
            and scaling, nnU-Net's intensity augmentation, and volume slices re-rendered as
            uploads: skull and scalp, crop margins, per-image normalisation, JPEG); see
            :mod:`tumorscope.data.augment`.
    """

    sources: tuple[str, ...] = ()
    channels: tuple[str, ...] = ("flair",)
    missing_channels: Literal["error", "zero_fill"] = "error"
    image_size: int = 128
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    tumour_slice_fraction: float = 0.5
    slices_per_patient: int = 32
    min_foreground_fraction: float = 0.02
    fold: int = 0
    n_folds: int = 5
    test_fraction: float = 0.2
    bag_patients: int = 4
    bag_slices: int = 4
    max_voxels: int = 2**27
    split_seed: int | None = None
    image_share: float | None = None
    train_contrasts: tuple[str, ...] = ()
    planes: tuple[str, ...] = ("axial",)
    plane_slices: int = 8
    augment: Literal["light", "full"] = "light"

    def validate(self) -> None:
        _names("data.sources", self.sources)
        _names("data.train_contrasts", self.train_contrasts)
        bad = [c for c in self.train_contrasts if c not in MRI_CONTRASTS]
        _check(not bad, "data.train_contrasts", f"{bad} are not among {list(MRI_CONTRASTS)}")
        _check(
            not self.train_contrasts or len(self.channels) == 1,
            "data.train_contrasts",
            f"only one-channel models draw contrasts; channels is {list(self.channels)}",
        )
        bad = [p for p in self.planes if p not in ("axial", "coronal", "sagittal")]
        _check(not bad, "data.planes", f"{bad} are not among ['axial', 'coronal', 'sagittal']")
        _check(len(set(self.planes)) == len(self.planes), "data.planes", "repeats a plane")
        _range("data.plane_slices", self.plane_slices, 1, 4096)
        _names("data.channels", self.channels, least=1)
        _range("data.image_size", self.image_size, 8, 1024)
        lo, hi = self.clip_percentiles
        _check(
            0 <= lo < hi <= 100,
            "data.clip_percentiles",
            f"need 0 <= lo < hi <= 100, got {lo}, {hi}",
        )
        _range("data.tumour_slice_fraction", self.tumour_slice_fraction, 0, 1)
        _range("data.slices_per_patient", self.slices_per_patient, 1, 4096)
        _range("data.min_foreground_fraction", self.min_foreground_fraction, 0, 1, open_hi=True)
        _range("data.n_folds", self.n_folds, 2, 100)
        _check(
            0 <= self.fold < self.n_folds,
            "data.fold",
            f"{self.fold} not in [0, n_folds={self.n_folds})",
        )
        _range("data.test_fraction", self.test_fraction, 0, 1, open_hi=True)
        _range("data.bag_patients", self.bag_patients, 1, 1024)
        _range("data.bag_slices", self.bag_slices, 1, 1024)
        _check(
            self.bag_patients * self.bag_slices <= 1024,
            "data.bag_patients",
            f"bag_patients x bag_slices = {self.bag_patients * self.bag_slices} "
            "slices per survival batch; at most 1024",
        )
        _range("data.max_voxels", self.max_voxels, 1, 2**30)
        if self.split_seed is not None:
            _range("data.split_seed", self.split_seed, 0, SEED_MAX)
        if self.image_share is not None:
            _range("data.image_share", self.image_share, 0, 1)
