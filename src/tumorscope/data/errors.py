"""Typed data errors: one :class:`~tumorscope.data.types.DataError` subclass per kind of fault.

Every error's ``str()`` is ``"PATH: fault"`` so that ``tumorscope data validate`` can print
one problem per line. Errors that concern two files (image/mask mismatch) name the second
file in the fault text.
"""

from __future__ import annotations

from pathlib import Path

from tumorscope.data.types import DataError

__all__ = [
    "CSVFormatError",
    "CaseLayoutError",
    "ClinicalValueError",
    "DataError",
    "DatasetJsonError",
    "DecompressionBombError",
    "DicomDecoderError",
    "DicomPixelDataError",
    "DicomPreambleError",
    "DicomSeriesError",
    "DimensionError",
    "DuplicatePatientError",
    "EmptyFileError",
    "ExtensionMismatchError",
    "GeometryMismatchError",
    "HeaderError",
    "ImageTooLargeError",
    "LabelValueError",
    "LayoutNotFoundError",
    "MissingChannelError",
    "MissingFileError",
    "NonFiniteVoxelError",
    "NotGzipError",
    "NotImageError",
    "NotNiftiError",
    "ReadError",
    "SingularAffineError",
    "SliceSpacingError",
    "SpacingError",
    "SurvivalValueError",
    "TruncatedFileError",
    "UnreadableFileError",
    "ValueRangeError",
    "VolumeTooLargeError",
    "VoxelTypeError",
]


class _Fault(DataError):
    """Base of the typed errors: keeps the fault on one line (library messages may hold newlines)."""

    def __init__(self, path: str | Path, fault: str) -> None:
        super().__init__(path, " ".join(fault.split("\n")).replace("\r", " "))


class MissingFileError(_Fault):
    """A path that should exist does not (a dataset root, a CSV column's file)."""


class EmptyFileError(_Fault):
    """A file has zero bytes."""


class NotNiftiError(_Fault):
    """A ``.nii``/``.nii.gz`` file does not hold a NIfTI-1/2 header (random bytes, other data)."""


class NotGzipError(_Fault):
    """A ``.gz`` file is not gzip-compressed."""


class TruncatedFileError(_Fault):
    """A file ends before the data its header declares (NIfTI, gzip stream, image, DICOM)."""


class HeaderError(_Fault):
    """A header exists but the reader cannot parse it or it holds invalid fields."""


class VolumeTooLargeError(_Fault):
    """The header declares more voxels, a longer side or more decoded bytes than the caps of
    :mod:`tumorscope.data.limits` allow (checked before decompressing)."""


class DiskSpaceError(_Fault):
    """A file about to be written needs more space than the disk has free (checked first)."""


class ImageTooLargeError(_Fault):
    """A 2D image declares more pixels or a longer side than :mod:`tumorscope.data.limits`
    allows (checked from its header, before decoding)."""


class VoxelTypeError(_Fault):
    """Voxels are stored as a type that is not one intensity per voxel (RGB, complex, ...)."""


class ValueRangeError(_Fault):
    """A scale factor is non-finite, or values after scaling leave the float32 range."""


class NonFiniteVoxelError(_Fault):
    """The voxel data holds NaN or Inf values."""


class SpacingError(_Fault):
    """A voxel spacing is zero, negative or non-finite."""


class SingularAffineError(_Fault):
    """The voxel-to-world affine is singular or non-finite."""


class DimensionError(_Fault):
    """The data has the wrong number of dimensions for its role (2D volume, 4D mask...)."""


class GeometryMismatchError(_Fault):
    """Two files that must share a grid do not (shape, spacing or affine); names both files."""

    def __init__(self, path: str | Path, other: str | Path, fault: str) -> None:
        self.other = Path(other)
        super().__init__(path, f"{fault} (compared with {other})")


class LabelValueError(_Fault):
    """A mask holds label values outside the layout's allowed set, or non-integer values."""


class DecompressionBombError(_Fault):
    """An image declares more pixels than Pillow's decompression-bomb limit allows."""


class NotImageError(_Fault):
    """A ``.png``/``.jpg`` file is not an image Pillow can identify."""


class ExtensionMismatchError(_Fault):
    """The file's content is a different format from what its extension says."""


class DicomPreambleError(_Fault):
    """A ``.dcm`` file lacks the 128-byte preamble and ``DICM`` prefix."""


class DicomPixelDataError(_Fault):
    """A DICOM file's pixel data is missing, shorter than its header declares, or undecodable."""


class DicomDecoderError(_Fault):
    """A DICOM file's transfer syntax is unknown, or no installed pydicom plugin decodes it
    (the fault names the syntax and the packages to install)."""


class DicomSeriesError(_Fault):
    """A DICOM folder holds no series, more than one series, or slices that do not stack."""


class SliceSpacingError(_Fault):
    """A DICOM series has missing, duplicate or uneven slice positions."""


class SurvivalValueError(_Fault):
    """A survival time or event is non-numeric, negative, non-finite or beyond the bound."""


class ClinicalValueError(_Fault):
    """A clinical covariate (age, ...) is non-finite or outside its plausible range."""


class DuplicatePatientError(_Fault):
    """A patient appears twice (two CSV rows, two case folders, two images)."""


class CSVFormatError(_Fault):
    """A CSV file cannot be parsed or lacks a required column."""


class MissingChannelError(_Fault):
    """A case lacks a requested channel (and ``missing="error"``)."""


class DatasetJsonError(_Fault):
    """A ``dataset.json`` (MSD, nnU-Net) cannot be parsed, or its channels or labels cannot be
    mapped onto the model's channels and regions."""


class LayoutNotFoundError(_Fault):
    """No known dataset layout was found under a folder."""


class CaseLayoutError(_Fault):
    """A case folder's files do not follow its layout (two files for one channel, mixed naming)."""


class UnreadableFileError(_Fault):
    """A path cannot be read as what its name says: a dangling link, a FIFO or device, a
    folder named like a file, or a file or folder that cannot be opened or listed."""


class ReadError(_Fault):
    """A file failed to read for a reason none of the other kinds describes."""
