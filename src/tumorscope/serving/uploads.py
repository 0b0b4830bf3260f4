"""An uploaded file turned into a file or case folder the :class:`Predictor` reads.

The kind of an upload is told by its first bytes, never by the client's file name or
``Content-Type``, and the client's file name is never used on disk nor in a message (it
may name the patient): a file is written as ``upload.png``, ``upload.jpg``,
``upload.dcm``, ``upload.nii`` or ``upload.nii.gz``; a zip is checked and extracted into
``<folder>/case/`` by :func:`tumorscope.serving.archive.extract_archive`.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import BinaryIO

from tumorscope.serving.archive import (
    MAX_MEMBERS,
    MAX_UNPACKED_BYTES,
    UploadError,
    disk_full_as_507,
    extract_archive,
)

__all__ = [
    "HEAD_BYTES",
    "IMAGE_KINDS",
    "VOLUME_KINDS",
    "UploadError",
    "save_image",
    "save_volume",
    "sniff",
]

#: Kinds ``save_image`` takes (the 2D endpoint).
IMAGE_KINDS = ("png", "jpeg", "dicom", "nifti", "nifti-gz")
#: Kinds ``save_volume`` takes (the volume endpoint).
VOLUME_KINDS = ("nifti", "nifti-gz", "dicom", "zip")

#: First bytes ``sniff`` needs: the NIfTI-1 magic ends at 348, DICOM's at 132.
HEAD_BYTES = 512
_CHUNK = 2**20
_CASE_FOLDER = "case"
_ARCHIVE_NAME = "upload.zip"
_SUFFIXES = {
    "png": ".png",
    "jpeg": ".jpg",
    "dicom": ".dcm",
    "nifti": ".nii",
    "nifti-gz": ".nii.gz",
}
_IMAGES_ACCEPTED = "a PNG, JPEG, DICOM or 2D NIfTI (.nii / .nii.gz) file"
_VOLUMES_ACCEPTED = (
    "a NIfTI volume (.nii / .nii.gz), a zipped BraTS/HECKTOR case folder, a zipped DICOM "
    "series or a multi-frame DICOM file"
)


def sniff(head: bytes) -> str | None:
    """The kind of a file from its first bytes.

    A gzip stream is taken as a gzipped NIfTI (``nifti-gz``): the NIfTI reader refuses it
    when the decompressed content is not one.

    Args:
        head: The file's first bytes, at least :data:`HEAD_BYTES` when it has them.

    Returns:
        ``png``, ``jpeg``, ``dicom`` (``DICM`` at offset 128), ``nifti`` (NIfTI-1 or
        NIfTI-2 single-file header, either byte order), ``nifti-gz``, ``zip`` (also the
        empty archive), or None for anything else.
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x1f\x8b"):
        return "nifti-gz"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if _is_nifti(head):
        return "nifti"
    if head[128:132] == b"DICM":
        return "dicom"
    return None


def _is_nifti(head: bytes) -> bool:
    """A NIfTI-1 (``sizeof_hdr`` 348, magic at 344) or NIfTI-2 (540, magic at 4) header."""
    size = head[:4]
    if size in (struct.pack("<i", 348), struct.pack(">i", 348)):
        return head[344:348] in (b"n+1\x00", b"ni1\x00")
    if size in (struct.pack("<i", 540), struct.pack(">i", 540)):
        return head[4:8] == b"n+2\x00"
    return False


def save_image(src: BinaryIO, folder: Path) -> Path:
    """Copy a 2D upload into ``folder/upload.<ext>``, the extension by its sniffed kind.

    Args:
        src: The upload, read from its current position to its end.
        folder: An existing private folder without an ``upload.*`` file.

    Returns:
        The written file.

    Raises:
        UploadError: 422 ``empty_file`` for an empty upload; 415 ``unsupported_type`` for
            a kind not in :data:`IMAGE_KINDS`; 507 ``insufficient_storage`` when the disk
            fills.
    """
    head = _read_head(src)
    kind = sniff(head)
    if kind not in IMAGE_KINDS:
        raise UploadError(
            415,
            "unsupported_type",
            f"the upload is {_described(kind)}, not a 2D image; send {_IMAGES_ACCEPTED}",
        )
    return _copy_upload(head, src, folder / f"upload{_SUFFIXES[kind]}")


def save_volume(
    src: BinaryIO,
    folder: Path,
    *,
    max_members: int = MAX_MEMBERS,
    max_unpacked_bytes: int = MAX_UNPACKED_BYTES,
) -> Path:
    """Save a volume upload where ``Predictor.predict_volume`` reads it.

    A NIfTI (``.nii`` / ``.nii.gz``) or DICOM file is copied as :func:`save_image` does
    (whether a DICOM holds several frames is left to the reader). A zip is checked and
    extracted into ``folder/case``; nested archives are written as plain files, never
    extracted, and macOS metadata (``__MACOSX/``, ``._*``, ``.DS_Store``) is skipped.

    Args:
        src: The upload, read from its current position to its end.
        folder: An existing private folder without ``upload.*`` or ``case``.
        max_members: Most members (files and folders) an archive may hold.
        max_unpacked_bytes: Most bytes an archive may extract to, declared or written.

    Returns:
        The file written; for a zip, the folder to predict: the archive's single
        top-level folder when it holds exactly one (a zipped case folder), else
        ``folder/case``.

    Raises:
        UploadError: 422 ``empty_file``; 415 ``unsupported_type`` for a kind not in
            :data:`VOLUME_KINDS`; 422 ``bad_archive`` for an unreadable or corrupted zip,
            ``unsafe_archive`` for encryption, path traversal, links and special files,
            too many members, ``empty_archive`` for one without files; 413 ``too_large``
            beyond ``max_unpacked_bytes`` or :data:`~tumorscope.serving.archive.MAX_RATIO`; 507
            ``insufficient_storage``.
    """
    head = _read_head(src)
    kind = sniff(head)
    if kind not in VOLUME_KINDS:
        raise UploadError(
            415,
            "unsupported_type",
            f"the upload is {_described(kind)}, not a volume; send {_VOLUMES_ACCEPTED}",
        )
    if kind != "zip":
        return _copy_upload(head, src, folder / f"upload{_SUFFIXES[kind]}")
    archive = _copy_upload(head, src, folder / _ARCHIVE_NAME)
    case = folder / _CASE_FOLDER
    try:
        case.mkdir()
        try:
            return extract_archive(
                archive, case, max_members=max_members, max_unpacked_bytes=max_unpacked_bytes
            )
        except BaseException:
            shutil.rmtree(case, ignore_errors=True)  # never leave half a case behind
            raise
    finally:
        archive.unlink(missing_ok=True)


def _described(kind: str | None) -> str:
    """How a refusal names the upload's kind."""
    names = {"png": "a PNG image", "jpeg": "a JPEG image", "zip": "a zip archive"}
    return names.get(kind or "", "of a type not recognised from its first bytes")


def _read_head(src: BinaryIO) -> bytes:
    """The first :data:`HEAD_BYTES` of ``src`` (fewer at its end); a short read is retried."""
    head = b""
    while len(head) < HEAD_BYTES:
        chunk = src.read(HEAD_BYTES - len(head))
        if not chunk:
            break
        head += chunk
    if not head:
        raise UploadError(422, "empty_file", "the upload is empty; send a non-empty file")
    return head


def _copy_upload(head: bytes, src: BinaryIO, target: Path) -> Path:
    """Write ``head`` then the rest of ``src`` to a new file ``target``."""
    # "xb": never overwrite, nor follow a link planted at the target.
    with disk_full_as_507(), target.open("xb") as out:
        out.write(head)
        shutil.copyfileobj(src, out, _CHUNK)
    return target
