"""Checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint is a folder holding ``model.safetensors``, optionally ``optimizer.safetensors``
and ``state.json`` (RNG states, counters, optimizer hyper-parameters), and
``manifest.json`` with the sha256 of every other file. Every file is written atomically
(temp file, fsync, rename) and the manifest last, so a folder whose manifest verifies is
complete. Loading verifies the hashes and never unpickles.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
MANIFEST_FILE = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint folder is incomplete, altered or unreadable."""


def sha256_file(path: Path) -> str:
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


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(
        path, (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode()
    )


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _atomic_save_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
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


def optimizer_to_flat(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer ``state_dict`` into tensors (for safetensors) and JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in state["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_flat(
    tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> dict[str, Any]:
    """Inverse of :func:`optimizer_to_flat`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, rest in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(rest)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as JSON-able values."""
    np_state: Any = np.random.get_state()
    py_state = random.getstate()
    return {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [
            np_state[0],
            np_state[1].tolist(),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": torch.get_rng_state().tolist(),
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = state["numpy"]
    np.random.set_state((npy[0], np.asarray(npy[1], dtype=np.uint32), npy[2], npy[3], npy[4]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def save_checkpoint(
    folder: Path,
    *,
    model_state: Mapping[str, torch.Tensor],
    manifest: Mapping[str, Any],
    optimizer_state: Mapping[str, Any] | None = None,
    state: Mapping[str, Any] | None = None,
) -> None:
    """Write a checkpoint folder atomically file by file, manifest last.

    Args:
        folder: Destination folder (created).
        model_state: Model (and loss) tensors.
        manifest: JSON-able description; ``files`` (name → sha256) is added.
        optimizer_state: An optimizer ``state_dict`` (tensors go to safetensors).
        state: JSON-able training state (counters, RNG, scheduler, ...).
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_FILE).unlink(missing_ok=True)  # an old manifest must not vouch for new files
    files = {}
    _atomic_save_tensors(folder / MODEL_FILE, model_state)
    files[MODEL_FILE] = sha256_file(folder / MODEL_FILE)
    full_state = dict(state or {})
    if optimizer_state is not None:
        tensors, meta = optimizer_to_flat(optimizer_state)
        _atomic_save_tensors(folder / OPTIM_FILE, tensors)
        files[OPTIM_FILE] = sha256_file(folder / OPTIM_FILE)
        full_state["optimizer"] = meta
    if full_state:
        atomic_write_json(folder / STATE_FILE, full_state)
        files[STATE_FILE] = sha256_file(folder / STATE_FILE)
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
        manifest: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: unreadable manifest: {e}") from None
    for name, digest in manifest.get("files", {}).items():
        f = folder / name
        if not f.is_file():
            raise CheckpointError(f"{f}: listed in the manifest but missing")
        if sha256_file(f) != digest:
            raise CheckpointError(
                f"{f}: sha256 does not match the manifest (file altered or truncated)"
            )
    return manifest


def load_checkpoint(
    folder: Path,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any] | None, dict[str, Any]]:
    """Load a verified checkpoint.

    Returns:
        ``(manifest, model_state, optimizer_state or None, state)``.
    """
    manifest = read_manifest(folder)
    model_state = load_file(str(folder / MODEL_FILE))
    state: dict[str, Any] = {}
    if (folder / STATE_FILE).is_file():
        state = json.loads((folder / STATE_FILE).read_text())
    optim = None
    if (folder / OPTIM_FILE).is_file() and "optimizer" in state:
        optim = optimizer_from_flat(load_file(str(folder / OPTIM_FILE)), state["optimizer"])
    return manifest, model_state, optim, state
