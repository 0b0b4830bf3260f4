"""NIfTI readers that validate at the boundary, and the format sniffing every reader shares.

NIfTI files are checked from their header *before* any voxel is decompressed (a 1 MB
``.nii.gz`` can declare gigabytes): stored type, shape, decoded bytes and scale factors
against :mod:`tumorscope.data.limits`. Voxels are read through nibabel unscaled, scaled to
float32 here with the range checked, and reoriented to the closest canonical (RAS+)
orientation; a 4-D file with channels on its last axis (MSD images) is read one channel at a
time. :func:`write_like` writes an array back in the file's stored geometry. PNG/JPEG
images are read by :mod:`tumorscope.data.images`, CSV tables by :mod:`tumorscope.data.tables`.
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.affines import voxel_sizes
from nibabel.arrayproxy import ArrayProxy
from nibabel.orientations import (
    aff2axcodes,
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)
from nibabel.spatialimages import HeaderDataError

from tumorscope.data.errors import (
    DimensionError,
    EmptyFileError,
    ExtensionMismatchError,
    HeaderError,
    MissingFileError,
    NotGzipError,
    NotNiftiError,
    ReadError,
    SingularAffineError,
    SpacingError,
    TruncatedFileError,
    UnreadableFileError,
)
from tumorscope.data.limits import (
    MAX_NIFTI_OFFSET,
    MAX_VOXELS,
    check_scale,
    check_volume,
    check_voxel_dtype,
    to_float32,
)
from tumorscope.data.types import ImageMeta
from tumorscope.data.walk import entry_fault
from tumorscope.fileio import atomic_write_via

logger = logging.getLogger(__name__)
# nibabel's header checks log each fixable oddity; we raise on the real faults instead.
_SILENT = logging.Logger("tumorscope.nifti-header-check", level=logging.CRITICAL + 1)

#: The voxel cap readers apply unless given a smaller one (:data:`~tumorscope.data.limits.MAX_VOXELS`).
DEFAULT_MAX_VOXELS = MAX_VOXELS
NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

_GZIP_MAGIC = b"\x1f\x8b"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_NIFTI2_HEADER_BYTES = 540
_NIFTI1_HEADER_BYTES = 348


def sniff_format(head: bytes) -> str | None:
    """Name the format of a file from its first bytes.

    Args:
        head: At least the first 540 bytes of the file (fewer if the file is shorter).

    Returns:
        ``"gzip"``, ``"png"``, ``"jpeg"``, ``"dicom"``, ``"nifti1"``, ``"nifti2"`` or None.
    """
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head[128:132] == b"DICM":
        return "dicom"
    if len(head) >= 4:
        for order in ("<", ">"):
            size = int(np.frombuffer(head[:4], dtype=f"{order}i4")[0])
            if size == _NIFTI1_HEADER_BYTES:
                return "nifti1"
            if size == _NIFTI2_HEADER_BYTES:
                return "nifti2"
    return None


def is_nifti_path(path: Path) -> bool:
    """True if the file name ends in ``.nii`` or ``.nii.gz`` (case-insensitive)."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def check_file(path: Path) -> None:
    """Refuse a path that is not a non-empty regular file that can be opened.

    Raises:
        MissingFileError: Nothing is there.
        UnreadableFileError: A dangling link, FIFO, device or folder, or no permission.
        EmptyFileError: Zero bytes.
    """
    fault = entry_fault(path)
    if fault is not None:
        raise UnreadableFileError(path, fault)
    if not path.is_file():
        raise MissingFileError(path, "file does not exist")
    if path.stat().st_size == 0:
        raise EmptyFileError(path, "file is empty (0 bytes)")


def _read_nifti_head(path: Path) -> tuple[bytes, bool]:
    """Return the first 540 decompressed bytes and whether the file is gzip-compressed."""
    with path.open("rb") as f:
        raw = f.read(_NIFTI2_HEADER_BYTES)
    fmt = sniff_format(raw)
    gz_name = path.name.lower().endswith(".gz")
    if gz_name and fmt != "gzip":
        if fmt in ("png", "jpeg", "dicom", "nifti1", "nifti2"):
            raise ExtensionMismatchError(
                path, f"content is {fmt.upper()}, not gzip as the .gz extension says"
            )
        raise NotGzipError(
            path, "not gzip-compressed although the name ends in .gz (not a NIfTI file)"
        )
    if not gz_name and fmt == "gzip":
        raise ExtensionMismatchError(
            path, "content is gzip-compressed but the extension is .nii, not .nii.gz"
        )
    if fmt != "gzip":
        return raw, False
    try:
        with gzip.open(path, "rb") as g:
            head = g.read(_NIFTI2_HEADER_BYTES)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise TruncatedFileError(
            path, f"gzip stream is truncated or corrupt inside the header ({e})"
        ) from None
    return head, True


def read_nifti_header(
    path: str | Path, *, max_voxels: int = DEFAULT_MAX_VOXELS, n_channels: int | None = None
) -> nib.Nifti1Header:
    """Read and check a NIfTI header without touching the voxel data.

    Checks: file exists and is non-empty, content matches the extension, the header parses,
    3 spatial dimensions (a trailing singleton 4th is allowed) or, with ``n_channels``,
    ``(X, Y, Z, n_channels)``, spatial voxel count within ``max_voxels``, finite positive
    spacing, non-singular affine and, for uncompressed files, a file long enough for the
    declared data.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        max_voxels: Largest spatial voxel count accepted.
        n_channels: Channels the 4th axis must hold; None for a 3-D volume.

    Returns:
        The parsed header (``Nifti1Header`` or ``Nifti2Header``).

    Raises:
        DataError: A subclass naming the file and the fault.
    """
    path = Path(path)
    hdr = _checked_header(path, max_voxels, four_d=n_channels is not None)
    shape = tuple(int(d) for d in hdr.get_data_shape())
    if n_channels is not None and shape[3] != n_channels:
        raise DimensionError(
            path, f"4th axis holds {shape[3]} channels, expected {n_channels} (shape {shape})"
        )
    return hdr


def _checked_header(
    path: Path, max_voxels: int, *, four_d: bool, planar: bool = False
) -> nib.Nifti1Header:
    """The header of :func:`read_nifti_header`, 3-D or (with ``four_d``) ``(X, Y, Z, C)``;
    ``planar`` also takes a 2-D ``(X, Y)`` file. Checks the stored type, the vox_offset, the
    geometry and decoded size (:func:`~tumorscope.data.limits.check_volume`) and the scale
    factors, all before any voxel is read."""
    check_file(path)
    head, compressed = _read_nifti_head(path)
    fmt = sniff_format(head)
    if fmt not in ("nifti1", "nifti2"):
        shown = (
            "an image" if fmt in ("png", "jpeg") else (fmt.upper() if fmt else "unrecognised bytes")
        )
        raise NotNiftiError(path, f"not a NIfTI file (content is {shown})")
    klass = nib.Nifti1Header if fmt == "nifti1" else nib.Nifti2Header
    need = _NIFTI1_HEADER_BYTES if fmt == "nifti1" else _NIFTI2_HEADER_BYTES
    if len(head) < need:
        raise TruncatedFileError(
            path, f"file ends after {len(head)} bytes, inside the {need}-byte NIfTI header"
        )
    try:
        hdr = klass.from_fileobj(io.BytesIO(head[:need]), check=False)
        raw_zooms = tuple(float(z) for z in hdr["pixdim"][1 : 1 + min(3, int(hdr["dim"][0]))])
        # nibabel's own check silently rewrites zero pixdims to 1; refuse them first.
        if not all(np.isfinite(z) and z != 0 for z in raw_zooms):
            raise SpacingError(path, f"voxel spacing (pixdim) {raw_zooms} is zero or non-finite")
        hdr.check_fix(logger=_SILENT, error_level=40)
        shape = tuple(int(d) for d in hdr.get_data_shape())
        zooms = tuple(float(z) for z in hdr.get_zooms())
        affine = np.asarray(hdr.get_best_affine(), dtype=np.float64)
        dtype = hdr.get_data_dtype()
        offset = int(hdr.get_data_offset())
        type_name = str(hdr.get_value_label("datatype"))
    except (HeaderDataError, ValueError, TypeError, KeyError, OverflowError) as e:
        raise HeaderError(path, f"NIfTI header cannot be parsed: {e}") from None
    check_voxel_dtype(path, dtype, f"NIfTI {type_name}")
    if offset > MAX_NIFTI_OFFSET:
        raise HeaderError(
            path, f"vox_offset {offset} puts the voxels after {MAX_NIFTI_OFFSET} bytes of header"
        )
    spatial = _spatial_shape(path, shape, four_d=four_d, planar=planar)
    channels = shape[3] if four_d else 1
    check_volume(path, spatial, channels=channels, itemsize=dtype.itemsize, max_voxels=max_voxels)
    _check_geometry(path, zooms, affine)
    _scaling(path, hdr)
    if not compressed:
        declared = offset + math.prod(shape) * dtype.itemsize
        size = path.stat().st_size
        if size < declared:
            raise TruncatedFileError(
                path, f"file has {size} bytes but its header declares {declared}"
            )
    return hdr


def _scaling(path: Path, hdr: nib.Nifti1Header) -> tuple[float, float]:
    """``(scl_slope, scl_inter)`` to apply; ``(1, 0)`` when the slope is unset (0, or NaN as
    nibabel writes for unscaled data).

    Raises:
        ValueRangeError: An infinite slope, or a set slope with a non-finite intercept.
    """
    slope, inter = float(hdr["scl_slope"]), float(hdr["scl_inter"])
    if slope == 0 or math.isnan(slope):
        return 1.0, 0.0
    check_scale(path, slope, inter, ("scl_slope", "scl_inter"))
    return slope, inter


def _check_geometry(path: Path, zooms: tuple[float, ...], affine: np.ndarray) -> None:
    z = np.asarray(zooms[:3], dtype=np.float64)
    if not np.all(np.isfinite(z)) or np.any(z <= 0):
        raise SpacingError(
            path, f"voxel spacing {tuple(float(v) for v in z)} mm is zero, negative or non-finite"
        )
    if not np.all(np.isfinite(affine)) or abs(float(np.linalg.det(affine[:3, :3]))) < 1e-12:
        raise SingularAffineError(
            path, f"voxel-to-world affine is singular or non-finite: {affine[:3].tolist()}"
        )


def _spatial_shape(
    path: Path, shape: tuple[int, ...], *, four_d: bool = False, planar: bool = False
) -> tuple[int, ...]:
    """``(X, Y, Z)`` of a 3-D volume, of an ``(X, Y, Z, C)`` file when ``four_d``, or of a
    2-D ``(X, Y)`` file taken as ``(X, Y, 1)`` when ``planar``."""
    if planar and len(shape) == 2:
        return (*shape, 1)
    if four_d:
        if len(shape) == 4 or (len(shape) > 4 and all(d == 1 for d in shape[4:])):
            return shape[:3]
        raise DimensionError(
            path, f"expected (X, Y, Z, channels), got {len(shape)} dimensions with shape {shape}"
        )
    if len(shape) == 3 or (len(shape) > 3 and all(d == 1 for d in shape[3:])):
        return shape[:3]
    raise DimensionError(
        path, f"expected a 3D volume, got {len(shape)} dimensions with shape {shape}"
    )


def read_nifti(
    path: str | Path,
    *,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    channel: int | None = None,
    planar: bool = False,
) -> tuple[np.ndarray, ImageMeta]:
    """Read a 3D NIfTI volume in the closest canonical (RAS+) orientation.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        max_voxels: Largest voxel count accepted, checked from the header before decompressing.
        channel: Index along the 4th axis of an ``(X, Y, Z, C)`` file; None for a 3-D file.
        planar: Also read a 2-D ``(X, Y)`` file, as ``(X, Y, 1)`` (one slice).

    Returns:
        ``(array, meta)``: the ``(X, Y, Z)`` array reoriented to RAS+ — float32 when the
        header's slope/intercept are set or the voxels are floats, else the stored integer
        dtype — and its :class:`ImageMeta` (spacing in mm, canonical affine, stored geometry).

    Raises:
        DataError: A subclass naming the file and the fault (see :mod:`tumorscope.data.errors`);
            values that are NaN/Inf or leave the float32 range after scaling included.
    """
    path = Path(path)
    hdr = _checked_header(path, max_voxels, four_d=channel is not None, planar=planar)
    shape = tuple(int(d) for d in hdr.get_data_shape())
    if channel is not None and not 0 <= channel < shape[3]:
        raise DimensionError(path, f"no channel {channel}: the 4th axis holds {shape[3]} channels")
    spec = (shape, hdr.get_data_dtype(), int(hdr.get_data_offset()), 1.0, 0.0)
    try:
        # Unscaled: the scale factors are applied below, in float32 with the range checked.
        proxy = ArrayProxy(str(path), spec, mmap=False)
        # Slicing the proxy decodes one channel, not the whole 4-D file.
        raw = np.asanyarray(proxy if channel is None else proxy[:, :, :, channel])
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise TruncatedFileError(
            path, f"compressed voxel data is truncated or corrupt ({e})"
        ) from None
    except (OSError, ValueError) as e:
        raise TruncatedFileError(path, f"voxel data cannot be read in full ({e})") from None
    except HeaderDataError as e:
        raise HeaderError(path, f"NIfTI header cannot be parsed: {e}") from None
    except Exception as e:  # nibabel raises other types for exotic files; report, never crash
        raise ReadError(path, f"NIfTI cannot be read ({type(e).__name__}: {e})") from None
    raw = raw.reshape(_spatial_shape(path, shape, four_d=channel is not None, planar=planar))
    slope, inter = _scaling(path, hdr)
    data = raw
    if slope != 1.0 or inter != 0.0 or raw.dtype.kind == "f":
        scaled = (slope, inter) != (1.0, 0.0)
        what = f"after scl_slope {slope:g} and scl_inter {inter:g}" if scaled else "as stored"
        data = to_float32(raw, path, slope=slope, inter=inter, what=what)
        del raw
    affine = np.asarray(hdr.get_best_affine(), dtype=np.float64)
    return canonical_with_meta(data, affine, path)


def canonical_with_meta(
    data: np.ndarray, affine: np.ndarray, path: Path
) -> tuple[np.ndarray, ImageMeta]:
    """Reorient ``data`` (stored with ``affine``) to RAS and describe both geometries."""
    canon, canon_affine = to_canonical(data, affine)
    meta = ImageMeta(
        path=path,
        shape=tuple(int(s) for s in canon.shape),
        spacing=tuple(float(v) for v in voxel_sizes(canon_affine)),
        affine=canon_affine,
        orientation=tuple(str(c) for c in aff2axcodes(affine)),
        original_affine=affine,
        original_shape=tuple(int(s) for s in data.shape),
    )
    return canon, meta


def to_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient a 3D array to the closest canonical (RAS+) axis order, as nibabel does.

    Args:
        data: ``(X, Y, Z)`` array in stored orientation.
        affine: Its 4×4 voxel-to-world (RAS mm) affine.

    Returns:
        ``(canonical_array, canonical_affine)``; the array is a contiguous copy.
    """
    ornt = io_orientation(affine)
    canon = np.ascontiguousarray(apply_orientation(data, ornt))
    return canon, affine @ inv_ornt_aff(ornt, data.shape)


def save_nifti(data: np.ndarray, affine: np.ndarray, path: str | Path) -> Path:
    """Write ``data`` with ``affine`` as both qform and sform (code 1, scanner), units mm."""
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    out = Path(path)
    atomic_write_via(out, lambda tmp: nib.save(img, tmp))  # never a partial file under `out`
    return out


def write_like(array: np.ndarray, meta: ImageMeta, path: str | Path) -> Path:
    """Write a canonical-orientation array back into a file's stored orientation and affine.

    Args:
        array: ``(X, Y, Z)`` array in canonical orientation, shape ``meta.shape``.
        meta: Metadata returned by :func:`read_nifti` for the reference file.
        path: Output ``.nii``/``.nii.gz`` file.

    Returns:
        The written path. ``read`` of the result then ``read_nifti`` reproduces ``array``.

    Raises:
        ValueError: The array does not have the canonical shape of ``meta``.
    """
    if tuple(array.shape) != tuple(meta.shape):
        raise ValueError(
            f"array shape {array.shape} does not match canonical shape {meta.shape} of {meta.path}"
        )
    affine = meta.affine if meta.original_affine is None else meta.original_affine
    back_ornt = ornt_transform(axcodes2ornt(("R", "A", "S")), io_orientation(affine))
    stored = np.ascontiguousarray(apply_orientation(array, back_ornt))
    return save_nifti(stored, affine, path)
