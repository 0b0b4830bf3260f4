"""DICOM series folders as a layout: each folder of ``*.dcm`` files is one series, named by
its Modality; decoding and series checks live in :mod:`tumorscope.data.dicom`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tumorscope.data.dicom import (
    SOURCE,
    check_series,
    dicom_files,
    read_dicom_series,
    series_channel,
)
from tumorscope.data.errors import DicomSeriesError
from tumorscope.data.layouts.base import Discovery, Layout, subdirs
from tumorscope.data.types import Case, DataError, ImageMeta

#: Folder levels below a path searched for the series of one case.
SERIES_DEPTH = 2


def series_under(folder: Path) -> list[Path]:
    """``[folder]`` if it holds DICOM files, else its subfolders that do (one series each)."""
    if dicom_files(folder):
        return [folder]
    return [p for p in subdirs(folder) if dicom_files(p)]


def _series_of_case(path: Path) -> list[Path]:
    """Series folders at ``path`` or up to :data:`SERIES_DEPTH` levels below it."""
    found: list[Path] = []
    frontier = [path]
    for _ in range(SERIES_DEPTH + 1):
        nxt: list[Path] = []
        for folder in frontier:
            if dicom_files(folder):
                found.append(folder)
            else:
                nxt.extend(subdirs(folder))
        frontier = nxt
    return found


class DicomLayout(Layout):
    """DICOM series: one case per series folder (channel ``ct``, ``pet`` or the modality)."""

    name = SOURCE

    def detect(self, folder: Path) -> bool:
        return bool(series_under(folder))

    def claimed(self, folder: Path) -> set[Path]:
        return set(series_under(folder))

    def discover(self, root: Path, *, max_voxels: int) -> Discovery:
        cases = [
            Case(patient_id=f.name, source=SOURCE, channels={series_channel(f): f})
            for f in series_under(root)
        ]
        return Discovery(cases=cases)

    def read_case(self, path: Path) -> tuple[Case | None, list[DataError]]:
        """A series folder, or a folder of series (one per modality), as one case."""
        series = _series_of_case(path) if path.is_dir() else []
        if not series:
            return None, []
        channels = {series_channel(f): f for f in series}
        if len(channels) < len(series):
            return None, [
                DicomSeriesError(
                    path,
                    f"{len(series)} DICOM series of the same modality; expected one per channel",
                )
            ]
        return Case(patient_id=path.name, source=SOURCE, channels=channels), []

    def explain_absent(self, folders: Sequence[Path]) -> str:
        return "no *.dcm series"

    def case_folder(self, case: Case) -> Path:
        return next(iter(case.channels.values()), Path(case.patient_id))

    def read_channel(
        self, case: Case, channel: str, *, max_voxels: int
    ) -> tuple[np.ndarray, ImageMeta]:
        return read_dicom_series(case.channels[channel], max_voxels=max_voxels)

    def check_channel(
        self, case: Case, channel: str, *, max_voxels: int
    ) -> tuple[ImageMeta | None, list[DataError]]:
        """Every file's fault first (:func:`check_series`), then the stacked volume's."""
        _, problems = check_series(case.channels[channel], max_voxels=max_voxels)
        if problems:
            return None, problems
        return super().check_channel(case, channel, max_voxels=max_voxels)

    def fit_channels(self, case: Case, channels: Sequence[str]) -> tuple[Case, list[str]]:
        """A lone series of a one-channel model stands for its channel: a DICOM series is
        named by Modality (``MR``), which does not say which MR contrast it is."""
        if len(case.channels) != 1 or len(channels) != 1 or channels[0] in case.channels:
            return case, []
        modality, folder = next(iter(case.channels.items()))
        fitted = Case(
            patient_id=case.patient_id, source=case.source, channels={channels[0]: folder}
        )
        return fitted, [
            f"DICOM {modality.upper()} series taken as the model's {channels[0]} channel"
        ]
