"""One DICOM file: its header checked before any pixel is decoded, its pixels decoded and
rescaled, and a single-frame file read as a 2D image.

:func:`read_slice` is the check every DICOM reader makes of a file (series slices,
multi-frame volumes, single images): preamble, truncation, pixel data length, the budgets
of :mod:`tumorscope.data.limits` (file size, ``Rows × Columns × frames``, samples per
pixel), a RescaleSlope/Intercept that keeps every storable value inside float32, and a
decoder for the transfer syntax. Compressed pixel data is decoded by pydicom's plugins:
``pylibjpeg`` with ``pylibjpeg-libjpeg`` (JPEG baseline, extended, lossless and JPEG-LS),
``pylibjpeg-openjpeg`` (JPEG 2000, HTJ2K) and ``pylibjpeg-rle`` or pydicom itself (RLE); a
file no installed plugin decodes is refused from its header, naming the transfer syntax and
the packages to install.

A file's Modality is compared with what a model's profile was trained on by
:func:`modality_warnings`: a warning, never a refusal (the header alone does not decide
whether an image is in the model's domain).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_rescale, get_decoder
from pydicom.uid import (
    UID,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    RLETransferSyntaxes,
)

from tumorscope.data.errors import (
    DicomDecoderError,
    DicomPixelDataError,
    DicomPreambleError,
    DimensionError,
    HeaderError,
    SpacingError,
    TruncatedFileError,
    VolumeTooLargeError,
    VoxelTypeError,
)
from tumorscope.data.limits import (
    MAX_DECODED_BYTES,
    check_image_size,
    check_scale,
    check_value_range,
    check_volume,
    human_bytes,
    to_float32,
)
from tumorscope.data.readers import check_file
from tumorscope.data.types import ImageMeta

_PIXEL_DATA = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF
#: ITU-R 601-2 luma weights (R, G, B): the rule Pillow's "L" applies to PNG/JPEG colour.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
#: DICOM Modality values the models of each profile are trained on.
PROFILE_MODALITIES: dict[str, tuple[str, ...]] = {"brain-mri": ("MR",), "petct": ("CT", "PT")}
# Modality codes (PS3.3 C.7.3.1.1.1) as a person reads them; pydicom carries no such names.
_MODALITY_NAMES = {
    "MR": "MRI", "PT": "PET", "US": "ultrasound", "CR": "radiograph",
    "DX": "radiograph", "MG": "mammogram", "NM": "nuclear medicine", "XA": "angiogram",
    "XC": "photograph", "ES": "endoscopy", "SM": "microscopy", "OT": "other",
}  # fmt: skip

# The packages tumorscope declares per compressed transfer syntax (pyproject.toml); pydicom's
# own `missing_dependencies` names only plugins it still knows of (gdcm, pyjpegls).
DECODER_PACKAGES: dict[str, str] = {
    **dict.fromkeys(JPEGTransferSyntaxes + JPEGLSTransferSyntaxes, "pylibjpeg pylibjpeg-libjpeg"),
    **dict.fromkeys(JPEG2000TransferSyntaxes, "pylibjpeg pylibjpeg-openjpeg"),
    **dict.fromkeys(RLETransferSyntaxes, "pylibjpeg pylibjpeg-rle"),
}


def read_slice(path: Path, *, colour: bool = False) -> pydicom.Dataset:
    """Read and check one DICOM file (preamble, truncation, pixel data length, the budgets,
    the rescale range and a decoder for its transfer syntax), without decoding its pixels.

    Args:
        path: The file.
        colour: Accept three samples per pixel (RGB/YBR), as a single 2D image may hold.

    Raises:
        DataError: A subclass naming the file and the fault.
    """
    check_file(path)
    size = path.stat().st_size
    if size > MAX_DECODED_BYTES:
        raise VolumeTooLargeError(
            path,
            f"file holds {human_bytes(size)}, above the budget of "
            f"{human_bytes(MAX_DECODED_BYTES)} one file may take",
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
    if samples != 1 and not (colour and samples == 3):
        what = "a 2D image has 1 or 3" if colour else "a series slice or volume must have 1"
        raise VoxelTypeError(path, f"{samples} samples per pixel; {what}")
    check_volume(path, (cols, rows, frames), channels=samples, itemsize=max(1, bits // 8))
    _check_rescale(path, ds)
    syntax = check_decoder(path, ds)
    if syntax is not None and not syntax.is_compressed:
        declared = rows * cols * samples * frames * bits // 8
        have = len(ds.PixelData)
        if have < declared:
            raise DicomPixelDataError(
                path, f"pixel data holds {have} bytes, Rows×Columns×bits declare {declared} bytes"
            )
    return ds


def check_decoder(path: Path, ds: Any) -> UID | None:
    """The file's transfer syntax (None when its meta lacks one), refused when no installed
    pydicom plugin can decode its pixel data.

    Raises:
        DicomDecoderError: Naming the transfer syntax and the packages to install.
    """
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is None:
        return None
    syntax = UID(str(syntax))
    if not syntax.is_transfer_syntax:
        raise DicomDecoderError(path, f"unknown transfer syntax {syntax}: no decoder reads it")
    if not syntax.is_compressed:
        return syntax
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise DicomDecoderError(
            path,
            f"pixel data is compressed as {syntax.name} ({syntax}), which pydicom has no "
            "decoder for; convert the file to an uncompressed transfer syntax "
            "(e.g. dcmtk's dcmdjpeg or gdcmconv --raw)",
        ) from None
    if not decoder.is_available:
        packages = DECODER_PACKAGES.get(str(syntax), "pylibjpeg")
        raise DicomDecoderError(
            path,
            f"pixel data is compressed as {syntax.name} ({syntax}) and no installed decoder "
            f"reads it: pip install {packages}",
        )
    return syntax


def decode(path: Path, ds: Any) -> np.ndarray:
    """The file's pixel array as pydicom decodes it (YBR converted to RGB).

    Raises:
        DicomPixelDataError: The decoder fails (corrupt stream, inconsistent header).
    """
    try:
        return np.asarray(ds.pixel_array)
    except Exception as e:  # decoders raise many types (corrupt stream, header mismatch)
        meta = getattr(ds, "file_meta", None)
        syntax = meta.get("TransferSyntaxUID") if meta is not None else None
        how = f" as {UID(str(syntax)).name}" if syntax is not None else ""
        fault = " ".join(str(e).split())
        raise DicomPixelDataError(path, f"pixel data cannot be decoded{how} ({fault})") from None


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
    lo, hi, what = _value_range(path, ds, slope, inter)
    check_value_range(path, lo, hi, what)


def value_range(path: Path, ds: Any) -> tuple[float, float]:
    """Lowest and highest value the header lets a pixel take after RescaleSlope/Intercept."""
    lo, hi, _ = _value_range(path, ds, *_rescale(path, ds))
    return lo, hi


def _value_range(path: Path, ds: Any, slope: float, inter: float) -> tuple[float, float, str]:
    try:
        stored = int(ds.get("BitsStored", ds.BitsAllocated))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
    except (TypeError, ValueError) as e:
        raise HeaderError(path, f"invalid BitsStored/PixelRepresentation ({e})") from None
    stored = min(max(stored, 1), 64)
    lo, hi = (-(2 ** (stored - 1)), 2 ** (stored - 1) - 1) if signed else (0, 2**stored - 1)
    ends = sorted((lo * slope + inter, hi * slope + inter))
    what = f"for {stored}-bit pixels after RescaleSlope {slope:g} and RescaleIntercept {inter:g}"
    return ends[0], ends[1], what


def rescaled(path: Path, pixels: np.ndarray, ds: Any) -> np.ndarray:
    """A slice's pixels in float32 after its rescale (HU for CT), the range checked."""
    if "ModalityLUTSequence" in ds:  # a lookup table instead of slope/intercept: pydicom's
        return to_float32(
            np.asarray(apply_rescale(pixels, ds)), path, what="after the Modality LUT"
        )
    slope, inter = _rescale(path, ds)
    what = f"after RescaleSlope {slope:g} and RescaleIntercept {inter:g}"
    return to_float32(pixels, path, slope=slope, inter=inter, what=what)


@dataclass(frozen=True)
class DicomImage:
    """A single-frame DICOM file read as a 2D image.

    Attributes:
        array: ``(H, W)`` float32 (rows × columns as stored), after the rescale.
        meta: ``spacing`` is PixelSpacing (else ImagerPixelSpacing, else 1 mm) in mm
            between rows and between columns; the affine scales by it.
        modality: The header's Modality (``MR``, ``CT``...), None where absent.
    """

    array: np.ndarray
    meta: ImageMeta
    modality: str | None


def is_dicom_file(path: Path) -> bool:
    """True for a regular file named ``*.dcm``, or without a suffix and with the ``DICM`` prefix."""
    if not path.is_file():  # never open a FIFO or device: it may block
        return False
    if path.suffix.lower() == ".dcm":
        return True
    if path.suffix or path.stat().st_size < 132:
        return False
    try:
        with path.open("rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:  # cannot be opened: its reader names the fault
        return False


def _header(path: Path, *tags: str) -> Any:
    with warnings.catch_warnings():  # pydicom's warnings quote the values they doubt
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(tags))


def frame_count(path: Path) -> int:
    """NumberOfFrames from the header alone; 1 when absent or unreadable (the reader then
    names the fault)."""
    try:
        return max(1, int(_header(path, "NumberOfFrames").get("NumberOfFrames", 1) or 1))
    except Exception:  # any header fault is reported by read_slice
        return 1


def modality(ds: Any) -> str | None:
    """The header's Modality, upper-cased (``MR``, ``CT``, ``PT``), None where absent."""
    value = str(ds.get("Modality", "") or "").strip().upper()
    return value or None


def header_modality(path: Path) -> str | None:
    """Modality of a DICOM file from its header alone; None when absent or unreadable."""
    try:
        return modality(_header(path, "Modality"))
    except Exception:  # not DICOM or unreadable: its reader names the fault elsewhere
        return None


def modality_warnings(found: str | None, profile: str) -> list[str]:
    """A warning when a header's Modality is not one the profile's models are trained on.

    Args:
        found: The header's Modality (None: no header, nothing to say).
        profile: The model's profile (``brain-mri``, ``petct``).

    Returns:
        One warning, or none when the modality fits, is unknown, or the profile has no list.
    """
    expected = PROFILE_MODALITIES.get(profile)
    if found is None or expected is None or found in expected:
        return []
    trained = " or ".join(_named(m) for m in expected)
    return [
        f"DICOM Modality is {_named(found)}; this {profile} model was trained on {trained} "
        "images only: its output for this input is not validated"
    ]


def _named(code: str) -> str:
    name = _MODALITY_NAMES.get(code)
    return f"{code} ({name})" if name else code


def read_dicom_image(path: str | Path) -> DicomImage:
    """Read a single-frame DICOM file as a 2D image, the size checked from its header first.

    Greyscale pixels get their RescaleSlope/Intercept (or Modality LUT); MONOCHROME1 is
    inverted (``lo + hi - value`` over the range its header lets a pixel take, the data's
    own range under a Modality LUT) so that bright means high signal as in MONOCHROME2.
    Colour (RGB, YBR converted by pydicom, PALETTE COLOR through its lookup table) becomes
    grey by the ITU-R 601-2 luma weights :data:`LUMA_WEIGHTS`, the rule PNG/JPEG images
    get, unrounded and for 16-bit samples too.

    Raises:
        DataError: A subclass naming the file and the fault (several frames, no decoder
            for the transfer syntax, undecodable pixel data, a non-positive spacing...).
    """
    path = Path(path)
    ds = read_slice(path, colour=True)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DimensionError(
            path, f"{frames} frames: a multi-frame file is a volume, not a 2D image"
        )
    check_image_size(path, int(ds.Rows), int(ds.Columns))  # from the header: nothing decoded yet
    pixels = decode(path, ds)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric == "PALETTE COLOR" and pixels.ndim == 2:
        pixels = np.asarray(apply_color_lut(pixels, ds))
    if pixels.ndim == 3 and pixels.shape[-1] == 3:
        grey = (pixels.astype(np.float32) @ np.asarray(LUMA_WEIGHTS, np.float32)).astype(np.float32)
    elif pixels.ndim == 2:
        grey = rescaled(path, pixels, ds)
        if photometric == "MONOCHROME1":
            lut = "ModalityLUTSequence" in ds
            lo, hi = (float(grey.min()), float(grey.max())) if lut else value_range(path, ds)
            grey = (np.float32(lo + hi) - grey).astype(np.float32)
    else:
        raise DimensionError(path, f"pixel array of shape {pixels.shape} is not one 2D image")
    spacing = _pixel_spacing(path, ds)
    shape = (int(grey.shape[0]), int(grey.shape[1]))
    meta = ImageMeta(
        path=path,
        shape=shape,
        spacing=spacing,
        affine=np.diag([spacing[0], spacing[1], 1.0, 1.0]),
        original_shape=shape,
    )
    return DicomImage(array=grey, meta=meta, modality=modality(ds))


def _pixel_spacing(path: Path, ds: Any) -> tuple[float, float]:
    """PixelSpacing, else ImagerPixelSpacing (radiographs), else 1 mm, in mm."""
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        if key not in ds:
            continue
        try:
            values = [float(v) for v in ds[key].value]
        except (TypeError, ValueError) as e:
            raise HeaderError(path, f"{key} is not two numbers ({e})") from None
        if len(values) != 2 or not all(np.isfinite(values)) or min(values) <= 0:
            raise SpacingError(path, f"{key} {values} mm is not two positive numbers")
        return values[0], values[1]
    return 1.0, 1.0
