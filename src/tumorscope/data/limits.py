"""The fixed bounds every reader checks, and the checks themselves, in one place.

``tumorscope data validate`` and the loaders (the training cache, ``predict``'s inputs,
evaluation) call these same functions, so whatever a loader would refuse, validation
reports first. Each bound is a constant — the same on every machine, never scaled to the
memory at hand — and each is checked *before* the work it bounds: from a NIfTI header, a
PNG/JPEG header, DICOM ``Rows × Columns × frames``, a file's size. The README's "Limits"
table lists them.

Sizes are budgets in bytes of what decoding produces, not counts of items: a 2 MB
``.nii.gz`` may declare 2 GB of complex voxels, an 86 KB PNG 88 million pixels.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tumorscope.data.errors import (
    DimensionError,
    DiskSpaceError,
    ImageTooLargeError,
    NonFiniteVoxelError,
    ValueRangeError,
    VolumeTooLargeError,
    VoxelTypeError,
)

#: Spatial voxels of one volume (512³; BraTS is 240×240×155, a HECKTOR CT 512×512×~300).
MAX_VOXELS = 2**27
#: Bytes one file or one case may decode to: voxels × channels × max(stored bytes, 4 for
#: float32). 768 MiB holds a HECKTOR CT+PET case at 512×512×384 (a 512×512×300 one is
#: 600 MiB), a 512³ float32 volume, or 4-channel BraTS (143 MB) five times over; loading a
#: case at the budget peaks near twice it (the case plus one channel being decoded).
MAX_DECODED_BYTES = 768 * 2**20
#: Widest stored voxel type read (float64 / int64); wider ones (complex, float128) are refused.
MAX_VOXEL_BYTES = 8
#: Longest side, in pixels, of a 2D image or of any axis of a volume. Preprocessing crops a
#: square of the longest side, so this also bounds every square the later steps allocate.
MAX_SIDE = 4096
#: Pixels of a 2D image (4096²). Every step that allocates an image-sized array — decoding,
#: the square crop, the overlay, the figure, Grad-CAM upsampling — stays within it.
MAX_IMAGE_PIXELS = MAX_SIDE * MAX_SIDE
#: Longest over shortest side of a 2D image; beyond it the crop and the plots degenerate.
MAX_ASPECT_RATIO = 16
#: Size of one CSV table (survival, clinical, endpoint): read whole, so bounded.
MAX_TABLE_BYTES = 16 * 2**20
#: Data rows of one CSV table, and entries of one ``dataset.json`` list (BraTS 2021 has
#: 1251 patients, HECKTOR 2022 ~900): each becomes a record in memory.
MAX_ROWS = 100_000
#: Size of one ``dataset.json`` (MSD, nnU-Net): parsed whole, so bounded.
MAX_JSON_BYTES = 16 * 2**20
#: Largest NIfTI ``vox_offset`` (header plus extensions): a larger one is a seek through
#: gigabytes of a gzip stream before any voxel.
MAX_NIFTI_OFFSET = 64 * 2**20
#: Largest survival / follow-up time in days (100 years).
MAX_SURVIVAL_DAYS = 36525.0
#: Plausible patient age in years, inclusive.
AGE_RANGE_YEARS = (0.0, 120.0)
#: Largest magnitude of any other clinical covariate.
MAX_CLINICAL_ABS = 1e6
#: Intensities after scaling must be finite float32 values.
FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT32_BYTES = 4


def human_bytes(n: float) -> str:
    """``1073741824`` → ``"1.0 GiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def decoded_bytes(voxels: int, *, channels: int = 1, itemsize: int = _FLOAT32_BYTES) -> int:
    """Bytes a read decodes to: ``voxels × channels × max(itemsize, 4)`` (float32 after casting)."""
    return int(voxels) * int(channels) * max(int(itemsize), _FLOAT32_BYTES)


def check_voxel_budget(
    path: str | Path,
    voxels: int,
    *,
    channels: int = 1,
    itemsize: int = _FLOAT32_BYTES,
    max_voxels: int = MAX_VOXELS,
    what: str = "header declares",
) -> None:
    """Refuse a read of ``voxels`` spatial voxels (× ``channels``) beyond the caps.

    ``max_voxels`` (``data.max_voxels``, ``--max-voxels``) may be set either way; the byte
    budget is fixed.

    Raises:
        VolumeTooLargeError: Above ``max_voxels``, or above :data:`MAX_DECODED_BYTES` once
            decoded.
    """
    if voxels > max_voxels:
        raise VolumeTooLargeError(path, f"{what} {voxels} voxels, above the cap of {max_voxels}")
    size = decoded_bytes(voxels, channels=channels, itemsize=itemsize)
    if size > MAX_DECODED_BYTES:
        per = f" × {channels} channels" if channels > 1 else ""
        raise VolumeTooLargeError(
            path,
            f"{what} {voxels} voxels{per} that decode to {human_bytes(size)}, above the "
            f"budget of {human_bytes(MAX_DECODED_BYTES)}",
        )


def check_volume(
    path: str | Path,
    spatial: Sequence[int],
    *,
    channels: int = 1,
    itemsize: int = _FLOAT32_BYTES,
    max_voxels: int = MAX_VOXELS,
) -> None:
    """Refuse a volume of shape ``spatial`` whose sides, voxels or decoded bytes exceed the caps.

    Raises:
        DimensionError: An empty or negative side.
        VolumeTooLargeError: A side above :data:`MAX_SIDE`, or the budget of
            :func:`check_voxel_budget`.
    """
    shape = tuple(int(s) for s in spatial)
    shown = "×".join(map(str, shape))
    if any(s <= 0 for s in shape):
        raise DimensionError(path, f"shape {shown} has an empty or negative side")
    n = math.prod(shape)
    what = f"shape {shown} holds"
    if n > max_voxels:  # the count first: it says most about a header claiming 2^40
        raise VolumeTooLargeError(path, f"{what} {n} voxels, above the cap of {max_voxels}")
    if max(shape, default=0) > MAX_SIDE:
        raise VolumeTooLargeError(
            path, f"shape {shown} has a side above the cap of {MAX_SIDE} voxels"
        )
    check_voxel_budget(
        path, n, channels=channels, itemsize=itemsize, max_voxels=max_voxels, what=what
    )


def check_case_bytes(
    path: str | Path, channels: int, spatial: Sequence[int], *, name: str = "the case"
) -> None:
    """Refuse a case (``name``) whose ``channels`` float32 volumes of shape ``spatial``
    exceed the budget.

    Raises:
        VolumeTooLargeError: Above :data:`MAX_DECODED_BYTES`.
    """
    size = decoded_bytes(math.prod(int(s) for s in spatial), channels=channels)
    if size > MAX_DECODED_BYTES:
        shown = "×".join(str(int(s)) for s in spatial)
        raise VolumeTooLargeError(
            path,
            f"{name}: {channels} channels of {shown} voxels decode to {human_bytes(size)} as float32, "
            f"above the budget of {human_bytes(MAX_DECODED_BYTES)}",
        )


def check_image_size(path: str | Path, height: int, width: int) -> None:
    """Refuse a 2D image the later steps cannot take, from its header (before decoding).

    Raises:
        DimensionError: No pixels, or an aspect ratio above :data:`MAX_ASPECT_RATIO`.
        ImageTooLargeError: A side above :data:`MAX_SIDE` or more than :data:`MAX_IMAGE_PIXELS`.
    """
    h, w = int(height), int(width)
    if h <= 0 or w <= 0:
        raise DimensionError(path, f"image of {h}×{w} pixels (height×width) has no pixels")
    if max(h, w) > MAX_SIDE or h * w > MAX_IMAGE_PIXELS:
        raise ImageTooLargeError(
            path,
            f"image of {h}×{w} pixels (height×width) is above the cap of {MAX_SIDE} pixels "
            f"per side ({MAX_IMAGE_PIXELS} pixels)",
        )
    if max(h, w) > MAX_ASPECT_RATIO * min(h, w):
        raise DimensionError(
            path,
            f"image of {h}×{w} pixels (height×width) has an aspect ratio of "
            f"{max(h, w) / min(h, w):.0f}:1, above the {MAX_ASPECT_RATIO}:1 that cropping and "
            "plotting take",
        )


def check_voxel_dtype(path: str | Path, dtype: np.dtype, label: str | None = None) -> None:
    """Refuse stored voxel types that are not one real number per voxel.

    Args:
        path: The file, named in the error.
        dtype: Stored dtype (from the header).
        label: The format's own name for it (NIfTI ``RGB``), if any.

    Raises:
        VoxelTypeError: Structured (RGB/RGBA), complex, non-numeric or wider than
            :data:`MAX_VOXEL_BYTES`.
    """
    name = label or str(dtype)
    if dtype.fields is not None or dtype.kind == "V":
        raise VoxelTypeError(
            path,
            f"voxels are stored as {name} (colour, several values per voxel); a volume must "
            "hold one intensity per voxel: convert it to greyscale or one file per channel",
        )
    if dtype.kind == "c":
        raise VoxelTypeError(
            path,
            f"voxels are stored as {name} (complex numbers); save the magnitude as a real "
            "(float32) volume",
        )
    if dtype.kind not in "biuf":
        raise VoxelTypeError(path, f"voxels are stored as {name}, not as numbers")
    if dtype.itemsize > MAX_VOXEL_BYTES:
        raise VoxelTypeError(
            path,
            f"voxels are stored as {name} ({dtype.itemsize} bytes each); the widest type read "
            f"is {MAX_VOXEL_BYTES} bytes (float64, int64)",
        )


def check_scale(path: str | Path, slope: float, inter: float, names: tuple[str, str]) -> None:
    """Refuse a non-finite scale factor or offset (``names`` as the format spells them).

    Raises:
        ValueRangeError: ``slope`` or ``inter`` is NaN or infinite.
    """
    for name, value in zip(names, (slope, inter), strict=True):
        if not math.isfinite(value):
            raise ValueRangeError(
                path, f"{name} is {value}, not a finite number: the intensities cannot be scaled"
            )


def check_value_range(path: str | Path, lo: float, hi: float, what: str) -> None:
    """Refuse values (``lo`` … ``hi`` after ``what``) beyond the float32 range.

    Raises:
        ValueRangeError: An end is non-finite or above :data:`FLOAT32_MAX` in magnitude.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or max(abs(lo), abs(hi)) > FLOAT32_MAX:
        raise ValueRangeError(
            path,
            f"values reach {lo:.3g} .. {hi:.3g} {what}, beyond the float32 range "
            f"(±{FLOAT32_MAX:.3g}) they are computed in",
        )


def to_float32(
    raw: np.ndarray,
    path: str | Path,
    *,
    slope: float = 1.0,
    inter: float = 0.0,
    what: str = "as stored",
) -> np.ndarray:
    """``raw × slope + inter`` as float32, refusing NaN/Inf and values beyond float32.

    The range is checked from ``raw``'s minimum and maximum before the float32 array is
    allocated; ``raw`` itself is never modified.

    Raises:
        NonFiniteVoxelError: ``raw`` holds NaN or Inf.
        ValueRangeError: Values after scaling leave the float32 range.
    """
    if raw.dtype.kind == "f":
        bad = int(raw.size - np.count_nonzero(np.isfinite(raw)))
        if bad:
            raise NonFiniteVoxelError(path, f"{bad} of {raw.size} voxels are NaN or Inf")
    scaled = slope != 1.0 or inter != 0.0
    if raw.size:
        ends = [float(raw.min()) * slope + inter, float(raw.max()) * slope + inter]
        check_value_range(path, min(ends), max(ends), what)
    out = raw.astype(np.float32, copy=scaled or raw.dtype != np.float32)
    if scaled:
        out *= np.float32(slope)
        out += np.float32(inter)
        # float32 rounding at the very edge of the range can still overflow.
        if not np.isfinite(out).all():
            check_value_range(path, -math.inf, math.inf, what)
    return out


def survival_fault(days: float) -> str | None:
    """Why ``days`` is not a usable survival time, or None (finite, ≥ 0, ≤ 100 years)."""
    if not math.isfinite(days):
        return "is not finite"
    if days < 0:
        return "is negative"
    if days > MAX_SURVIVAL_DAYS:
        return f"is above {MAX_SURVIVAL_DAYS:g} days (100 years)"
    return None


def clinical_fault(name: str, value: float) -> str | None:
    """Why a clinical covariate's value is not usable, or None.

    Ages (a column named ``Age``) must lie in :data:`AGE_RANGE_YEARS`; every other value
    must be finite and at most :data:`MAX_CLINICAL_ABS` in magnitude.
    """
    if not math.isfinite(value):
        return "is not finite"
    if name.strip().lower() == "age":
        lo, hi = AGE_RANGE_YEARS
        if not lo <= value <= hi:
            return f"is outside {lo:g}..{hi:g} years"
        return None
    if abs(value) > MAX_CLINICAL_ABS:
        return f"is above {MAX_CLINICAL_ABS:g} in magnitude"
    return None


# Progressive JPEG decodes every scan over the whole image: a file of many tiny scans is a
# CPU bomb under the pixel cap. Encoders write about 10; libjpeg-turbo's own limit is 500.
MAX_JPEG_SCANS = 100
# A 2D image file larger than this cannot be a 4096² PNG/JPEG of sane content.
MAX_IMAGE_FILE_BYTES = 256 * 2**20


def check_jpeg_scans(path: str | Path, data: bytes) -> None:
    """Refuse a JPEG with more than :data:`MAX_JPEG_SCANS` scans (start-of-scan markers;
    entropy-coded bytes stuff every 0xFF, so ``FF DA`` is always a marker).

    Raises:
        ImageTooLargeError: Too many scans to decode in bounded work.
    """
    scans = data.count(b"\xff\xda")
    if scans > MAX_JPEG_SCANS:
        raise ImageTooLargeError(
            path, f"JPEG has {scans} scans, above the cap of {MAX_JPEG_SCANS} (decoding work)"
        )


def check_disk_space(path: Path, nbytes: int) -> None:
    """Refuse to write ``nbytes`` into ``path`` when its disk has less free (a pre-flight
    check, so a cache never fills the disk half way).

    Raises:
        DiskSpaceError: Less than ``nbytes`` free where ``path`` will be written.
    """
    free = shutil.disk_usage(path.parent).free
    if nbytes > free:
        raise DiskSpaceError(
            path, f"needs up to {human_bytes(nbytes)} but the disk has {human_bytes(free)} free"
        )


def check_file_size(path: Path, limit: int, what: str) -> str | None:
    """Why a file is too large to read whole (``what`` names it), or None."""
    size = path.stat().st_size
    if size > limit:
        return f"{what} holds {human_bytes(size)}, above the cap of {human_bytes(limit)}"
    return None
