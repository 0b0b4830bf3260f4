"""``load_run``: one loader for a finished run and for a stage checkpoint alike.

A stage checkpoint is a stage's best (``RUN/stages/<name>``) or a snapshot of the weights
after a run-wide step (``RUN/snapshots/step-<N>``, ``runtime.snapshot_steps``).

A run folder describes itself (nnU-Net's trained-model folder): the manifest names the
config, the preprocessing spec, the calibration and the sha256 of every file; this module
reads it, verifies it and builds the backend that computes with it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tumorscope import __version__
from tumorscope.config import TASKS, CalibrationConfig, Config, config_from_dict
from tumorscope.data.spec import PreprocessSpec
from tumorscope.data.types import DataError
from tumorscope.models.multitask import MultiTaskNet
from tumorscope.models.registry import create_model
from tumorscope.runs.backend import Backend, TorchBackend
from tumorscope.runs.files import (
    DOMAIN_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    CheckpointError,
    read_manifest,
    read_tensors,
)
from tumorscope.runs.manifest import Calibration, RunManifest
from tumorscope.runs.onnx import DropoutMask, OnnxBackend

log = logging.getLogger(__name__)

STAGES_DIR = "stages"
SNAPSHOTS_DIR = "snapshots"
# A stage checkpoint has no calibration of its own: it is scored with these.
STAGE_TEMPERATURE = 1.0
STAGE_THRESHOLD = 0.5


@dataclass(frozen=True, eq=False)
class DomainStats:
    """A run's out-of-domain model: where its training slices lie in the network's features.

    Written by training (``tumorscope.training.ood``) as :data:`DOMAIN_FILE`; every
    prediction asks it. An input's features ``x`` ``(F,)`` are the spatial averages of the
    pre-normalisation map of every encoder stage (``EncoderStage.pre``; ``F = Σ c_i``);
    its score is their Mahalanobis distance to the training slices,
    ``sqrt((x − mean)ᵀ · precision · (x − mean))`` (unitless), and a volume's score is the
    median of its slices' scores. A 2D input scoring above ``image_threshold`` is out of
    domain, a volume whose score is above ``volume_threshold``.

    Attributes:
        mean: ``(F,)`` mean feature of the training slices.
        precision: ``(F, F)`` inverse of their shrunk (Ledoit-Wolf) covariance, symmetric.
        image_threshold: Score above which a 2D input is out of domain (set on the
            validation split's 2D images).
        volume_threshold: Score above which a volume slice, and a volume, is out of domain
            (set on the validation split's volume slices).
        quantile: Share of in-domain validation inputs of each kind the thresholds keep.
        n_train: Training slices (volume slices and 2D images) the statistics come from.
    """

    mean: np.ndarray
    precision: np.ndarray
    image_threshold: float
    volume_threshold: float
    quantile: float
    n_train: int

    def __post_init__(self) -> None:
        f = self.mean.shape[0] if self.mean.ndim == 1 else -1
        if f < 1 or self.precision.shape != (f, f):
            raise ValueError(
                f"domain model: mean {self.mean.shape} and precision {self.precision.shape} "
                "are not (F,) and (F, F)"
            )
        if not (np.isfinite(self.mean).all() and np.isfinite(self.precision).all()):
            raise ValueError("domain model: mean or precision holds NaN or Inf")
        for name in ("image_threshold", "volume_threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"domain model: {name} {value} is not a score >= 0")
        if not 0.0 < self.quantile <= 1.0:
            raise ValueError(f"domain model: quantile {self.quantile} is not in (0, 1]")

    @property
    def feature_dim(self) -> int:
        """``F``, the length of the feature vector the statistics describe."""
        return int(self.mean.shape[0])

    def score(self, features: np.ndarray) -> np.ndarray:
        """``(N,)`` float64 Mahalanobis distances of ``(N, F)`` features to the training slices.

        Raises:
            ValueError: ``features`` is not ``(N, F)``.
        """
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.feature_dim:
            raise ValueError(f"features of shape {x.shape} are not (N, {self.feature_dim})")
        d = x - self.mean
        # Hand-written: sklearn's .mahalanobis needs its fitted estimator, not stored arrays.
        return np.sqrt(np.maximum(np.einsum("nf,fg,ng->n", d, self.precision, d), 0.0))

    @staticmethod
    def volume_score(slice_scores: np.ndarray) -> float:
        """A volume's score: the median of its slices' scores (robust to a few odd edge
        slices, high when most slices are unlike training)."""
        return float(np.median(np.asarray(slice_scores, dtype=np.float64)))

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors of :data:`DOMAIN_FILE` (float32 statistics, float64 scalars)."""
        return {
            "mean": torch.from_numpy(np.asarray(self.mean, dtype=np.float32)),
            "precision": torch.from_numpy(np.asarray(self.precision, dtype=np.float32)),
            "image_threshold": torch.tensor(self.image_threshold, dtype=torch.float64),
            "volume_threshold": torch.tensor(self.volume_threshold, dtype=torch.float64),
            "quantile": torch.tensor(self.quantile, dtype=torch.float64),
            "n_train": torch.tensor(self.n_train, dtype=torch.int64),
        }

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], path: str | Path) -> DomainStats:
        """Read :meth:`to_tensors`' output back.

        Raises:
            DataError: a missing tensor or an invalid value, naming ``path``.
        """
        try:
            return cls(
                mean=tensors["mean"].double().numpy(),
                precision=tensors["precision"].double().numpy(),
                image_threshold=float(tensors["image_threshold"]),
                volume_threshold=float(tensors["volume_threshold"]),
                quantile=float(tensors["quantile"]),
                n_train=int(tensors["n_train"]),
            )
        except KeyError as e:
            raise DataError(path, f"domain model lacks the tensor {e}") from None
        except (ValueError, TypeError, RuntimeError) as e:
            raise DataError(path, f"unreadable domain model: {e}") from None


def read_domain(folder: Path, manifest: RunManifest) -> DomainStats | None:
    """The run's :class:`DomainStats`, or None when its manifest lists no :data:`DOMAIN_FILE`
    (a run made before the out-of-domain model, a stage checkpoint, an untrained model).

    Raises:
        CheckpointError: an unreadable file.
        DataError: a file that is not a domain model.
    """
    if DOMAIN_FILE not in manifest.files:
        return None
    return DomainStats.from_tensors(read_tensors(folder / DOMAIN_FILE), folder / DOMAIN_FILE)


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
        domain: The out-of-domain model (:data:`DOMAIN_FILE`); None when the run has none.
    """

    path: Path
    manifest: RunManifest
    config: Config
    spec: PreprocessSpec
    calibration: Calibration | None
    backend: Backend
    domain: DomainStats | None = None

    @property
    def model(self) -> MultiTaskNet:
        """The PyTorch network (MC dropout and Grad-CAM need it).

        Raises:
            DataError: the backend is not a PyTorch one.
        """
        if not isinstance(self.backend, TorchBackend):
            raise DataError(
                self.path,
                f"this run's backend ({type(self.backend).__name__}) has no PyTorch model",
            )
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
    backend: Backend
    try:
        spec = PreprocessSpec.from_dict(dict(manifest.preprocessing))
        if manifest.export is not None:
            backend = _onnx_backend(path, manifest, cfg, batch_size)
        else:
            model = create_model(cfg.model)
            _load_weights(model, read_tensors(path / MODEL_FILE), path, manifest)
            backend = TorchBackend(model, batch_size=batch_size)
        domain = read_domain(path, manifest)
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
        backend=backend,
        domain=domain,
    )


def _onnx_backend(path: Path, manifest: RunManifest, cfg: Config, batch_size: int) -> OnnxBackend:
    """The ONNX Runtime backend of an export folder (its manifest's ``export`` entry).

    Raises:
        DataError: an ``export`` entry this version cannot read, or a graph ONNX Runtime
            cannot open, naming the file.
    """
    export = manifest.export or {}
    source = path / MANIFEST_FILE
    try:
        masks = [DropoutMask.from_dict(m) for m in export["masks"]]
        size = int(export["size"])
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(source, f"malformed 'export' entry ({e!r}); re-export the run") from None
    tasks = tuple(t for t in TASKS if t == "segmentation" or t in cfg.model.heads)
    try:
        return OnnxBackend(
            path,
            tasks=tasks,
            size=size,
            channels=cfg.model.in_channels,
            masks=masks,
            clinical_features=cfg.model.clinical_features,
            batch_size=batch_size,
        )
    except DataError:
        raise
    except Exception as e:  # onnxruntime raises its own error types for a damaged graph
        raise DataError(path, f"an exported graph cannot be opened by ONNX Runtime: {e}") from None


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
