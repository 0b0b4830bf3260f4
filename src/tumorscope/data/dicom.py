"""DICOM volumes read through pydicom: series folders and multi-frame files.

A folder holds one series of ``*.dcm`` files (files without a suffix are included when they
carry the ``DICM`` prefix; other files are ignored). Slices are sorted by
ImagePositionPatient along the slice normal, RescaleSlope/Intercept are applied (HU for CT)
and the volume is returned in canonical RAS orientation. A multi-frame file (Enhanced MR,
CT or PET) is a volume when its functional groups place every frame. Every per-file fault
(empty, no preamble, truncated, pixel data shorter than declared, no decoder for its
transfer syntax; :func:`tumorscope.data.dicomfile.read_slice`, checked before any pixel is
decoded) and every series fault (more than one series, missing or uneven slice spacing)
names the files or frames involved.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from tumorscope.data.dicomfile import decode, header_modality, is_dicom_file, read_slice, rescaled
from tumorscope.data.errors import (
    DicomSeriesError,
    DimensionError,
    HeaderError,
    SingularAffineError,
    SliceSpacingError,
    SpacingError,
    VolumeTooLargeError,
)
from tumorscope.data.limits import check_voxel_budget
from tumorscope.data.readers import DEFAULT_MAX_VOXELS, canonical_with_meta
from tumorscope.data.types import DataError, ImageMeta

logger = logging.getLogger(__name__)

SOURCE = "dicom"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_MODALITY_CHANNEL = {"CT": "ct", "PT": "pet"}


def dicom_files(folder: str | Path) -> list[Path]:
    """Files of ``folder`` taken as DICOM: ``*.dcm`` plus suffix-less files with a ``DICM`` prefix."""
    try:  # a folder that cannot be listed is named by discovery's walk
        listed = sorted(Path(folder).iterdir())
    except OSError:
        return []
    return [p for p in listed if is_dicom_file(p)]


def series_modality(folder: Path) -> str | None:
    """Modality of a series from the header of its first readable file (None if none says)."""
    for p in dicom_files(folder):
        found = header_modality(p)
        if found is not None:
            return found
    return None


def series_channel(folder: Path) -> str:
    """Canonical channel name of a series from its Modality (``ct``, ``pet``, else lower-cased)."""
    found = series_modality(folder) or ""
    return _MODALITY_CHANNEL.get(found, found.lower() or "image")


def check_series(
    folder: str | Path, *, max_voxels: int = DEFAULT_MAX_VOXELS
) -> tuple[list[tuple[Path, pydicom.Dataset]], list[DataError]]:
    """Read every file of a series folder and check the series; collect every problem.

    Returns:
        ``(slices, problems)``: slices sorted along the slice normal (empty if any problem).
    """
    folder = Path(folder)
    files = dicom_files(folder)
    if not files:
        return [], [DicomSeriesError(folder, "no DICOM files (*.dcm) in the folder")]
    problems: list[DataError] = []
    read: list[tuple[Path, pydicom.Dataset]] = []
    for p in files:
        try:
            read.append((p, read_slice(p)))
        except DataError as e:
            problems.append(e)
    if problems:
        return [], problems
    by_uid: dict[str, list[Path]] = {}
    for p, ds in read:
        by_uid.setdefault(str(ds.get("SeriesInstanceUID", "<no SeriesInstanceUID>")), []).append(p)
    if len(by_uid) > 1:
        # Series UIDs identify a study (PS3.15 Annex E): list the files by series, not the UIDs.
        listing = "; ".join(
            f"series {k + 1}: {', '.join(p.name for p in ps)}"
            for k, ps in enumerate(by_uid.values())
        )
        return [], [DicomSeriesError(folder, f"{len(by_uid)} series in one folder ({listing})")]
    needed = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
    missing = [p.name for p, ds in read if any(k not in ds for k in needed)]
    if missing:
        return [], [SliceSpacingError(folder, f"no {'/'.join(needed)} in {', '.join(missing)}")]
    bad_geometry = [f for p, ds in read if (f := _geometry_fault(p, ds)) is not None]
    if bad_geometry:
        return [], bad_geometry
    n_vox = sum(int(ds.Rows) * int(ds.Columns) for _, ds in read)
    try:
        check_voxel_budget(folder, n_vox, max_voxels=max_voxels, what="series declares")
    except VolumeTooLargeError as e:
        return [], [e]
    shapes = {(int(ds.Rows), int(ds.Columns)) for _, ds in read}
    if len(shapes) > 1:
        return [], [
            DicomSeriesError(folder, f"slices differ in size {sorted(shapes)}: cannot stack")
        ]
    first = read[0][1]
    odd = [p.name for p, ds in read if not _same_plane(ds, first)]
    if odd:
        return [], [
            DicomSeriesError(
                folder,
                f"orientation or pixel spacing differs from {read[0][0].name} in {', '.join(odd)}",
            )
        ]
    normal = _normal(first)
    pos = [
        (float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal)), p, ds) for p, ds in read
    ]
    pos.sort(key=lambda t: t[0])
    if len(pos) == 1:
        thick = first.get("SpacingBetweenSlices", first.get("SliceThickness"))
        fault = None if thick is not None and float(thick) > 0 else (
            f"one slice ({pos[0][1].name}) and no positive SliceThickness: "
            "slice spacing is missing"
        )  # fmt: skip
    else:
        fault = spacing_fault([(z, p.name) for z, p, _ in pos])
    if fault:
        return [], [SliceSpacingError(folder, fault)]
    return [(p, ds) for _, p, ds in pos], []


def _geometry_fault(path: Path, ds: Any) -> DataError | None:
    """Check position (3 numbers), orientation (6) and pixel spacing (2 positive numbers)."""
    try:
        ipp = np.asarray(ds.ImagePositionPatient, dtype=np.float64)
        iop = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
        spacing = np.asarray(ds.PixelSpacing, dtype=np.float64)
    except (TypeError, ValueError) as e:
        return HeaderError(path, f"non-numeric position, orientation or pixel spacing ({e})")
    if ipp.shape != (3,) or iop.shape != (6,) or spacing.shape != (2,):
        return HeaderError(
            path, "ImagePositionPatient/ImageOrientationPatient/PixelSpacing have the wrong length"
        )
    if not (np.all(np.isfinite(ipp)) and np.all(np.isfinite(iop))):
        return HeaderError(path, "non-finite ImagePositionPatient or ImageOrientationPatient")
    if not (np.all(np.isfinite(spacing)) and np.all(spacing > 0)):
        return SpacingError(
            path, f"PixelSpacing {spacing.tolist()} mm is zero, negative or non-finite"
        )
    if np.linalg.norm(np.cross(iop[:3], iop[3:])) < 1e-3:
        return SingularAffineError(
            path, f"ImageOrientationPatient {iop.tolist()} has parallel row/column axes"
        )
    return None


def _same_plane(ds: Any, first: Any) -> bool:
    """True when ``ds`` has ``first``'s orientation and pixel spacing."""
    return np.allclose(
        np.asarray(ds.ImageOrientationPatient, float),
        np.asarray(first.ImageOrientationPatient, float),
        atol=1e-4,
    ) and np.allclose(
        np.asarray(ds.PixelSpacing, float), np.asarray(first.PixelSpacing, float), atol=1e-4
    )


def _normal(ds: Any) -> np.ndarray:
    iop = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
    return np.cross(iop[:3], iop[3:])


def spacing_fault(zs: list[tuple[float, str]]) -> str | None:
    """The fault of two or more slice positions along the normal, sorted, each with the name
    errors give it (a file, a frame); None when they are distinct and evenly spaced."""
    gaps = np.diff([z for z, _ in zs])
    dup = [f"{zs[i][1]}, {zs[i + 1][1]}" for i in np.flatnonzero(gaps < 1e-4)]
    if dup:
        return f"slices at the same position: {'; '.join(dup)}"
    med = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - med) > max(1e-3, 1e-3 * med))
    if bad.size:
        listed = "; ".join(f"{zs[i][1]}→{zs[i + 1][1]} {gaps[i]:.3f} mm" for i in bad)
        return f"uneven slice spacing (median {med:.3f} mm): {listed}"
    return None


def slice_gap(slices: list[tuple[Path, pydicom.Dataset]]) -> float:
    """Slice spacing in mm along the normal (SliceThickness for a single slice)."""
    if len(slices) == 1:
        ds = slices[0][1]
        return float(ds.get("SpacingBetweenSlices", ds.get("SliceThickness")))
    normal = _normal(slices[0][1])
    zs = [float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal)) for _, ds in slices]
    return float(np.median(np.diff(zs)))


def read_dicom_series(
    folder: str | Path, *, max_voxels: int = DEFAULT_MAX_VOXELS
) -> tuple[np.ndarray, ImageMeta]:
    """Read a single-series DICOM folder into a canonical RAS volume.

    Args:
        folder: Folder holding one series of ``*.dcm`` files.
        max_voxels: Largest voxel count accepted, checked from the headers before decoding.

    Returns:
        ``(volume, meta)``: ``(X, Y, Z)`` float32 after RescaleSlope/Intercept (HU for CT),
        with spacing in mm and the RAS affine (DICOM's LPS converted).

    Raises:
        DataError: The first problem, or a :class:`DicomSeriesError` listing them all.
    """
    folder = Path(folder)
    slices, problems = check_series(folder, max_voxels=max_voxels)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise DicomSeriesError(
            folder,
            f"{len(problems)} files cannot be read: "
            + "; ".join(f"{e.path.name} ({e.fault})" for e in problems),
        )
    planes = []
    for p, ds in slices:
        if int(ds.get("NumberOfFrames", 1) or 1) != 1:
            raise DimensionError(p, "multi-frame DICOM is not a slice of a series")
        pixels = decode(p, ds)
        if pixels.ndim != 2:
            raise DimensionError(
                p, f"expected a greyscale slice, got pixel array of shape {pixels.shape}"
            )
        # (rows, cols) → (cols, rows): first array axis follows the row direction cosine.
        planes.append(rescaled(p, pixels, ds).T)
    volume = np.stack(planes, axis=-1)
    first = slices[0][1]
    affine = ras_affine(
        first.ImageOrientationPatient,
        first.PixelSpacing,
        slice_gap(slices),
        first.ImagePositionPatient,
    )
    return canonical_with_meta(volume, affine, Path(folder))


def ras_affine(iop: Any, pixel_spacing: Any, gap: float, ipp: Any) -> np.ndarray:
    """RAS affine (LPS converted) of planes ``gap`` mm apart along the normal, voxel
    ``(i, j, k)`` being column ``i``, row ``j`` of plane ``k`` from ImageOrientationPatient
    ``iop``, PixelSpacing and the first plane's ImagePositionPatient ``ipp``."""
    cosines = np.asarray(iop, dtype=np.float64)
    row_sp, col_sp = (float(v) for v in pixel_spacing)
    lps = np.eye(4)
    lps[:3, 0] = cosines[:3] * col_sp
    lps[:3, 1] = cosines[3:] * row_sp
    lps[:3, 2] = np.cross(cosines[:3], cosines[3:]) * gap
    lps[:3, 3] = np.asarray(ipp, dtype=np.float64)
    return _LPS_TO_RAS @ lps


# Functional group → attribute a frame of a multi-frame file takes from it.
_FRAME_GROUPS = (
    ("PlanePositionSequence", "ImagePositionPatient"),
    ("PlaneOrientationSequence", "ImageOrientationPatient"),
    ("PixelMeasuresSequence", "PixelSpacing"),
    ("PixelValueTransformationSequence", "RescaleSlope"),
    ("PixelValueTransformationSequence", "RescaleIntercept"),
)
_GEOMETRY = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")


def _frame_views(ds: Any) -> list[pydicom.Dataset]:
    """Per frame, the attributes its functional groups give it: its own group first, then the
    shared one, then the top level (pydicom reads the groups but applies none of them)."""
    shared = (ds.get("SharedFunctionalGroupsSequence") or [pydicom.Dataset()])[0]
    views = []
    for item in ds.PerFrameFunctionalGroupsSequence:
        view = pydicom.Dataset()
        for sequence, key in _FRAME_GROUPS:
            found = [g[sequence][0] for g in (item, shared) if g.get(sequence)]
            source = next((f for f in found if key in f), ds if key in ds else None)
            if source is not None:
                setattr(view, key, source[key].value)
        views.append(view)
    return views


def _listed(names: list[str], most: int = 5) -> str:
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def read_dicom_frames(
    path: str | Path, *, max_voxels: int = DEFAULT_MAX_VOXELS
) -> tuple[np.ndarray, ImageMeta]:
    """Read a multi-frame DICOM file (Enhanced MR, CT, PET) into a canonical RAS volume.

    Each frame is placed by its functional groups (PlanePositionSequence; orientation,
    PixelMeasuresSequence and PixelValueTransformationSequence per frame or shared), and
    the frames are sorted along the slice normal as a series' slices are.

    Args:
        path: The file.
        max_voxels: Largest voxel count accepted, checked from the header before decoding.

    Returns:
        ``(volume, meta)``: ``(X, Y, Z)`` float32 after each frame's rescale, with spacing
        in mm and the RAS affine (DICOM's LPS converted).

    Raises:
        DataError: A subclass naming the file and the fault: no per-frame geometry (a cine
            loop, a secondary capture), frames at one position (echoes or time points),
            uneven spacing, differing orientation, undecodable pixel data.
    """
    path = Path(path)
    ds = read_slice(path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    groups = ds.get("PerFrameFunctionalGroupsSequence") or []
    if frames < 2:
        raise DimensionError(path, "one frame: a 2D image, not a volume")
    if len(groups) != frames:
        held = f"{len(groups)} per-frame functional groups" if groups else "no per-frame geometry"
        raise SliceSpacingError(
            path,
            f"{frames} frames and {held} (PerFrameFunctionalGroupsSequence with "
            "PlanePositionSequence): the frames cannot be placed as a volume",
        )
    rows, cols = int(ds.Rows), int(ds.Columns)
    check_voxel_budget(path, frames * rows * cols, max_voxels=max_voxels, what="file declares")
    views = _frame_views(ds)
    names = [f"frame {k + 1}" for k in range(frames)]
    missing = [n for n, v in zip(names, views, strict=True) if any(k not in v for k in _GEOMETRY)]
    if missing:
        raise SliceSpacingError(path, f"no {'/'.join(_GEOMETRY)} for {_listed(missing)}")
    for name, view in zip(names, views, strict=True):
        bad = _geometry_fault(path, view)
        if bad is not None:
            raise type(bad)(path, f"{name}: {bad.fault}")
    odd = [n for n, v in zip(names, views, strict=True) if not _same_plane(v, views[0])]
    if odd:
        raise DicomSeriesError(
            path, f"orientation or pixel spacing differs from frame 1 in {_listed(odd)}"
        )
    normal = _normal(views[0])
    zs = [float(np.dot(np.asarray(v.ImagePositionPatient, float), normal)) for v in views]
    order = sorted(range(frames), key=lambda k: zs[k])
    fault = spacing_fault([(zs[k], names[k]) for k in order])
    if fault:
        raise SliceSpacingError(path, fault)
    pixels = decode(path, ds)
    if pixels.shape != (frames, rows, cols):
        raise DimensionError(
            path, f"pixel array of shape {pixels.shape} is not {frames} greyscale frames"
        )
    volume = np.stack([rescaled(path, pixels[k], views[k]).T for k in order], axis=-1)
    first = views[order[0]]
    gap = float(np.median(np.diff(sorted(zs))))
    affine = ras_affine(
        first.ImageOrientationPatient, first.PixelSpacing, gap, first.ImagePositionPatient
    )
    return canonical_with_meta(volume, affine, path)
