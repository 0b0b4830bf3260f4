"""The files of a run folder: safetensors without pickle, sha256 manifests.

A checkpoint folder holds ``model.safetensors``, optional further tensor and JSON files,
and ``manifest.json`` with the sha256 of every other file. Every file is written
atomically (temp file, fsync, rename) and the manifest last, so a folder whose manifest
verifies is complete. Reading verifies the hashes and never unpickles.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from tumorscope.fileio import (
    atomic_save_tensors,
    atomic_write_bytes,
    atomic_write_json,
    sha256_file,
    to_json,
)

__all__ = [
    "MANIFEST_FILE",
    "MODEL_FILE",
    "CheckpointError",
    "atomic_save_tensors",
    "atomic_write_bytes",
    "atomic_write_json",
    "read_manifest",
    "read_tensors",
    "sha256_file",
    "to_json",
    "write_checkpoint",
]

MODEL_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"


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
