"""Resumable training state on top of :mod:`tumorscope.runs.files`.

A training checkpoint is a run-folder checkpoint (``model.safetensors`` + ``manifest.json``)
plus, where asked, ``optimizer.safetensors`` and ``state.json`` (RNG states, counters,
optimizer hyper-parameters). The files, their hashes and atomic writes are owned by
:mod:`tumorscope.runs.files`; this module only adds what training alone needs.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tumorscope.runs.files import (
    MANIFEST_FILE,
    MODEL_FILE,
    CheckpointError,
    atomic_write_json,
    read_manifest,
    read_tensors,
    settle,
    write_checkpoint,
)

OPTIM_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"

__all__ = [
    "MANIFEST_FILE",
    "MODEL_FILE",
    "OPTIM_FILE",
    "STATE_FILE",
    "CheckpointError",
    "atomic_write_json",
    "load_checkpoint",
    "read_manifest",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]


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
    full_state = dict(state or {})
    tensor_files: dict[str, Mapping[str, torch.Tensor]] = {}
    if optimizer_state is not None:
        tensors, meta = optimizer_to_flat(optimizer_state)
        tensor_files[OPTIM_FILE] = tensors
        full_state["optimizer"] = meta
    write_checkpoint(
        folder,
        model_state=model_state,
        manifest=manifest,
        tensor_files=tensor_files,
        json_files={STATE_FILE: full_state} if full_state else None,
    )


def load_checkpoint(
    folder: Path,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any] | None, dict[str, Any]]:
    """Load a verified checkpoint, first finishing a write a kill interrupted (training is
    the folder's writer; see :func:`tumorscope.runs.files.settle`).

    Returns:
        ``(manifest, model_state, optimizer_state or None, state)``.
    """
    if folder.is_dir():
        settle(folder)
    manifest = read_manifest(folder)
    model_state = read_tensors(folder / MODEL_FILE)
    state: dict[str, Any] = {}
    if (folder / STATE_FILE).is_file():
        state = json.loads((folder / STATE_FILE).read_text())
    optim = None
    if (folder / OPTIM_FILE).is_file() and "optimizer" in state:
        optim = optimizer_from_flat(read_tensors(folder / OPTIM_FILE), state["optimizer"])
    return manifest, model_state, optim, state
