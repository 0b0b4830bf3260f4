"""The files of a run folder: safetensors without pickle, sha256 manifests, crash-safe writes.

A checkpoint folder holds ``model.safetensors``, optional further tensor and JSON files,
and ``manifest.json`` with the sha256 of every other file. Every file is written
atomically (temp file, fsync, rename) and the manifest last, so a folder whose manifest
verifies is complete. Reading verifies the hashes and never unpickles.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors.torch import load_file

from tumorscope.fileio import (
    atomic_save_tensors,
    atomic_write_bytes,
    atomic_write_json,
    fsync_dir,
    sha256_file,
    to_json,
)

__all__ = [
    "DOMAIN_FILE",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "CheckpointError",
    "atomic_save_tensors",
    "atomic_write_bytes",
    "atomic_write_json",
    "read_manifest",
    "read_tensors",
    "settle",
    "sha256_file",
    "to_json",
    "write_checkpoint",
]

MODEL_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"
# The out-of-domain model of a finished run (``tumorscope.runs.load.DomainStats``); runs made
# before it existed have none and predict with ``domain.score`` null.
DOMAIN_FILE = "domain.safetensors"
# Suffix of a file staged by an unfinished write_checkpoint.
STAGED = ".new"
# Fixed limits, the same on every machine: a manifest is a few hundred kB at most (the
# training survival data dominates); a model of tumorscope's sizes is far under 2 GiB.
MAX_MANIFEST_BYTES = 64 * 2**20
MAX_HEADER_BYTES = 16 * 2**20
MAX_TENSOR_BYTES = 2 * 2**30
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


class CheckpointError(RuntimeError):
    """A checkpoint folder is incomplete, altered or unreadable."""


def write_checkpoint(
    folder: Path,
    *,
    model_state: Mapping[str, torch.Tensor],
    manifest: Mapping[str, Any],
    tensor_files: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    json_files: Mapping[str, Any] | None = None,
) -> None:
    """Write a checkpoint folder so that a kill at any moment leaves a loadable one.

    The new files are staged beside the old ones (``<name>.new``, each atomic), then the
    new manifest (``manifest.json.new``, atomic: the commit point), then each staged file
    and the manifest are renamed into place. Before the commit the old checkpoint is
    untouched; after it, :func:`settle` finishes the renames.

    Args:
        folder: Destination folder (created).
        model_state: Model tensors, written to ``model.safetensors``.
        manifest: JSON-able description; ``files`` (name → sha256) is added.
        tensor_files: Further safetensors files, name → tensors.
        json_files: Further JSON files, name → JSON-able value.
    """
    folder.mkdir(parents=True, exist_ok=True)
    settle(folder)  # finish (or drop) an interrupted write before staging a new one
    files = {}
    try:
        for name, tensors in {MODEL_FILE: model_state, **(tensor_files or {})}.items():
            atomic_save_tensors(folder / (name + STAGED), tensors)
            files[name] = sha256_file(folder / (name + STAGED))
        for name, value in (json_files or {}).items():
            atomic_write_json(folder / (name + STAGED), value)
            files[name] = sha256_file(folder / (name + STAGED))
        atomic_write_json(folder / (MANIFEST_FILE + STAGED), {**manifest, "files": files})
    except BaseException:  # a failed write (disk full, ...) leaves the old checkpoint alone
        for name in files:
            (folder / (name + STAGED)).unlink(missing_ok=True)
        raise
    settle(folder)


def settle(folder: Path) -> None:
    """Finish a checkpoint write that was interrupted after its commit point, or drop one
    interrupted before it, so that ``folder`` holds exactly one verified checkpoint.

    Only the writer (training) calls this; readers never write into a run folder.
    """
    journal = folder / (MANIFEST_FILE + STAGED)
    if journal.is_file():
        try:
            pending = json.loads(journal.read_text())
            files = pending["files"]
            sources = {
                name: _staged_or_current(folder, name, digest) for name, digest in files.items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            sources = None
        if sources is not None and all(src is not None for src in sources.values()):
            for name, src in sources.items():
                if src is not None and src.name.endswith(STAGED):
                    os.replace(src, folder / name)
            os.replace(journal, folder / MANIFEST_FILE)
            fsync_dir(folder)
        else:  # an atomic journal that does not verify cannot be ours: drop it
            journal.unlink(missing_ok=True)
    for stale in folder.glob("*" + STAGED):
        stale.unlink(missing_ok=True)


def _staged_or_current(folder: Path, name: str, digest: str) -> Path | None:
    """The staged or the current copy of ``name`` whose sha256 is ``digest``."""
    for path in (folder / (name + STAGED), folder / name):
        if path.is_file() and sha256_file(path) == digest:
            return path
    return None


def _listed_file(folder: Path, name: object, manifest_path: Path) -> Path:
    """The file a manifest entry names: a plain relative path that stays inside ``folder``."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise CheckpointError(f"{manifest_path}: file entry {name!r} is not a file name")
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or rel.as_posix() != name:
        raise CheckpointError(
            f"{manifest_path}: file entry {name!r} is not a plain path inside the run folder"
        )
    path = folder / rel
    root = folder.resolve()
    if root not in path.resolve().parents:
        raise CheckpointError(f"{manifest_path}: file entry {name!r} leads outside the run folder")
    return path


def _load_json_object(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise CheckpointError(
            f"{path}: manifest of {size} bytes exceeds the {MAX_MANIFEST_BYTES} byte limit"
        )
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable manifest: {e}") from None
    except RecursionError:
        raise CheckpointError(f"{path}: unreadable manifest: nested too deeply") from None
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{path}: manifest is not a JSON object")
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    """Read and hash-verify a checkpoint folder's manifest.

    Every entry of ``files`` must be a plain relative path inside the folder, and the
    weights file (an export's graphs) must be among them: nothing unlisted is ever loaded.

    Raises:
        CheckpointError: missing or malformed manifest, missing file or hash mismatch.
    """
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no manifest (incomplete or not a checkpoint)")
    manifest = _load_json_object(path)
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        raise CheckpointError(f"{path}: 'files' is not a mapping of file name to sha256")
    export = manifest.get("export")
    graphs = export.get("graphs") if isinstance(export, dict) else None
    weights = list(graphs.values()) if isinstance(graphs, dict) and graphs else [MODEL_FILE]
    for name in weights:
        if name not in files:
            raise CheckpointError(
                f"{path}: {name} is not listed with its sha256 (weights would load unverified)"
            )
    for name, digest in files.items():
        f = _listed_file(folder, name, path)
        if not isinstance(digest, str) or len(digest) != 64:
            raise CheckpointError(f"{path}: sha256 of {name!r} is not a 64-digit hex string")
        if not f.is_file():
            raise CheckpointError(f"{f}: listed in the manifest but missing")
        if sha256_file(f) != digest:
            raise CheckpointError(
                f"{f}: sha256 does not match the manifest (file altered or truncated)"
            )
    return manifest


def check_safetensors(path: Path, max_bytes: int = MAX_TENSOR_BYTES) -> None:
    """Check a safetensors file's header against its size before anything is read into memory.

    Raises:
        CheckpointError: a header that is too long, malformed, or describes tensors that do
            not fit the file or exceed ``max_bytes``.
    """
    size = path.stat().st_size
    if size < 8:
        raise CheckpointError(f"{path}: not a safetensors file ({size} bytes)")
    with path.open("rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > min(size - 8, MAX_HEADER_BYTES):
            raise CheckpointError(
                f"{path}: safetensors header of {n} bytes does not fit the file of {size} bytes"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path}: unreadable safetensors header: {e}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header is not a JSON object")
    data = size - 8 - n
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            itemsize = DTYPE_BYTES[dtype]
            count = math.prod(int(d) for d in shape)
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed header entry") from None
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= data):
            raise CheckpointError(f"{path}: tensor {name!r} lies outside the file")
        if end - begin != count * itemsize:
            raise CheckpointError(f"{path}: tensor {name!r} size does not match its shape")
        total += end - begin
    if total > max_bytes:
        raise CheckpointError(f"{path}: {total} bytes of tensors exceed the {max_bytes} byte limit")


def read_tensors(path: Path, max_bytes: int = MAX_TENSOR_BYTES) -> dict[str, torch.Tensor]:
    """Tensors of one safetensors file (no pickle); the header is checked first."""
    check_safetensors(path, max_bytes)
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for a damaged file
        raise CheckpointError(f"{path}: unreadable safetensors file: {e}") from None
