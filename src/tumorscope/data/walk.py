"""Every entry under a data folder that cannot be read as what its name says, one per problem.

The layouts list only regular files and folders, so a dangling link, a FIFO or a folder
named ``Y1.jpg`` would otherwise vanish without a word, and one folder that cannot be
listed would hide everything beside it. :func:`unreadable_entries` walks the tree (with an
``onerror`` that records the folder and carries on) and names each such entry;
:func:`entry_fault` is the same test for one path, which the readers ask first.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tumorscope.data.errors import UnreadableFileError
from tumorscope.data.types import DataError

#: Names a layout may read: a special file or folder spelled like one is reported.
DATA_SUFFIXES = (".nii", ".nii.gz", ".png", ".jpg", ".jpeg", ".dcm", ".csv", ".json")

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def is_data_name(name: str) -> bool:
    """True for a name a layout may read: a data suffix, or none at all (DICOM files)."""
    lower = name.lower()
    return lower.endswith(DATA_SUFFIXES) or "." not in lower


def entry_fault(path: Path) -> str | None:
    """Why ``path`` cannot be read as a regular file, or None if it can (or does not exist).

    Never opens anything that could block: the kind of entry comes from ``lstat``/``stat``
    and a regular file is opened non-blocking, then closed.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot be examined ({e.strerror or e})"
    if stat.S_ISLNK(st.st_mode):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return f"is a symbolic link to {os.readlink(path)}, which does not exist"
        except OSError as e:
            return f"is a symbolic link that cannot be followed ({e.strerror or e})"
    if stat.S_ISDIR(st.st_mode):
        return "is a folder, not a file"
    for test, kind in _KINDS:
        if test(st.st_mode):
            return f"is {kind}, not a regular file"
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except OSError as e:
        return f"cannot be opened ({e.strerror or e})"
    return None


def unreadable_entries(root: Path, *, depth: int) -> list[DataError]:
    """Every unreadable entry down to ``depth`` levels below ``root``, each its own problem.

    Reported: folders that cannot be listed; dangling links, FIFOs, sockets, devices and
    files that cannot be opened, among names a layout may read (:func:`is_data_name`);
    folders named like data files. Hidden entries (``.name``) are skipped, as the layouts
    skip them.

    Args:
        root: Data folder.
        depth: Levels below ``root`` whose entries are examined.

    Returns:
        :class:`~tumorscope.data.errors.UnreadableFileError` problems, in walk order.
    """
    problems: list[DataError] = []

    def record(err: OSError) -> None:
        where = Path(err.filename) if err.filename else root
        problems.append(
            UnreadableFileError(where, f"folder cannot be listed ({err.strerror or err})")
        )

    base = len(root.parts)
    for folder, dirs, files in os.walk(root, onerror=record, followlinks=True):
        here = Path(folder)
        level = len(here.parts) - base + 1  # level of the entries listed here
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for d in dirs:
            if d.lower().endswith(DATA_SUFFIXES):
                problems.append(
                    UnreadableFileError(
                        here / d, "is a folder, but its name says it is a data file"
                    )
                )
        if level >= depth:
            dirs[:] = []
        for name in sorted(files):
            if name.startswith(".") or not is_data_name(name):
                continue
            fault = entry_fault(here / name)
            if fault is not None:
                problems.append(UnreadableFileError(here / name, fault))
    return problems
