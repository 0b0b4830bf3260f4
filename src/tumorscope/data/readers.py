"""File readers that validate at the boundary: NIfTI volumes and PNG/JPEG images.

NIfTI files are checked from their header *before* any voxel is decompressed (a 1 MB
``.nii.gz`` can declare gigabytes), read through nibabel and reoriented to the closest
canonical (RAS+) orientation; a 4-D file with channels on its last axis (MSD images) is read
one channel at a time. :func:`write_like` writes an array back in the file's stored
geometry. CSV tables are read by :mod:`tumorscope.data.tables`. PNG/JPEG files are sniffed by their magic bytes and decoded by Pillow with its
decompression-bomb limit kept on (its warning is treated as an error too).
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import warnings
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.affines import voxel_sizes
from nibabel.orientations import (
    aff2axcodes,
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)
from nibabel.spatialimages import HeaderDataError
from PIL import Image, UnidentifiedImageError

from tumorscope.data.errors import (
    DecompressionBombError,
    DimensionError,
    EmptyFileError,
    ExtensionMismatchError,
    HeaderError,
    MissingFileError,
    NonFiniteVoxelError,
    NotGzipError,
    NotImageError,
    NotNiftiError,
    ReadError,
    SingularAffineError,
    SpacingError,
    TruncatedFileError,
    VolumeTooLargeError,
)
from tumorscope.data.types import ImageMeta

logger = logging.getLogger(__name__)
# nibabel's header checks log each fixable oddity; we raise on the real faults instead.
_SILENT = logging.Logger("tumorscope.nifti-header-check", level=logging.CRITICAL + 1)

DEFAULT_MAX_VOXELS = 2**27
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


def _check_file(path: Path) -> None:
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


def _checked_header(path: Path, max_voxels: int, *, four_d: bool) -> nib.Nifti1Header:
    """The header of :func:`read_nifti_header`, 3-D or (with ``four_d``) ``(X, Y, Z, C)``."""
    _check_file(path)
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
    except (HeaderDataError, ValueError, TypeError, KeyError, OverflowError) as e:
        raise HeaderError(path, f"NIfTI header cannot be parsed: {e}") from None
    _check_geometry(path, shape, zooms, affine, max_voxels, four_d)
    if not compressed:
        declared = offset + math.prod(shape) * dtype.itemsize
        size = path.stat().st_size
        if size < declared:
            raise TruncatedFileError(
                path, f"file has {size} bytes but its header declares {declared}"
            )
    return hdr


def _check_geometry(
    path: Path,
    shape: tuple[int, ...],
    zooms: tuple[float, ...],
    affine: np.ndarray,
    max_voxels: int,
    four_d: bool,
) -> None:
    spatial = _spatial_shape(path, shape, four_d=four_d)
    if any(d <= 0 for d in spatial):
        raise DimensionError(path, f"header declares an empty or negative shape {spatial}")
    n = math.prod(spatial)
    if n > max_voxels:
        raise VolumeTooLargeError(
            path,
            f"header declares {'x'.join(map(str, spatial))} = {n} voxels, above the cap of {max_voxels}",
        )
    z = np.asarray(zooms[:3], dtype=np.float64)
    if not np.all(np.isfinite(z)) or np.any(z <= 0):
        raise SpacingError(
            path, f"voxel spacing {tuple(float(v) for v in z)} mm is zero, negative or non-finite"
        )
    if not np.all(np.isfinite(affine)) or abs(float(np.linalg.det(affine[:3, :3]))) < 1e-12:
        raise SingularAffineError(
            path, f"voxel-to-world affine is singular or non-finite: {affine[:3].tolist()}"
        )


def _spatial_shape(path: Path, shape: tuple[int, ...], *, four_d: bool = False) -> tuple[int, ...]:
    """``(X, Y, Z)`` of a 3-D volume, or of an ``(X, Y, Z, C)`` file when ``four_d``."""
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
    path: str | Path, *, max_voxels: int = DEFAULT_MAX_VOXELS, channel: int | None = None
) -> tuple[np.ndarray, ImageMeta]:
    """Read a 3D NIfTI volume in the closest canonical (RAS+) orientation.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        max_voxels: Largest voxel count accepted, checked from the header before decompressing.
        channel: Index along the 4th axis of an ``(X, Y, Z, C)`` file; None for a 3-D file.

    Returns:
        ``(array, meta)``: the ``(X, Y, Z)`` array as stored (scaled by the header's
        slope/intercept when set, so float; else the stored dtype), reoriented to RAS+,
        and its :class:`ImageMeta` (spacing in mm, canonical affine, stored geometry).

    Raises:
        DataError: A subclass naming the file and the fault (see :mod:`tumorscope.data.errors`).
    """
    path = Path(path)
    hdr = _checked_header(path, max_voxels, four_d=channel is not None)
    if channel is not None and not 0 <= channel < int(hdr.get_data_shape()[3]):
        raise DimensionError(
            path, f"no channel {channel}: the 4th axis holds {hdr.get_data_shape()[3]} channels"
        )
    try:
        img = nib.load(path)
        proxy = img.dataobj  # type: ignore[attr-defined]
        # Slicing the proxy decodes one channel, not the whole 4-D file.
        data = np.asanyarray(proxy if channel is None else proxy[:, :, :, channel])
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
    data = data.reshape(tuple(int(d) for d in hdr.get_data_shape()[:3]))
    if data.dtype.kind in "fc":
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            raise NonFiniteVoxelError(path, f"{bad} of {data.size} voxels are NaN or Inf")
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
    nib.save(img, out)
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


def read_image(path: str | Path) -> tuple[np.ndarray, ImageMeta]:
    """Read a PNG/JPEG image as ``(H, W)`` float32 greyscale, values as stored.

    RGB(A) and palette images are converted by luminance (ITU-R 601-2, Pillow's ``"L"``);
    16-bit greyscale keeps its range. Pillow's decompression-bomb limit stays on and its
    warning (more than ``Image.MAX_IMAGE_PIXELS``) is an error too.

    Args:
        path: ``.png``, ``.jpg`` or ``.jpeg`` file.

    Returns:
        ``(array, meta)`` with ``meta.spacing == (1.0, 1.0)`` and an identity affine.

    Raises:
        DataError: A subclass naming the file and the fault.
    """
    path = Path(path)
    _check_file(path)
    with path.open("rb") as f:
        head = f.read(_NIFTI2_HEADER_BYTES)
    fmt = sniff_format(head)
    ext = path.suffix.lower()
    expected = "png" if ext == ".png" else "jpeg"
    if fmt != expected:
        if fmt is not None:
            raise ExtensionMismatchError(
                path, f"content is {fmt.upper()} but the extension is {path.suffix}"
            )
        raise NotImageError(
            path, f"not a {expected.upper()} image (unrecognised leading bytes {head[:8].hex()})"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                arr = _to_grey(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DecompressionBombError(path, f"decompression bomb refused: {e}") from None
    except UnidentifiedImageError:
        raise NotImageError(path, f"Pillow cannot identify the {expected.upper()} image") from None
    except (OSError, SyntaxError, EOFError, ValueError) as e:
        raise TruncatedFileError(path, f"image data is truncated or corrupt ({e})") from None
    except Exception as e:  # Pillow plugins raise other types on odd files; report, never crash
        raise ReadError(path, f"image cannot be decoded ({type(e).__name__}: {e})") from None
    meta = ImageMeta(
        path=path,
        shape=(int(arr.shape[0]), int(arr.shape[1])),
        spacing=(1.0, 1.0),
        affine=np.eye(4),
        original_shape=(int(arr.shape[0]), int(arr.shape[1])),
    )
    return arr, meta


def _to_grey(im: Image.Image) -> np.ndarray:
    if im.mode in ("L", "I", "F", "I;16", "I;16B", "I;16L"):
        return np.asarray(im, dtype=np.float32)
    return np.asarray(im.convert("L"), dtype=np.float32)
