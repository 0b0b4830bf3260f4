"""DICOM series folders read through pydicom.

A folder holds one series of ``*.dcm`` files (files without a suffix are included when they
carry the ``DICM`` prefix; other files are ignored). Slices are sorted by
ImagePositionPatient along the slice normal, RescaleSlope/Intercept are applied (HU for CT)
and the volume is returned in canonical RAS orientation. Every per-file fault (empty, no
preamble, truncated, pixel data shorter than declared) and every series fault (more than one
series, missing or uneven slice spacing) names the files involved. The budgets of
:mod:`tumorscope.data.limits` are checked from each header before any pixel is decoded:
file size, ``Rows × Columns × frames``, one sample per pixel, and a RescaleSlope/Intercept
that keeps every storable value inside float32.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_rescale

from tumorscope.data.errors import (
    DicomPixelDataError,
    DicomPreambleError,
    DicomSeriesError,
    DimensionError,
    HeaderError,
    SingularAffineError,
    SliceSpacingError,
    SpacingError,
    TruncatedFileError,
    VolumeTooLargeError,
    VoxelTypeError,
)
from tumorscope.data.limits import (
    MAX_DECODED_BYTES,
    check_scale,
    check_value_range,
    check_volume,
    check_voxel_budget,
    human_bytes,
    to_float32,
)
from tumorscope.data.readers import DEFAULT_MAX_VOXELS, canonical_with_meta, check_file
from tumorscope.data.types import DataError, ImageMeta

logger = logging.getLogger(__name__)

SOURCE = "dicom"
_PIXEL_DATA = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_MODALITY_CHANNEL = {"CT": "ct", "PT": "pet"}


def dicom_files(folder: str | Path) -> list[Path]:
    """Files of ``folder`` taken as DICOM: ``*.dcm`` plus suffix-less files with a ``DICM`` prefix."""
    out: list[Path] = []
    try:  # a folder that cannot be listed is named by discovery's walk
        listed = sorted(Path(folder).iterdir())
    except OSError:
        return out
    for p in listed:
        if not p.is_file():
            continue
        if p.suffix.lower() == ".dcm":
            out.append(p)
        elif not p.suffix and p.stat().st_size >= 132:
            try:
                with p.open("rb") as f:
                    if f.read(132)[128:] == b"DICM":
                        out.append(p)
            except OSError:  # cannot be opened: named by discovery's walk
                continue
    return out


def series_channel(folder: Path) -> str:
    """Canonical channel name of a series from its first file's Modality (``ct``, ``pet``, else lower-cased)."""
    for p in dicom_files(folder):
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["Modality"])
        except Exception:  # any unreadable file is reported by validation; naming falls back
            continue
        modality = str(ds.get("Modality", "")).upper()
        return _MODALITY_CHANNEL.get(modality, modality.lower() or "image")
    return "image"


def read_slice(path: Path) -> pydicom.Dataset:
    """Read and check one DICOM file (preamble, truncation, pixel data length, the budgets
    and the rescale range), without decoding its pixels.

    Raises:
        DataError: A subclass naming the file and the fault.
    """
    check_file(path)
    size = path.stat().st_size
    if size > MAX_DECODED_BYTES:
        raise VolumeTooLargeError(
            path,
            f"file holds {human_bytes(size)}, above the budget of "
            f"{human_bytes(MAX_DECODED_BYTES)} one slice may take",
        )
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise DicomPreambleError(
            path, "no 128-byte preamble and 'DICM' prefix: not a DICOM Part 10 file"
        ) from None
    except Exception as e:  # pydicom raises many types on malformed headers; all mean "unparseable"
        raise HeaderError(
            path, f"DICOM header cannot be parsed ({type(e).__name__}: {e})"
        ) from None
    for elem in ds.elements():
        # pydicom reads a truncated file without complaint; the declared lengths tell.
        if (
            isinstance(elem, RawDataElement)
            and elem.length != _UNDEFINED_LENGTH
            and elem.value is not None
            and len(elem.value) < elem.length
        ):
            raise TruncatedFileError(
                path,
                f"file ends inside element {elem.tag}: {len(elem.value)} of {elem.length} bytes present",
            )
    if _PIXEL_DATA not in ds:
        raise DicomPixelDataError(path, "no pixel data element (truncated file or not an image)")
    missing = [k for k in ("Rows", "Columns", "BitsAllocated") if k not in ds]
    if missing:
        raise HeaderError(path, f"image attributes missing: {', '.join(missing)}")
    try:
        rows, cols, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1))
    except (TypeError, ValueError) as e:
        raise HeaderError(path, f"invalid image attributes ({e})") from None
    if samples != 1:
        raise VoxelTypeError(
            path, f"{samples} samples per pixel (colour); a series slice must be greyscale"
        )
    check_volume(path, (cols, rows, frames), itemsize=max(1, bits // 8))
    _check_rescale(path, ds)
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is not None and not syntax.is_compressed:
        declared = rows * cols * samples * frames * bits // 8
        have = len(ds.PixelData)
        if have < declared:
            raise DicomPixelDataError(
                path, f"pixel data holds {have} bytes, Rows×Columns×bits declare {declared} bytes"
            )
    return ds


def _rescale(path: Path, ds: Any) -> tuple[float, float]:
    """``(RescaleSlope, RescaleIntercept)``, ``(1, 0)`` where absent.

    Raises:
        HeaderError: A value that is not one number.
    """
    try:
        slope = float(ds.get("RescaleSlope", 1.0))
        inter = float(ds.get("RescaleIntercept", 0.0))
    except (TypeError, ValueError) as e:
        raise HeaderError(path, f"RescaleSlope/RescaleIntercept is not a number ({e})") from None
    return slope, inter


def _check_rescale(path: Path, ds: Any) -> None:
    """Refuse a rescale that is non-finite or takes storable values beyond float32."""
    slope, inter = _rescale(path, ds)
    check_scale(path, slope, inter, ("RescaleSlope", "RescaleIntercept"))
    try:
        stored = int(ds.get("BitsStored", ds.BitsAllocated))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
    except (TypeError, ValueError) as e:
        raise HeaderError(path, f"invalid BitsStored/PixelRepresentation ({e})") from None
    stored = min(max(stored, 1), 64)
    lo, hi = (-(2 ** (stored - 1)), 2 ** (stored - 1) - 1) if signed else (0, 2**stored - 1)
    ends = sorted((lo * slope + inter, hi * slope + inter))
    check_value_range(
        path,
        ends[0],
        ends[1],
        f"for {stored}-bit pixels after RescaleSlope {slope:g} and RescaleIntercept {inter:g}",
    )


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
    odd = [
        p.name
        for p, ds in read
        if not np.allclose(
            np.asarray(ds.ImageOrientationPatient, float),
            np.asarray(first.ImageOrientationPatient, float),
            atol=1e-4,
        )
        or not np.allclose(
            np.asarray(ds.PixelSpacing, float), np.asarray(first.PixelSpacing, float), atol=1e-4
        )
    ]
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
    fault = _spacing_fault([(z, p) for z, p, _ in pos], read[0][1])
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


def _normal(ds: Any) -> np.ndarray:
    iop = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
    return np.cross(iop[:3], iop[3:])


def _spacing_fault(zs: list[tuple[float, Path]], first: Any) -> str | None:
    if len(zs) == 1:
        thick = first.get("SpacingBetweenSlices", first.get("SliceThickness"))
        if thick is None or not float(thick) > 0:
            return f"one slice ({zs[0][1].name}) and no positive SliceThickness: slice spacing is missing"
        return None
    gaps = np.diff([z for z, _ in zs])
    dup = [f"{zs[i][1].name}, {zs[i + 1][1].name}" for i in np.flatnonzero(gaps < 1e-4)]
    if dup:
        return f"slices at the same position: {'; '.join(dup)}"
    med = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - med) > max(1e-3, 1e-3 * med))
    if bad.size:
        listed = "; ".join(f"{zs[i][1].name}→{zs[i + 1][1].name} {gaps[i]:.3f} mm" for i in bad)
        return f"uneven slice spacing (median {med:.3f} mm): {listed}"
    return None


def _rescaled(path: Path, pixels: np.ndarray, ds: Any) -> np.ndarray:
    """A slice's pixels in float32 after its rescale (HU for CT), the range checked."""
    if "ModalityLUTSequence" in ds:  # a lookup table instead of slope/intercept: pydicom's
        return to_float32(
            np.asarray(apply_rescale(pixels, ds)), path, what="after the Modality LUT"
        )
    slope, inter = _rescale(path, ds)
    what = f"after RescaleSlope {slope:g} and RescaleIntercept {inter:g}"
    return to_float32(pixels, path, slope=slope, inter=inter, what=what)


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
        try:
            pixels = ds.pixel_array
        except Exception as e:  # decoders raise many types (missing codec, corrupt stream)
            raise DicomPixelDataError(p, f"pixel data cannot be decoded ({e})") from None
        if pixels.ndim != 2:
            raise DimensionError(
                p, f"expected a greyscale slice, got pixel array of shape {pixels.shape}"
            )
        # (rows, cols) → (cols, rows): first array axis follows the row direction cosine.
        planes.append(_rescaled(p, pixels, ds).T)
    volume = np.stack(planes, axis=-1)
    first = slices[0][1]
    iop = np.asarray(first.ImageOrientationPatient, dtype=np.float64)
    row_sp, col_sp = (float(v) for v in first.PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * col_sp
    lps[:3, 1] = iop[3:] * row_sp
    lps[:3, 2] = _normal(first) * slice_gap(slices)
    lps[:3, 3] = np.asarray(first.ImagePositionPatient, dtype=np.float64)
    return canonical_with_meta(volume, _LPS_TO_RAS @ lps, Path(folder))
