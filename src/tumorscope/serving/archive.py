"""A zip upload checked, then extracted into a case folder; and the refusal of an upload.

A zip is checked before anything is written: its directory's size, then every member's
header (encryption, path, file type, compression ratio), then the declared total and the
free disk space. While extracting, the bytes actually written are counted against the same
cap, since declared sizes can lie. Member names are never echoed, only their position in
the archive (1-based).

:class:`UploadError` lives here, not in :mod:`tumorscope.serving.uploads` (which
re-exports it), so that this module needs nothing from the one that calls it.
"""

from __future__ import annotations

import contextlib
import errno
import lzma
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tumorscope.data.errors import DiskSpaceError
from tumorscope.data.limits import MAX_DECODED_BYTES, check_disk_space, human_bytes

__all__ = [
    "MAX_MEMBERS",
    "MAX_RATIO",
    "MAX_UNPACKED_BYTES",
    "RATIO_MIN_BYTES",
    "UploadError",
    "disk_full_as_507",
    "extract_archive",
]

#: Members of one archive: a DICOM series of 1000 slices fits ten times over.
MAX_MEMBERS = 10_000
#: Bytes one archive may extract to: a 4-channel case at the decode budget stored
#: uncompressed (float32) is MAX_DECODED_BYTES; twice it leaves headroom for wider voxel
#: types, masks and the odd extra file.
MAX_UNPACKED_BYTES = 2 * MAX_DECODED_BYTES
#: Largest uncompressed / compressed size of a member over RATIO_MIN_BYTES. Deflate reaches
#: ~1000 only on runs of one byte; real volumes and DICOM stay far below 200.
MAX_RATIO = 200
#: Members up to this size are not held to MAX_RATIO (a small all-zero mask is fine).
RATIO_MIN_BYTES = 2**20

_CHUNK = 2**20
_READABLE_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
# What reading a damaged archive raises: zipfile's own errors, the decompressors' (zlib,
# lzma; bz2 raises OSError), a truncated stream (EOFError), an undecodable UTF-8 name
# (ValueError), an unsupported feature (NotImplementedError, RuntimeError).
_ARCHIVE_ERRORS: tuple[type[Exception], ...] = (zipfile.BadZipFile, zlib.error, lzma.LZMAError)
_ARCHIVE_ERRORS += (EOFError, OSError, NotImplementedError, RuntimeError, ValueError, struct.error)
# A central directory entry is 46 bytes plus name, extra field and comment; real ones
# (paths of ~100 characters, timestamps, unix ids) stay far below this.
_MAX_DIRECTORY_BYTES_PER_MEMBER = 1024
_MAX_PART_BYTES = 255  # longest file name Linux file systems take
_MAX_PATH_BYTES = 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
_SEPARATORS = re.compile(r"[\\/]")
_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")


class UploadError(Exception):
    """A refused upload: an HTTP status, a short machine code and a one-line message.

    The message never echoes the upload's bytes, the client's file name or an archive
    member's name.

    Attributes:
        status: HTTP status of the answer (413, 415, 422, 507).
        code: Machine-readable code (``unsupported_type``, ``unsafe_archive``, ...).
        message: One line a person can act on.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class _Member:
    """An archive member that passed the header checks.

    Attributes:
        index: 1-based position in the archive (what messages name).
        info: Its directory entry.
        parts: Path parts below the extraction folder.
        is_dir: A folder entry.
    """

    index: int
    info: zipfile.ZipInfo
    parts: tuple[str, ...]
    is_dir: bool


def extract_archive(
    archive: Path, case: Path, *, max_members: int, max_unpacked_bytes: int
) -> Path:
    """Check every member of ``archive``, then extract them into ``case``.

    Nested archives are written as plain files, never extracted, and macOS metadata
    (``__MACOSX/``, ``._*``, ``.DS_Store``) is skipped. Nothing is written before every
    header has passed; a refusal met while extracting leaves what was already written
    under ``case`` for the caller to remove.

    Args:
        archive: The zip file.
        case: An existing empty folder to extract into.
        max_members: Most members (files and folders) the archive may hold.
        max_unpacked_bytes: Most bytes the archive may extract to, declared or written.

    Returns:
        The folder to predict: the archive's single top-level folder when it holds
        exactly one (a zipped case folder), else ``case``.

    Raises:
        UploadError: 422 ``bad_archive`` for an unreadable or corrupted zip,
            ``unsafe_archive`` for encryption, path traversal, links and special files,
            too many members, ``empty_archive`` for one without files; 413 ``too_large``
            beyond ``max_unpacked_bytes`` or :data:`MAX_RATIO`; 507 ``insufficient_storage``.
    """
    _check_directory(archive, max_members)
    with _unreadable_as_422():
        zf = zipfile.ZipFile(archive)
    with zf, disk_full_as_507():
        members = _plan(zf.infolist(), max_members)
        _check_sizes(members, case, max_unpacked_bytes)
        written = 0
        for member in members:
            target = case.joinpath(*member.parts)
            if member.is_dir:
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                written += _extract_member(zf, member, target, max_unpacked_bytes - written)
    top = list(case.iterdir())
    return top[0] if len(top) == 1 and top[0].is_dir() else case


@contextlib.contextmanager
def disk_full_as_507() -> Iterator[None]:
    """Turn a full disk (``ENOSPC``, ``EDQUOT``) met inside the block into a 507 refusal."""
    try:
        yield
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _insufficient_storage() from None
        raise


def _insufficient_storage() -> UploadError:
    """The refusal of an upload the server's disk cannot hold."""
    return UploadError(
        507, "insufficient_storage", "the server has no disk space for this upload; try later"
    )


@contextlib.contextmanager
def _unreadable_as_422(index: int | None = None) -> Iterator[None]:
    """Turn a damaged archive (or member ``index``) met inside the block into a 422 refusal."""
    try:
        yield
    except _ARCHIVE_ERRORS:
        if index is None:
            message = (
                "the upload is not a readable zip archive (its directory is missing or "
                "corrupted); refused"
            )
        else:
            message = (
                f"archive member {index} is corrupted (its data fail the checksum or cannot "
                "be decompressed); refused"
            )
        raise UploadError(422, "bad_archive", message) from None


def _check_directory(archive: Path, max_members: int) -> None:
    """Refuse an archive whose end record declares too many members or a directory too
    large for them, before ``zipfile`` parses every entry into memory.

    The end records are found as ``zipfile`` finds them (the last 22 bytes, else the last
    signature in the final 64 KiB; a ZIP64 locator and record just before), so both read
    the same ones.
    """
    with archive.open("rb") as fh:
        size = fh.seek(0, 2)
        start = max(size - _EOCD.size - (1 << 16), 0)
        fh.seek(start)
        tail = fh.read()
        at = len(tail) - _EOCD.size
        if not (at >= 0 and tail[at : at + 4] == b"PK\x05\x06" and tail[-2:] == b"\x00\x00"):
            at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < _EOCD.size:
            raise UploadError(
                422,
                "bad_archive",
                "the upload is not a readable zip archive (no end record); refused",
            )
        fields = _EOCD.unpack_from(tail, at)
        members, directory_bytes = fields[4], fields[5]
        before = start + at - _EOCD64_LOCATOR.size - _EOCD64.size
        if before >= 0:
            fh.seek(before)
            blob = fh.read(_EOCD64.size + _EOCD64_LOCATOR.size)
            if blob[_EOCD64.size : _EOCD64.size + 4] == b"PK\x06\x07" and blob[:4] == b"PK\x06\x06":
                record = _EOCD64.unpack_from(blob)
                members, directory_bytes = record[7], record[8]
    if members > max_members:
        raise _too_many_members(members, max_members)
    most = max_members * _MAX_DIRECTORY_BYTES_PER_MEMBER
    if directory_bytes > most:
        raise UploadError(
            422,
            "unsafe_archive",
            f"the archive's directory takes {human_bytes(directory_bytes)}, more than "
            f"{max_members} members need ({human_bytes(most)}); refused",
        )


def _too_many_members(members: int, max_members: int) -> UploadError:
    """The refusal of an archive of more than ``max_members`` members."""
    return UploadError(
        422,
        "unsafe_archive",
        f"the archive holds {members} members, above the cap of {max_members}; refused",
    )


def _plan(infos: list[zipfile.ZipInfo], max_members: int) -> list[_Member]:
    """The members to write, in archive order, after checking every member's header."""
    if len(infos) > max_members:
        raise _too_many_members(len(infos), max_members)
    members: list[_Member] = []
    files: set[tuple[str, ...]] = set()
    folders: set[tuple[str, ...]] = set()
    for index, info in enumerate(infos, start=1):
        parts = _member_parts(index, info)
        is_dir = _check_header(index, info)
        if not parts or _is_junk(parts):
            continue
        parents = {parts[:k] for k in range(1, len(parts))}
        if parts in files or (not is_dir and parts in folders) or parents & files:
            raise _unsafe(index, "repeats or clashes with the path of an earlier member")
        (folders if is_dir else files).add(parts)
        folders |= parents
        members.append(_Member(index, info, parts, is_dir))
    if not files:
        raise UploadError(
            422,
            "empty_archive",
            "the archive holds no files (only folders or macOS metadata); send the case zipped",
        )
    return members


def _unsafe(index: int, fault: str) -> UploadError:
    """The refusal of an archive for member ``index``'s ``fault``."""
    return UploadError(422, "unsafe_archive", f"archive member {index} {fault}; refused")


def _member_parts(index: int, info: zipfile.ZipInfo) -> tuple[str, ...]:
    """The path parts of a member below the extraction folder, refusing any that could
    leave it (``/`` and ``\\`` both count as separators).
    """
    name = info.orig_filename  # zipfile cuts ``filename`` at a NUL; the original keeps it
    if "\x00" in name:
        raise _unsafe(index, "has a NUL character in its name")
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise _unsafe(index, "has an absolute path (path traversal)")
    parts = tuple(p for p in _SEPARATORS.split(name) if p not in ("", "."))
    if ".." in parts:
        raise _unsafe(index, "escapes the extraction folder (path traversal)")
    if any(len(p.encode()) > _MAX_PART_BYTES for p in parts):
        raise _unsafe(index, f"has a path part longer than {_MAX_PART_BYTES} bytes")
    if len("/".join(parts).encode()) > _MAX_PATH_BYTES:
        raise _unsafe(index, f"has a path longer than {_MAX_PATH_BYTES} bytes")
    return parts


def _check_header(index: int, info: zipfile.ZipInfo) -> bool:
    """Refuse an encrypted, unreadable, linked or special member; whether it is a folder."""
    if info.flag_bits & 0x1:
        raise _unsafe(index, "is encrypted")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise _unsafe(index, "is a symbolic link")
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise _unsafe(index, "is a special file (device, pipe or socket), not a regular file")
    is_dir = info.is_dir() or stat.S_ISDIR(mode)
    if is_dir:
        return True
    if info.compress_type not in _READABLE_METHODS:
        raise UploadError(
            422,
            "bad_archive",
            f"archive member {index} uses compression method {info.compress_type}, which "
            "cannot be read; zip it with deflate",
        )
    if info.file_size > RATIO_MIN_BYTES and info.file_size > MAX_RATIO * info.compress_size:
        ratio = info.file_size / max(info.compress_size, 1)
        raise UploadError(
            413,
            "too_large",
            f"archive member {index} expands {ratio:.0f}-fold to {human_bytes(info.file_size)}, "
            f"above the {MAX_RATIO}-fold cap for members over {human_bytes(RATIO_MIN_BYTES)} "
            "(a zip bomb); refused",
        )
    return False


def _is_junk(parts: tuple[str, ...]) -> bool:
    """macOS metadata a Finder-made zip carries: ``__MACOSX/``, ``._*``, ``.DS_Store``."""
    return "__MACOSX" in parts or parts[-1].startswith("._") or parts[-1] == ".DS_Store"


def _check_sizes(members: list[_Member], case: Path, max_unpacked_bytes: int) -> None:
    """Refuse members declaring more than ``max_unpacked_bytes``, or more than the disk has."""
    declared = sum(m.info.file_size for m in members if not m.is_dir)
    if declared > max_unpacked_bytes:
        raise UploadError(
            413,
            "too_large",
            f"the archive's files declare {human_bytes(declared)} uncompressed, above the cap "
            f"of {human_bytes(max_unpacked_bytes)}; refused",
        )
    try:
        check_disk_space(case, declared)
    except DiskSpaceError:
        raise _insufficient_storage() from None


def _extract_member(zf: zipfile.ZipFile, member: _Member, target: Path, budget: int) -> int:
    """Stream one member into a new file ``target``; the bytes written.

    Raises:
        UploadError: 413 ``too_large`` once the member passes ``budget`` bytes (the
            archive's remaining allowance), whatever its header declared; 422
            ``bad_archive`` for corrupted data.
    """
    with _unreadable_as_422(member.index):
        src = zf.open(member.info)
    with src, target.open("xb") as out:
        return _copy_capped(src, out, budget, member.index)


def _copy_capped(src: IO[bytes], out: IO[bytes], budget: int, index: int) -> int:
    """Copy member ``index`` from ``src`` to ``out`` in chunks, counting the bytes that
    actually come; refuse (413) once they pass ``budget``.
    """
    written = 0
    while True:
        with _unreadable_as_422(index):
            chunk = src.read(_CHUNK)
        if not chunk:
            return written
        written += len(chunk)
        if written > budget:
            raise UploadError(
                413,
                "too_large",
                f"archive member {index} extracts past the cap on the archive's total size, "
                "more than its header declares (a zip bomb); refused",
            )
        out.write(chunk)
