"""Records shared by the readers, the synthetic generator and the dataset.

A data folder is *discovered* into a :class:`DatasetIndex` (cheap: paths and CSV rows,
no voxel data), then cases and images are *loaded* on demand into arrays plus
:class:`ImageMeta`. Every problem found on the way is a :class:`DataError` subclass that
names the file and the fault.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Canonical channel names. Readers map dataset-specific suffixes onto these.
BRAIN_CHANNELS: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
PETCT_CHANNELS: tuple[str, ...] = ("ct", "pet")
TUMOUR_TYPES: tuple[str, ...] = ("glioma", "meningioma", "notumor", "pituitary")


class DataError(Exception):
    """Base class of every data problem. ``str(err)`` is ``"PATH: fault"``."""

    def __init__(self, path: str | Path, fault: str) -> None:
        self.path = Path(path)
        self.fault = fault
        super().__init__(f"{path}: {fault}")


@dataclass(frozen=True)
class ImageMeta:
    """Geometry and provenance of a loaded image or volume.

    Attributes:
        path: File (or folder, for DICOM series and case folders) the data came from.
        shape: Spatial shape in voxels, after reorientation to the canonical (RAS) orientation.
        spacing: Voxel size in mm per spatial axis (``(1.0, 1.0)`` for plain 2D images).
        affine: 4×4 voxel-to-world affine of the canonical array (identity for 2D images).
        orientation: Axis codes of the file as stored, e.g. ``("L", "P", "S")``.
        original_affine: 4×4 affine of the file as stored (to write masks back in its geometry).
        original_shape: Spatial shape of the file as stored.
    """

    path: Path
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    affine: np.ndarray
    orientation: tuple[str, ...] = ()
    original_affine: np.ndarray | None = None
    original_shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class RegionLabels:
    """A label convention: raw mask values, their names, and the regions they form.

    The layout that reads a mask owns its convention and every consumer (preprocessing,
    validation, evaluation) asks it, as nnU-Net's ``LabelManager`` owns labels ↔ regions.
    BraTS 2018–2021 ``{1: NCR, 2: ED, 4: ET}`` forms ``WT = {1, 2, 4}``, ``TC = {1, 4}``,
    ``ET = {4}``.

    Attributes:
        name: The convention as errors name it (``BraTS 2018-2021``).
        labels: Raw value → label name; 0 (background) is implied.
        regions: Region → raw values forming it.
        tumour_region: Region whose presence marks a tumour slice by default; None without regions.
    """

    name: str
    labels: Mapping[int, str] = field(default_factory=dict)
    regions: Mapping[str, frozenset[int]] = field(default_factory=dict)
    tumour_region: str | None = None

    @property
    def allowed(self) -> frozenset[int]:
        """Raw values a mask may hold: 0 plus every named label."""
        return frozenset({0, *self.labels})

    def masks(self, mask: np.ndarray, regions: Sequence[str]) -> np.ndarray:
        """Binary masks of ``regions`` from a raw label mask.

        Args:
            mask: ``(...)`` integer array of raw labels.
            regions: Region names, in output order.

        Returns:
            ``(R, ...)`` uint8 array of 0/1.

        Raises:
            ValueError: A region is not defined by this convention.
        """
        unknown = [r for r in regions if r not in self.regions]
        if unknown:
            raise ValueError(
                f"regions {unknown} unknown for {self.name} labels; known: {sorted(self.regions)}"
            )
        return np.stack([np.isin(mask, sorted(self.regions[r])) for r in regions]).astype(np.uint8)


@dataclass(frozen=True)
class Case:
    """One patient volume on disk (BraTS, HECKTOR, MSD, nnU-Net or a DICOM series).

    Attributes:
        patient_id: Identifier as the dataset spells it (``BraTS20_Training_001``, ``CHUM-001``).
        source: Layout name (a key of ``tumorscope.data.layouts.LAYOUTS``).
        channels: Canonical channel name → file (or series folder).
        mask: Label file, or None when the case has no segmentation.
        labels: The mask's label convention (set by the layout), None for layouts without masks.
        channel_index: Channel → index along the 4th axis when several channels share one
            4-D file (MSD images); empty when every channel has a file of its own.
    """

    patient_id: str
    source: str
    channels: dict[str, Path]
    mask: Path | None = None
    labels: RegionLabels | None = None
    channel_index: dict[str, int] = field(default_factory=dict)

    @property
    def label_map(self) -> dict[int, str]:
        """Raw label value → label name, e.g. BraTS ``{1: NCR, 2: ED, 4: ET}``."""
        return {} if self.labels is None else dict(self.labels.labels)


@dataclass(frozen=True)
class ImageItem:
    """One 2D image of an image-folder dataset (Kaggle layouts).

    Attributes:
        path: Image file.
        patient_id: One image = one patient (the Kaggle sets carry no patient ids): the path
            relative to the dataset root without extension (``yes/Y1``), since stems repeat
            across class folders.
        source: Layout name: ``kaggle`` (yes/no) or ``kaggle4`` (4-class).
        tumour: 1 = tumour, 0 = no tumour.
        tumour_type: Index into :data:`TUMOUR_TYPES`, or None when the layout has no type.
        split_hint: ``Training``/``Testing`` folder of the 4-class set, else None.
    """

    path: Path
    patient_id: str
    source: str
    tumour: int
    tumour_type: int | None = None
    split_hint: str | None = None


@dataclass(frozen=True)
class Outcome:
    """Survival outcome and clinical covariates of one patient.

    Attributes:
        patient_id: Patient identifier matching a :class:`Case`.
        time: Follow-up time in days.
        event: True if the event (death / recurrence) was observed, False if censored.
        clinical: Covariate name → value; None where missing (never zero-filled here).
        source_file: CSV the row came from.
    """

    patient_id: str
    time: float
    event: bool
    clinical: dict[str, float | None] = field(default_factory=dict)
    source_file: Path | None = None


@dataclass
class DatasetIndex:
    """Everything discovered under one or more data folders, without loading voxels.

    Attributes:
        roots: Folders searched.
        layouts: Layout name → dataset root it was found at (``brats#2`` for a second root).
        cases: Volume cases (BraTS, HECKTOR, MSD, nnU-Net, DICOM).
        images: 2D image-folder items (Kaggle).
        outcomes: patient_id → outcome (BraTS survival CSV, HECKTOR endpoint CSV).
        true_risk: patient_id → true log-hazard from a synthetic sidecar, if present.
        observable_risk: patient_id → the true log-hazard without its unobserved term
            (the sidecar's ``observable_log_hazard``), if present.
        problems: Problems found while discovering (each ``"PATH: fault"``).
        left_out: Layout key → cases found on disk but left out for their problems.
    """

    roots: list[Path] = field(default_factory=list)
    layouts: dict[str, Path] = field(default_factory=dict)
    cases: list[Case] = field(default_factory=list)
    images: list[ImageItem] = field(default_factory=list)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    true_risk: dict[str, float] = field(default_factory=dict)
    observable_risk: dict[str, float] = field(default_factory=dict)
    problems: list[DataError] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadedCase:
    """A case read into memory in canonical (RAS) orientation.

    Attributes:
        image: ``(C, X, Y, Z)`` float32, channels in the order requested.
        mask: ``(X, Y, Z)`` uint8 of raw label values, or None.
        meta: Geometry of the (first) channel; all channels and the mask share it.
        channel_present: Per requested channel, False if it was absent and zero-filled.
        labels: The mask's label convention (from the case), None when unknown.
    """

    image: np.ndarray
    mask: np.ndarray | None
    meta: ImageMeta
    channel_present: tuple[bool, ...] = ()
    labels: RegionLabels | None = None
