"""The files of a run folder: atomic writes, safetensors without pickle, sha256 manifests.

A checkpoint folder holds ``model.safetensors``, optional further tensor and JSON files,
and ``manifest.json`` with the sha256 of every other file. Every file is written
atomically (temp file, fsync, rename) and the manifest last, so a folder whose manifest
verifies is complete. Reading verifies the hashes and never unpickles.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

MODEL_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint folder is incomplete, altered or unreadable."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_checkpoint(
    folder: Path,
    *,
    model_state: Mapping[str, torch.Tensor],
    manifest: Mapping[str, Any],
    tensor_files: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    json_files: Mapping[str, Any] | None = None,
) -> None:
    """Write a checkpoint folder atomically file by file, manifest last.

    Args:
        folder: Destination folder (created).
        model_state: Model tensors, written to ``model.safetensors``.
        manifest: JSON-able description; ``files`` (name → sha256) is added.
        tensor_files: Further safetensors files, name → tensors.
        json_files: Further JSON files, name → JSON-able value.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_FILE).unlink(missing_ok=True)  # an old manifest must not vouch for new files
    files = {}
    atomic_save_tensors(folder / MODEL_FILE, model_state)
    files[MODEL_FILE] = sha256_file(folder / MODEL_FILE)
    for name, tensors in (tensor_files or {}).items():
        atomic_save_tensors(folder / name, tensors)
        files[name] = sha256_file(folder / name)
    for name, value in (json_files or {}).items():
        atomic_write_json(folder / name, value)
        files[name] = sha256_file(folder / name)
    atomic_write_json(folder / MANIFEST_FILE, {**manifest, "files": files})


def read_manifest(folder: Path) -> dict[str, Any]:
    """Read and hash-verify a checkpoint folder's manifest.

    Raises:
        CheckpointError: missing manifest, missing file or hash mismatch.
    """
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no manifest (incomplete or not a checkpoint)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable manifest: {e}") from None
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{path}: manifest is not a JSON object")
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        raise CheckpointError(f"{path}: 'files' is not a mapping of file name to sha256")
    for name, digest in files.items():
        f = folder / name
        if not f.is_file():
            raise CheckpointError(f"{f}: listed in the manifest but missing")
        if sha256_file(f) != digest:
            raise CheckpointError(
                f"{f}: sha256 does not match the manifest (file altered or truncated)"
            )
    return manifest


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of one safetensors file (no pickle); a clear error if unreadable."""
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise CheckpointError(f"{path}: unreadable safetensors file: {e}") from None
