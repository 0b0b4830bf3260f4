"""``load_run``: one loader for a finished run and for a stage checkpoint alike.

A stage checkpoint is a stage's best (``RUN/stages/<name>``) or a snapshot of the weights
after a run-wide step (``RUN/snapshots/step-<N>``, ``runtime.snapshot_steps``).

A run folder describes itself (nnU-Net's trained-model folder): the manifest names the
config, the preprocessing spec, the calibration and the sha256 of every file; this module
reads it, verifies it and builds the backend that computes with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from tumorscope import __version__
from tumorscope.config import CalibrationConfig, Config, config_from_dict
from tumorscope.data.spec import PreprocessSpec
from tumorscope.data.types import DataError
from tumorscope.models.multitask import MultiTaskNet
from tumorscope.models.registry import create_model
from tumorscope.runs.backend import Backend, TorchBackend
from tumorscope.runs.files import (
    MANIFEST_FILE,
    MODEL_FILE,
    CheckpointError,
    read_manifest,
    read_tensors,
)
from tumorscope.runs.manifest import Calibration, RunManifest

log = logging.getLogger(__name__)

STAGES_DIR = "stages"
SNAPSHOTS_DIR = "snapshots"
# A stage checkpoint has no calibration of its own: it is scored with these.
STAGE_TEMPERATURE = 1.0
STAGE_THRESHOLD = 0.5


@dataclass(frozen=True)
class LoadedRun:
    """A verified run folder, ready to compute with.

    Attributes:
        path: The folder.
        manifest: Its typed manifest.
        config: The resolved experiment config.
        spec: The preprocessing spec the model was trained with.
        calibration: The run's calibration; for a stage checkpoint, the stage defaults with
            the parent run's data properties (see :func:`stage_calibration`); None for a
            manifest that is neither a finished run nor a stage checkpoint.
        backend: What computes: a :class:`Backend`.
    """

    path: Path
    manifest: RunManifest
    config: Config
    spec: PreprocessSpec
    calibration: Calibration | None
    backend: Backend

    @property
    def model(self) -> MultiTaskNet:
        """The PyTorch network (MC dropout and Grad-CAM need it).

        Raises:
            DataError: the backend is not a PyTorch one.
        """
        if not isinstance(self.backend, TorchBackend):
            raise DataError(self.path, "this run's backend has no PyTorch model")
        return self.backend.model


def read_run_manifest(folder: str | Path) -> RunManifest:
    """The hash-verified, typed manifest of a run or stage checkpoint folder.

    Raises:
        CheckpointError: missing manifest, missing file or hash mismatch.
        ManifestError: a manifest this version cannot read (names the run and what to do).
    """
    path = Path(folder)
    return RunManifest.from_dict(read_manifest(path), path / MANIFEST_FILE)


def parent_run(folder: Path) -> Path | None:
    """The run a stage checkpoint ``RUN/stages/<name>`` or ``RUN/snapshots/step-<N>``
    belongs to, or None."""
    return folder.parent.parent if folder.parent.name in (STAGES_DIR, SNAPSHOTS_DIR) else None


def stage_calibration(cfg: CalibrationConfig, parent: RunManifest | None) -> Calibration:
    """Calibration a stage checkpoint is scored with: temperature 1, threshold 0.5, the
    configured gate and post-processing, no Breslow baseline or risk quantiles (fitted to the final model); the
    parent run's survival horizon, training outcomes and clinical imputation (data
    properties, not model ones)."""
    pcal = parent.calibration if parent is not None else None
    return Calibration(
        temperature=STAGE_TEMPERATURE,
        threshold=STAGE_THRESHOLD,
        gate_threshold=cfg.gate_threshold,
        slice_gate=cfg.slice_gate,
        min_component_ml=cfg.min_component_ml,
        tau=None if pcal is None else pcal.tau,
        train_survival=None if pcal is None else pcal.train_survival,
        imputation=None if pcal is None else pcal.imputation,
        reasons={"stage": "stage checkpoint: temperature 1, threshold 0.5, no baseline"},
    )


def load_run(folder: str | Path, *, batch_size: int = 16) -> LoadedRun:
    """Load a finished run folder or a stage checkpoint (``RUN/stages/<name>``,
    ``RUN/snapshots/step-<N>``).

    Hashes are verified and nothing is unpickled. A stage checkpoint gets the calibration
    of :func:`stage_calibration` and its parent run's splits (none outside a run folder).

    Args:
        folder: The run or checkpoint folder.
        batch_size: Slices per forward pass of the backend.

    Raises:
        CheckpointError: Missing or altered files.
        ManifestError: A manifest of an unknown format or a newer schema.
        ConfigError: The stored config is invalid.
        DataError: Weights or preprocessing that do not fit the config.
    """
    path = Path(folder)
    manifest = read_run_manifest(path)
    source = str(path / MANIFEST_FILE)
    cfg = config_from_dict(manifest.config, source=source)
    calibration = manifest.calibration
    if calibration is None and manifest.is_stage:
        parent: RunManifest | None = None
        parent_dir = parent_run(path)
        if parent_dir is not None:
            try:
                parent = read_run_manifest(parent_dir)
            except (CheckpointError, DataError):
                log.warning("%s: parent run unreadable; evaluating every patient", path)
        calibration = stage_calibration(cfg.calibration, parent)
        manifest = manifest.replace(splits=None if parent is None else parent.splits)
    k, cols = cfg.model.clinical_features, list(manifest.clinical_columns)
    if "survival" in cfg.model.heads and len(cols) != k:
        raise DataError(
            source, f"lists {len(cols)} clinical column(s) {cols} for a model that takes {k}"
        )
    try:
        spec = PreprocessSpec.from_dict(dict(manifest.preprocessing))
        model = create_model(cfg.model)
        _load_weights(model, read_tensors(path / MODEL_FILE), path, manifest)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        if isinstance(e, CheckpointError | DataError):
            raise
        raise DataError(source, f"run cannot be loaded: {e}") from None
    return LoadedRun(
        path=path,
        manifest=manifest,
        config=cfg,
        spec=spec,
        calibration=calibration,
        backend=TorchBackend(model, batch_size=batch_size),
    )


def _load_weights(
    model: MultiTaskNet, state: dict[str, torch.Tensor], path: Path, manifest: RunManifest
) -> None:
    """Load ``state`` into ``model``; weights of another network are one line naming the run.

    Raises:
        DataError: the weights do not fit the network (a run made before the network
            changed, e.g. by an earlier tumorscope): says to retrain.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or reshaped:
        example = (missing or unexpected or reshaped)[0]
        raise DataError(
            path,
            f"its weights do not fit this tumorscope's network ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(reshaped)} of another shape, e.g. {example!r}): "
            f"the run was made by tumorscope {manifest.code_version}, this is {__version__}; "
            "retrain it with `tumorscope train`",
        )
    model.load_state_dict(state)
