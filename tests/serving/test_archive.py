"""Zip uploads checked member by member before anything is written, then extracted.

Most tests go through ``save_volume``, the one caller of ``extract_archive``, so that they
also see that a refused archive leaves nothing in the upload folder.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import shutil
import stat
import struct
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tumorscope.data.errors import DiskSpaceError
from tumorscope.serving import archive
from tumorscope.serving.archive import (
    MAX_MEMBERS,
    MAX_UNPACKED_BYTES,
    UploadError,
    extract_archive,
)
from tumorscope.serving.uploads import save_volume

from .uploadkit import CLIENT_NAME, bundled, refusal, zip_bytes

MiB = 2**20


def nifti_gz_bytes() -> bytes:
    data = np.arange(37 * 41, dtype=np.int16).reshape(37, 41)
    return gzip.compress(nib.Nifti1Image(data, np.eye(4)).to_bytes(), mtime=0)


def zip_with(*infos: tuple[zipfile.ZipInfo, bytes]) -> bytes:
    """A zip whose members keep the given headers (names, modes, flags) as they are."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for info, data in infos:
            zf.writestr(info, data)
    return out.getvalue()


def info(name: str, mode: int = stat.S_IFREG | 0o644) -> zipfile.ZipInfo:
    member = zipfile.ZipInfo(name)
    member.external_attr = mode << 16
    member.compress_type = zipfile.ZIP_DEFLATED
    return member


def zeros_member(zf: zipfile.ZipFile, name: str, size: int) -> None:
    """Stream ``size`` zero bytes into a deflated member, 1 MiB at a time."""
    chunk = bytes(MiB)
    with zf.open(name, "w") as dst:
        for start in range(0, size, MiB):
            dst.write(chunk[: min(MiB, size - start)])


def central_entry(data: bytes) -> int:
    """Offset of the first central directory entry."""
    return data.index(b"PK\x01\x02")


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path → bytes)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- save_volume: zips -----------------------------------------------------------------------


def test_a_zipped_case_folder_returns_that_folder(folder: Path) -> None:
    files = {
        "Case1/flair.nii.gz": nifti_gz_bytes(),
        "Case1/t1.nii.gz": nifti_gz_bytes()[::-1],
        "Case1/sub/notes.txt": b"x" * 1000,
        "Case1/inner.zip": zip_bytes({"a.txt": b"nested"}),  # written, never extracted
    }
    data = zip_bytes({"Case1/": b"", **files})
    path = save_volume(io.BytesIO(data), folder)
    assert path == folder / "case" / "Case1"
    assert tree(folder) == {f"case/{name}": body for name, body in files.items()}


def test_a_flat_zip_returns_the_case_folder(folder: Path) -> None:
    series = {f"IM{i:04d}.dcm": bundled("MR_small.dcm") for i in range(3)}
    path = save_volume(io.BytesIO(zip_bytes(series, zipfile.ZIP_STORED)), folder)
    assert path == folder / "case"
    assert tree(path) == series


def test_macos_metadata_is_skipped(folder: Path) -> None:
    data = zip_bytes(
        {
            "Case1/flair.nii.gz": b"flair",
            "__MACOSX/Case1/._flair.nii.gz": b"\x00\x05\x16\x07",
            "Case1/._flair.nii.gz": b"\x00\x05\x16\x07",
            "Case1/.DS_Store": b"Bud1",
        }
    )
    path = save_volume(io.BytesIO(data), folder)
    assert path == folder / "case" / "Case1"
    assert tree(folder) == {"case/Case1/flair.nii.gz": b"flair"}


def test_archive_modes_never_reach_the_disk(folder: Path) -> None:
    data = zip_with((info("run.sh", stat.S_IFREG | 0o6777), b"#!/bin/sh\n"))
    path = save_volume(io.BytesIO(data), folder)
    assert (path / "run.sh").stat().st_mode & 0o7000 == 0  # no setuid/setgid/sticky


@pytest.mark.parametrize(
    "name",
    [
        f"../{CLIENT_NAME}.txt",
        "/abs.txt",
        "a/../../b.txt",
        "..\\..\\evil.txt",
        "a\\..\\..\\evil.txt",
        "C:\\evil.txt",
        "C:evil.txt",
        "\\\\server\\share\\evil.txt",
    ],
)
def test_path_traversal_is_refused_and_nothing_written(
    name: str, folder: Path, tmp_path: Path
) -> None:
    before = tree(tmp_path)
    data = zip_with((info("ok.txt"), b"fine"), (info(name), b"evil"))
    err = refusal(save_volume, io.BytesIO(data), folder)
    assert (err.status, err.code) == (422, "unsafe_archive")
    assert err.message.startswith("archive member 2 ") and "path traversal" in err.message
    assert CLIENT_NAME not in err.message
    assert tree(tmp_path) == before  # not even ok.txt: every header is checked first
    assert list(folder.iterdir()) == []


def test_a_nul_in_a_member_name_is_refused(folder: Path) -> None:
    data = zip_bytes({"aXb.txt": b"x"}).replace(b"aXb.txt", b"a\x00b.txt")
    err = refusal(save_volume, io.BytesIO(data), folder)
    assert (err.status, err.code) == (422, "unsafe_archive") and "NUL" in err.message


@pytest.mark.parametrize(
    ("mode", "fault"),
    [
        (stat.S_IFLNK | 0o777, "symbolic link"),
        (stat.S_IFCHR | 0o600, "special file"),
        (stat.S_IFIFO | 0o600, "special file"),
    ],
)
def test_links_and_special_files_are_refused(mode: int, fault: str, folder: Path) -> None:
    data = zip_with((info("ok.txt"), b"fine"), (info("link", mode), b"/etc/passwd"))
    err = refusal(save_volume, io.BytesIO(data), folder)
    assert (err.status, err.code) == (422, "unsafe_archive") and fault in err.message
    assert list(folder.iterdir()) == []


def test_an_encrypted_member_is_refused(folder: Path) -> None:
    data = bytearray(zip_bytes({"secret.nii": b"x" * 100}))
    data[6] |= 0x1  # the "encrypted" flag bit, in the local header
    data[central_entry(bytes(data)) + 8] |= 0x1  # and in the directory
    err = refusal(save_volume, io.BytesIO(bytes(data)), folder)
    assert (err.status, err.code) == (422, "unsafe_archive") and "encrypted" in err.message
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize(
    "names", [["a.txt", "a.txt"], ["a", "a/b.txt"], ["a/b.txt", "a"], ["a/", "a"]]
)
def test_repeated_or_clashing_paths_are_refused(names: list[str], folder: Path) -> None:
    repeated = names[0] == names[1]  # zipfile warns as it writes a repeated name
    with pytest.warns(UserWarning) if repeated else contextlib.nullcontext():
        data = zip_with(*((info(n), b"" if n.endswith("/") else b"x") for n in names))
    err = refusal(save_volume, io.BytesIO(data), folder)
    assert (err.status, err.code) == (422, "unsafe_archive")
    assert err.message.startswith("archive member 2 ")


def test_too_many_members_are_refused(folder: Path) -> None:
    data = zip_bytes({f"IM{i}.dcm": b"x" for i in range(6)})
    err = refusal(save_volume, io.BytesIO(data), folder, max_members=5)
    assert (err.status, err.code) == (422, "unsafe_archive") and "6 members" in err.message
    assert save_volume(io.BytesIO(data), folder, max_members=6) == folder / "case"


def test_an_end_record_that_understates_the_members_is_still_refused(folder: Path) -> None:
    data = bytearray(zip_bytes({f"IM{i}.dcm": b"x" for i in range(6)}))
    end = data.rindex(b"PK\x05\x06")
    data[end + 8 : end + 12] = struct.pack("<HH", 1, 1)  # entries on this disk, in total
    err = refusal(save_volume, io.BytesIO(bytes(data)), folder, max_members=5)
    assert (err.status, err.code) == (422, "unsafe_archive") and "6 members" in err.message


def test_the_zip64_member_count_is_read(folder: Path) -> None:
    out = io.BytesIO()  # 65536 empty members: the 32-bit end record can only say 65535
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for i in range(2**16):
            zf.writestr(str(i), b"")
    err = refusal(save_volume, io.BytesIO(out.getvalue()), folder, max_members=2**16 - 1)
    assert (err.status, err.code) == (422, "unsafe_archive") and "65536 members" in err.message


def test_a_directory_too_large_for_its_members_is_refused(folder: Path) -> None:
    member = info("a.txt")
    member.comment = b"c" * 3000  # one directory entry of ~3 KiB; 2 members may take 2 KiB
    err = refusal(save_volume, io.BytesIO(zip_with((member, b"x"))), folder, max_members=2)
    assert (err.status, err.code) == (422, "unsafe_archive") and "directory" in err.message


def test_a_zip_bomb_is_413_and_never_written(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "rmtree", lambda *_, **__: None)  # keep what was written
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zeros_member(zf, "flair.nii", 50 * MiB)
    assert len(out.getvalue()) < 200_000
    err = refusal(save_volume, io.BytesIO(out.getvalue()), folder, max_unpacked_bytes=10 * MiB)
    assert (err.status, err.code) == (413, "too_large") and "zip bomb" in err.message
    assert tree(folder) == {}  # refused from the headers, before a byte was extracted


def test_a_member_beyond_the_ratio_is_413_under_the_size_cap(folder: Path) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mask.nii", bytes(MiB))  # 1 MiB of zeros: too small to be held to the ratio
        zeros_member(zf, "flair.nii", 3 * MiB)
    err = refusal(save_volume, io.BytesIO(out.getvalue()), folder)
    assert (err.status, err.code) == (413, "too_large")
    assert err.message.startswith("archive member 2 expands")
    assert list(folder.iterdir()) == []


def test_declared_sizes_above_the_cap_are_413(folder: Path) -> None:
    data = zip_bytes({"a.bin": bytes(MiB), "b.bin": bytes(MiB)}, zipfile.ZIP_STORED)
    err = refusal(save_volume, io.BytesIO(data), folder, max_unpacked_bytes=MiB + 10)
    assert (err.status, err.code) == (413, "too_large") and "declare" in err.message
    assert save_volume(io.BytesIO(data), folder, max_unpacked_bytes=2 * MiB) == folder / "case"


def test_a_header_understating_its_size_never_writes_more(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "rmtree", lambda *_, **__: None)  # keep what was written
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zeros_member(zf, "flair.nii", 5 * MiB)
    data = bytearray(out.getvalue())
    struct.pack_into("<L", data, 22, 1000)  # uncompressed size, local header
    struct.pack_into("<L", data, central_entry(bytes(data)) + 24, 1000)  # and directory
    err = refusal(save_volume, io.BytesIO(bytes(data)), folder)
    assert (err.status, err.code) == (422, "bad_archive")  # the CRC-32 of 1000 bytes fails
    written = tree(folder)
    assert set(written) <= {"case/flair.nii"}
    assert sum(len(b) for b in written.values()) <= 1000


def test_the_bytes_written_are_counted_whatever_the_headers_say() -> None:
    out = io.BytesIO()
    with pytest.raises(UploadError) as caught:
        archive._copy_capped(io.BytesIO(bytes(3 * MiB)), out, MiB + 1, index=4)
    assert (caught.value.status, caught.value.code) == (413, "too_large")
    assert caught.value.message.startswith("archive member 4 ")
    assert len(out.getvalue()) <= MiB + 1


@pytest.mark.parametrize(
    "data",
    [
        b"PK\x03\x04" + np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes(),
        zip_bytes({"a.txt": b"a" * 5000})[:-30],  # truncated end record
        zip_bytes({"a.txt": b"a" * 5000}).replace(b"PK\x01\x02", b"XX\x01\x02"),  # directory
    ],
)
def test_an_unreadable_zip_is_bad_archive(data: bytes, folder: Path) -> None:
    err = refusal(save_volume, io.BytesIO(data), folder)
    assert (err.status, err.code) == (422, "bad_archive")
    assert list(folder.iterdir()) == []


def test_corrupted_member_data_is_bad_archive(folder: Path) -> None:
    payload = np.random.default_rng(2).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    data = bytearray(zip_bytes({"ok.txt": b"fine", "flair.nii": payload}, zipfile.ZIP_STORED))
    data[data.index(payload) + 100] ^= 0xFF  # fails the CRC-32
    err = refusal(save_volume, io.BytesIO(bytes(data)), folder)
    assert (err.status, err.code) == (422, "bad_archive")
    assert err.message.startswith("archive member 2 is corrupted")
    assert list(folder.iterdir()) == []  # the member written before it is removed too


def test_an_unknown_compression_method_is_bad_archive(folder: Path) -> None:
    data = bytearray(zip_bytes({"a.txt": b"a" * 100}))
    struct.pack_into("<H", data, 8, 9)  # Deflate64, in the local header
    struct.pack_into("<H", data, central_entry(bytes(data)) + 10, 9)
    err = refusal(save_volume, io.BytesIO(bytes(data)), folder)
    assert (err.status, err.code) == (422, "bad_archive") and "method 9" in err.message


@pytest.mark.parametrize(
    "members",
    [{}, {"Case1/": b"", "Case1/sub/": b""}, {"__MACOSX/._a": b"x", "._b": b"y"}],
)
def test_an_archive_without_files_is_empty_archive(members: dict[str, bytes], folder: Path) -> None:
    err = refusal(save_volume, io.BytesIO(zip_bytes(members)), folder)
    assert (err.status, err.code) == (422, "empty_archive")
    assert list(folder.iterdir()) == []


def test_too_little_disk_space_is_507(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def no_space(path: Path, nbytes: int) -> None:
        seen.append(nbytes)
        raise DiskSpaceError(path, "needs more than the disk has free")

    monkeypatch.setattr(archive, "check_disk_space", no_space)
    data = zip_bytes({"a.bin": b"a" * 1000, "b.bin": b"b" * 234})
    err = refusal(save_volume, io.BytesIO(data), folder)
    assert (err.status, err.code) == (507, "insufficient_storage")
    assert seen == [1234]
    assert list(folder.iterdir()) == []


def test_member_names_never_reach_a_message(folder: Path) -> None:
    member = info(f"{CLIENT_NAME}/link", stat.S_IFLNK | 0o777)
    err = refusal(save_volume, io.BytesIO(zip_with((member, b"x"))), folder)
    assert CLIENT_NAME not in err.message


def test_extract_archive_leaves_a_refused_extraction_to_its_caller(tmp_path: Path) -> None:
    payload = np.random.default_rng(2).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    data = bytearray(zip_bytes({"ok.txt": b"fine", "flair.nii": payload}, zipfile.ZIP_STORED))
    data[data.index(payload) + 100] ^= 0xFF  # fails the CRC-32
    upload = tmp_path / "upload.zip"
    upload.write_bytes(bytes(data))
    case = tmp_path / "case"
    case.mkdir()
    caps = {"max_members": MAX_MEMBERS, "max_unpacked_bytes": MAX_UNPACKED_BYTES}
    with pytest.raises(UploadError) as caught:
        extract_archive(upload, case, **caps)
    assert (caught.value.status, caught.value.code) == (422, "bad_archive")
    assert tree(case)["ok.txt"] == b"fine"  # removing it is save_volume's part
    assert upload.exists()
    other = tmp_path / "other"
    other.mkdir()
    upload.write_bytes(zip_bytes({"Case1/a.txt": b"a"}))
    assert extract_archive(upload, other, **caps) == other / "Case1"
