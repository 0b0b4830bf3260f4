"""The :class:`Layout` interface every dataset layout implements, and what layouts share.

A layout is one on-disk convention (BraTS case folders, HECKTOR ``imagesTr/``, an MSD task,
an nnU-Net raw dataset, Kaggle class folders, DICOM series). It says whether a folder is one
of its roots, lists a root's cases, images and outcomes, reads the one case a path names
(what ``Predictor.predict_volume`` is given), reads a case's channel volumes, and owns its
label convention (:class:`~tumorscope.data.types.RegionLabels`: which raw mask values form
which region). :mod:`tumorscope.data.layouts` registers one instance of each; discovery,
loading, validation and prediction loop over that registry instead of testing names.

Label names shared by the conventions (BraTS's nested regions, HECKTOR's two targets) are
composed into regions here, once: :func:`region_labels`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from tumorscope.data.readers import read_nifti, read_nifti_header
from tumorscope.data.types import Case, DataError, ImageItem, ImageMeta, Outcome, RegionLabels

logger = logging.getLogger(__name__)

#: Regions each label name belongs to: BraTS's nested WT ⊃ TC ⊃ ET and HECKTOR's targets.
#: NCR is BraTS's necrotic (and, before 2017, non-enhancing) core; NET is MSD's non-enhancing tumour.
LABEL_REGIONS: dict[str, tuple[str, ...]] = {
    "NCR": ("WT", "TC"),
    "NET": ("WT", "TC"),
    "ED": ("WT",),
    "ET": ("WT", "TC", "ET"),
    "GTVp": ("GTVp",),
    "GTVn": ("GTVn",),
}
#: Regions outermost first; the first a convention has is its default tumour region.
REGION_ORDER: tuple[str, ...] = ("WT", "TC", "ET", "GTVp", "GTVn")
#: The convention of layouts without masks (image folders, DICOM series).
NO_LABELS = RegionLabels(name="no")


def region_labels(name: str, labels: Mapping[int, str]) -> RegionLabels:
    """The convention whose raw values carry the given label names (keys of :data:`LABEL_REGIONS`).

    Args:
        name: The convention as errors name it.
        labels: Raw value → label name, e.g. ``{1: "NCR", 2: "ED", 4: "ET"}``.

    Returns:
        :class:`RegionLabels` with every region the names form.

    Raises:
        ValueError: A name is not a known label name.
    """
    unknown = sorted(n for n in labels.values() if n not in LABEL_REGIONS)
    if unknown:
        raise ValueError(f"label names {unknown} are not among {sorted(LABEL_REGIONS)}")
    regions: dict[str, set[int]] = {}
    for value, label in labels.items():
        for region in LABEL_REGIONS[label]:
            regions.setdefault(region, set()).add(value)
    ordered = {r: frozenset(regions[r]) for r in REGION_ORDER if r in regions}
    return RegionLabels(
        name=name,
        labels=dict(labels),
        regions=ordered,
        tumour_region=next(iter(ordered), None),
    )


@dataclass
class Discovery:
    """What one layout root holds, listed without reading voxels.

    Attributes:
        cases: Volume cases whose headers read cleanly.
        images: 2D image items.
        outcomes: Patient id → outcome from the root's CSV files.
        problems: Every fault found while listing.
        left_out: Cases found on disk but not listed because of their problems.
    """

    cases: list[Case] = field(default_factory=list)
    images: list[ImageItem] = field(default_factory=list)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    problems: list[DataError] = field(default_factory=list)
    left_out: int = 0


class Layout(ABC):
    """One on-disk dataset convention. Subclasses set the class attributes and implement
    :meth:`detect`, :meth:`discover` and :meth:`explain_absent`; the other methods have the
    behaviour of NIfTI layouts with one file per channel.

    Attributes:
        name: Layout name: ``Case.source`` / ``ImageItem.source`` and ``data.sources`` entry.
        labels: The layout's label convention (:data:`NO_LABELS` when masks are absent or
            differ per dataset, as nnU-Net's; then each case carries its own).
        aliases: Other ``data.sources`` names that select this layout.
        reference_channel: Channel whose grid the others must share (first requested if None).
        resampled_channels: Channels resampled onto the reference grid instead of checked.
    """

    name: ClassVar[str]
    labels: ClassVar[RegionLabels] = NO_LABELS
    aliases: ClassVar[frozenset[str]] = frozenset()
    reference_channel: ClassVar[str | None] = None
    resampled_channels: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def detect(self, folder: Path) -> bool:
        """True if ``folder`` is a root of this layout."""

    def claimed(self, folder: Path) -> set[Path]:
        """Subfolders of a root that belong to it (discovery does not search them)."""
        return set()

    @abstractmethod
    def discover(self, root: Path, *, max_voxels: int) -> Discovery:
        """List a root's cases, images, outcomes and problems (file names, headers, CSV rows)."""

    def read_case(self, path: Path) -> tuple[Case | None, list[DataError]]:
        """The one case ``path`` (a case folder or file) holds, without reading voxels.

        Returns:
            ``(None, [])`` when ``path`` is not a case of this layout; ``(None, problems)``
            when it is one but cannot be read; else ``(case, problems)``.
        """
        return None, []

    @abstractmethod
    def explain_absent(self, folders: Sequence[Path]) -> str:
        """Why none of ``folders`` is a root of this layout (what it looks for, near misses)."""

    def case_folder(self, case: Case) -> Path:
        """Folder that holds a case (errors name it)."""
        first = next(iter(case.channels.values()), case.mask)
        return Path(case.patient_id) if first is None else first.parent

    def read_channel(
        self, case: Case, channel: str, *, max_voxels: int
    ) -> tuple[np.ndarray, ImageMeta]:
        """Read one channel of a case as a canonical ``(X, Y, Z)`` float32 volume.

        Raises:
            DataError: A reader fault naming the file.
        """
        arr, meta = read_nifti(
            case.channels[channel], max_voxels=max_voxels, channel=case.channel_index.get(channel)
        )
        return arr.astype(np.float32, copy=False), meta

    def check_channel(
        self, case: Case, channel: str, *, max_voxels: int
    ) -> tuple[ImageMeta | None, list[DataError]]:
        """Read one channel in full and return its geometry and every problem found."""
        try:
            return self.read_channel(case, channel, max_voxels=max_voxels)[1], []
        except DataError as e:
            return None, [e]

    def fit_channels(self, case: Case, channels: Sequence[str]) -> tuple[Case, list[str]]:
        """Fit a case's channels to a model's, where the layout allows it, with warnings."""
        return case, []


def header_problems(case: Case, max_voxels: int) -> list[DataError]:
    """Faults in the NIfTI headers of a case's files (a shared 4-D file is checked once)."""
    problems: list[DataError] = []
    per_file: dict[Path, int] = {}
    for ch, path in case.channels.items():
        per_file[path] = per_file.get(path, 0) + int(ch in case.channel_index)
    for path, shared in [*per_file.items(), *([(case.mask, 0)] if case.mask else [])]:
        try:
            read_nifti_header(path, max_voxels=max_voxels, n_channels=shared or None)
        except DataError as e:
            problems.append(e)
    return problems


def keep_readable(
    cases: Sequence[Case], max_voxels: int
) -> tuple[list[Case], list[DataError], int]:
    """Cases whose headers read cleanly, the header problems, and how many were left out."""
    kept: list[Case] = []
    problems: list[DataError] = []
    for case in cases:
        bad = header_problems(case, max_voxels)
        problems.extend(bad)
        if bad:
            logger.debug("%s: left out (%d problem(s) in its headers)", case.patient_id, len(bad))
        else:
            kept.append(case)
    return kept, problems, len(cases) - len(kept)


def entries(folder: Path) -> list[Path]:
    """Entries of ``folder``, sorted (empty if it cannot be listed: discovery's walk names it)."""
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def subdirs(folder: Path) -> list[Path]:
    """Visible subfolders of ``folder``, sorted (empty if it cannot be listed)."""
    try:
        return [p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
