"""Writing files safely: atomic writes (temp file in the same folder, fsync, rename), hashes,
and output folders that never replace a file tumorscope did not write.

Every artefact tumorscope writes goes through here, so a crash or a full disk never leaves
a partial file under the final name (at most a hidden ``.<name>.*`` temp file beside it).

The overwrite rule (:class:`OutputFolder`): a command writes a file into an output folder
only when the file is absent, or, with ``overwrite``, when the folder's record
``tumorscope-outputs.json`` lists it with the sha256 it still has (tumorscope wrote it and
nobody changed it since). Any other existing file is refused with one
:class:`OutputExistsError` naming it, ``--overwrite`` or not.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (renames, new files) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_beside(path: Path, suffix: str = "") -> tuple[int, str]:
    """A new hidden temp file beside ``path``, opened for writing: ``(fd, name)``.

    Like :func:`tempfile.mkstemp`, but created with mode 0o666 less the umask, so the renamed
    file gets the permissions a plain write would give it (mkstemp's are 0o600).
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}{suffix}"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temp file name", str(path.parent))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_json(obj: Any, *, allow_nan: bool = True) -> str:
    """JSON text (indent 2, trailing newline); NumPy scalars/arrays and paths converted."""
    return json.dumps(obj, indent=2, default=_json_default, allow_nan=allow_nan) + "\n"


def atomic_write_json(path: Path, obj: Any, *, allow_nan: bool = True) -> None:
    """Write ``obj`` as JSON atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, to_json(obj, allow_nan=allow_nan).encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_save_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write tensors as safetensors atomically."""
    # deferred: torch is heavy, and the NIfTI/PNG/JSON writers (synthetic data) do not need it
    from safetensors.torch import save_file

    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_via(path, lambda tmp: save_file(cpu, str(tmp)))


def atomic_write_via(path: Path, write: Callable[[Path], object]) -> None:
    """Let ``write(tmp)`` fill a temp file beside ``path``, then fsync it and rename it.

    The temp file keeps the last two suffixes of ``path`` (``.nii.gz``), for writers such as
    nibabel that choose the format by the name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_beside(path, "".join(path.suffixes[-2:]))
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_figure(fig: Any, path: Path, **savefig: Any) -> Path:
    """Render a matplotlib figure into memory, then write it with :func:`atomic_write_bytes`.

    The format comes from the suffix of ``path`` (``png`` when it has none); ``savefig``
    are further keyword arguments of ``Figure.savefig`` (``dpi``, ``bbox_inches``).
    """
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".").lower() or "png", **savefig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def is_inside(child: Path, parent: Path) -> bool:
    """True when ``child`` is ``parent`` or lies under it (both resolved, links followed)."""
    c, p = Path(child).resolve(), Path(parent).resolve()
    return c == p or p in c.parents


OUTPUT_RECORD = "tumorscope-outputs.json"
_RECORD_FORMAT = "tumorscope-outputs"
_RECORD_MAX_BYTES = 8 << 20  # names and hashes only; a larger file is not one we wrote
_NOT_REPLACED = "it is never replaced; move it or choose another output folder"


class OutputExistsError(FileExistsError):
    """An output would replace a file tumorscope may not replace; ``str(err)`` is ``"PATH: fault"``.

    ``filename`` and ``strerror`` are set as for any ``OSError``, so an error net that prints
    ``OSError`` as ``"FILENAME: STRERROR"`` prints the same line.
    """

    def __init__(self, path: str | Path, fault: str) -> None:
        super().__init__(errno.EEXIST, fault, str(path))
        self.path = Path(path)
        self.fault = fault

    def __str__(self) -> str:
        return f"{self.path}: {self.fault}"


def read_marker(
    path: Path, fmt: str, *, max_bytes: int = _RECORD_MAX_BYTES
) -> dict[str, Any] | None:
    """The JSON object of a marker file tumorscope wrote (``{"format": fmt, ...}``), or None.

    Returns:
        None when ``path`` does not exist.

    Raises:
        ValueError: ``path`` exists and is not such a marker (a link, a folder, too large,
            not JSON, another ``format``): the fault, to be reported with the path.
    """
    path = Path(path)
    if not os.path.lexists(path):
        return None
    fault = f"exists and is not a {fmt} marker written by tumorscope"
    if path.is_symlink() or not path.is_file() or path.stat().st_size > max_bytes:
        raise ValueError(fault)
    try:
        obj = json.loads(path.read_bytes())
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(fault) from None
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        raise ValueError(fault)
    return obj


class OutputFolder:
    """An output folder and the record of the files tumorscope wrote into it.

    ``root/tumorscope-outputs.json`` lists every file written through this class with its
    sha256. :meth:`check` allows a file name when the file is absent, or, with
    ``overwrite``, when the record lists it with the sha256 it still has; anything else
    (a user's file, a tumorscope output changed since, a link, a folder) raises
    :class:`OutputExistsError` naming it. Every write is atomic.

    Args:
        root: The folder (created on the first write).
        overwrite: Replace files tumorscope wrote here before (never other files).

    Raises:
        OutputExistsError: ``root`` is not a folder, or its record file is not one
            tumorscope wrote.
    """

    def __init__(self, root: str | Path, *, overwrite: bool = False) -> None:
        self.root = Path(root)
        self.overwrite = overwrite
        if os.path.lexists(self.root) and not self.root.is_dir():
            raise OutputExistsError(
                self.root, "exists and is not a folder; choose another output folder"
            )
        self.written()

    @property
    def record(self) -> Path:
        """The record file, ``root/tumorscope-outputs.json``."""
        return self.root / OUTPUT_RECORD

    def written(self) -> dict[str, str]:
        """File name → sha256 of what tumorscope wrote here (read afresh each call)."""
        try:
            obj = read_marker(self.record, _RECORD_FORMAT)
        except ValueError as err:
            raise OutputExistsError(self.record, f"{err}; {_NOT_REPLACED}") from None
        files = {} if obj is None else obj.get("files")
        if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()
        ):
            raise OutputExistsError(self.record, f"has no valid 'files' mapping; {_NOT_REPLACED}")
        return dict(files)

    def check(self, name: str) -> Path:
        """The path of output ``name`` if it may be written now.

        Raises:
            OutputExistsError: The file exists and may not be replaced (see the class).
            ValueError: ``name`` is not a plain file name, or is the record's own name.
        """
        if (
            not name
            or name in (".", "..", OUTPUT_RECORD)
            or any(sep and sep in name for sep in (os.sep, os.altsep, "\0"))
        ):
            raise ValueError(f"{name!r}: not a plain output file name")
        path = self.root / name
        if not os.path.lexists(path):
            return path
        if path.is_symlink() or not path.is_file():
            raise OutputExistsError(path, f"exists and is not a plain file; {_NOT_REPLACED}")
        known = self.written().get(name)
        if known is None:
            raise OutputExistsError(
                path, f"exists and was not written by tumorscope; {_NOT_REPLACED}"
            )
        if sha256_file(path) != known:
            raise OutputExistsError(path, f"was changed after tumorscope wrote it; {_NOT_REPLACED}")
        if not self.overwrite:
            raise OutputExistsError(
                path, "exists (an earlier tumorscope output); pass --overwrite to replace it"
            )
        return path

    def check_all(self, names: Iterable[str]) -> None:
        """:meth:`check` every name, before any is written (fail before the work)."""
        for name in names:
            self.check(name)

    def write_with(self, name: str, write: Callable[[Path], object]) -> Path:
        """Check ``name``, let ``write(path)`` write it (atomically), record its sha256."""
        path = self.check(name)
        self.root.mkdir(parents=True, exist_ok=True)
        write(path)
        files = self.written()  # read afresh: another writer may have recorded files since
        files[name] = sha256_file(path)
        record = {"format": _RECORD_FORMAT, "version": 1, "files": dict(sorted(files.items()))}
        atomic_write_json(self.record, record)
        return path

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Write ``data`` as output ``name`` (see :meth:`write_with`)."""
        return self.write_with(name, lambda p: atomic_write_bytes(p, data))

    def write_json(self, name: str, obj: Any, *, allow_nan: bool = True) -> Path:
        """Write ``obj`` as JSON output ``name`` (see :meth:`write_with`)."""
        return self.write_with(name, lambda p: atomic_write_json(p, obj, allow_nan=allow_nan))
