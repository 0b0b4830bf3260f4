"""The config schema: one frozen dataclass per section of a config file.

Each section checks its own ranges in ``validate``; :class:`Config.validate` adds the
checks that span sections. Reading YAML into these classes lives in
:mod:`tumorscope.config.loading`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

Profile = Literal["brain-mri", "petct"]
Task = Literal["segmentation", "tumour", "tumour_type", "survival"]
Part = Literal[
    "encoder", "decoder", "segmentation_head", "tumour_head", "tumour_type_head", "survival_head"
]
SegLoss = Literal["dice_bce", "focal", "tversky", "focal_tversky"]
Precision = Literal["fp32", "bf16", "auto"]

TASKS: tuple[str, ...] = ("segmentation", "tumour", "tumour_type", "survival")
PARTS: tuple[str, ...] = typing.get_args(Part)


class ConfigError(ValueError):
    """A config value is unknown, of the wrong type or out of range."""


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


@dataclass(frozen=True)
class DataConfig:
    """Where data comes from and how slices are made.

    Attributes:
        sources: Layouts to read (names in ``tumorscope.data.layouts.LAYOUTS``: ``brats``,
            ``kaggle``, ``hecktor``, ``dicom``, ``msd``, ``nnunet``); empty = all found.
        channels: Channel names the model takes, in order (e.g. ``[flair]`` or ``[ct, pet]``).
        missing_channels: ``error`` drops sources lacking a channel (with a warning);
            ``zero_fill`` zero-fills absent channels.
        image_size: Side of the square slices fed to the model, in pixels.
        clip_percentiles: Intensity percentiles clipped before normalisation.
        tumour_slice_fraction: Target fraction of tumour slices among extracted volume slices.
        slices_per_patient: Maximum slices extracted per volume.
        min_foreground_fraction: Slices whose brain/body mask covers less than this are skipped.
        fold: Cross-validation fold used as validation split.
        n_folds: Number of patient-level folds.
        test_fraction: Fraction of patients held out as the test split.
        bag_patients: Patients per survival batch (patient-bag sampler).
        bag_slices: Slices per patient in a survival batch.
        max_voxels: Largest volume (voxels) a reader accepts, checked from the header.
    """

    sources: tuple[str, ...] = ()
    channels: tuple[str, ...] = ("flair",)
    missing_channels: Literal["error", "zero_fill"] = "error"
    image_size: int = 128
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    tumour_slice_fraction: float = 0.5
    slices_per_patient: int = 32
    min_foreground_fraction: float = 0.02
    fold: int = 0
    n_folds: int = 5
    test_fraction: float = 0.2
    bag_patients: int = 4
    bag_slices: int = 4
    max_voxels: int = 2**27

    def validate(self) -> None:
        _check(len(self.channels) >= 1, "data.channels", "must name at least one channel")
        _check(
            8 <= self.image_size <= 1024, "data.image_size", f"{self.image_size} not in [8, 1024]"
        )
        lo, hi = self.clip_percentiles
        _check(
            0 <= lo < hi <= 100,
            "data.clip_percentiles",
            f"need 0 <= lo < hi <= 100, got {lo}, {hi}",
        )
        _check(
            0 <= self.tumour_slice_fraction <= 1, "data.tumour_slice_fraction", "must be in [0, 1]"
        )
        _check(self.slices_per_patient >= 1, "data.slices_per_patient", "must be >= 1")
        _check(
            0 <= self.min_foreground_fraction < 1,
            "data.min_foreground_fraction",
            "must be in [0, 1)",
        )
        _check(self.n_folds >= 2, "data.n_folds", "must be >= 2")
        _check(
            0 <= self.fold < self.n_folds,
            "data.fold",
            f"{self.fold} not in [0, n_folds={self.n_folds})",
        )
        _check(0 <= self.test_fraction < 1, "data.test_fraction", "must be in [0, 1)")
        _check(self.bag_patients >= 1, "data.bag_patients", "must be >= 1")
        _check(self.bag_slices >= 1, "data.bag_slices", "must be >= 1")
        _check(self.max_voxels >= 1, "data.max_voxels", "must be >= 1")


@dataclass(frozen=True)
class ModelConfig:
    """Network size and heads.

    Attributes:
        in_channels: Input channels; must equal ``len(data.channels)``.
        base_channels: Channels of the first encoder stage; doubled per level.
        depth: Number of down-sampling steps (feature maps = depth + 1).
        norm: ``instance`` or ``group`` normalisation (never batch norm).
        dropout: Dropout probability before the last decoder stage and the heads.
        regions: Segmentation regions, one sigmoid output each.
        heads: Heads to build besides segmentation.
        survival_dim: Size of the per-slice survival embedding.
        clinical_features: Number of clinical covariates joined in the survival head.
    """

    in_channels: int = 1
    base_channels: int = 16
    depth: int = 4
    norm: Literal["instance", "group"] = "instance"
    dropout: float = 0.1
    regions: tuple[str, ...] = ("WT",)
    heads: tuple[str, ...] = ("tumour", "survival")
    survival_dim: int = 32
    clinical_features: int = 0

    def validate(self) -> None:
        _check(1 <= self.in_channels <= 16, "model.in_channels", "must be in [1, 16]")
        _check(1 <= self.base_channels <= 256, "model.base_channels", "must be in [1, 256]")
        _check(1 <= self.depth <= 6, "model.depth", "must be in [1, 6]")
        _check(0 <= self.dropout < 1, "model.dropout", "must be in [0, 1)")
        _check(len(self.regions) >= 1, "model.regions", "must name at least one region")
        for h in self.heads:
            _check(h in ("tumour", "tumour_type", "survival"), "model.heads", f"unknown head {h!r}")
        _check(self.survival_dim >= 1, "model.survival_dim", "must be >= 1")
        _check(self.clinical_features >= 0, "model.clinical_features", "must be >= 0")


@dataclass(frozen=True)
class LossConfig:
    """Loss functions and how tasks are weighted.

    Attributes:
        segmentation: Segmentation loss.
        task_weights: Fixed weight per task (used when ``weighting`` is ``fixed``).
        weighting: ``fixed`` or ``uncertainty`` (Kendall et al. 2018, learned).
        tumour_pos_weight: BCE positive-class weight for the ``tumour`` head; 0 = from data.
        focal_gamma: Focal-loss exponent.
        tversky_alpha: Tversky false-positive weight.
        tversky_beta: Tversky false-negative weight.
        cox_ties: Tie handling of the Cox partial likelihood.
    """

    segmentation: SegLoss = "dice_bce"
    task_weights: dict[str, float] = field(
        default_factory=lambda: {
            "segmentation": 1.0,
            "tumour": 1.0,
            "tumour_type": 0.5,
            "survival": 0.5,
        }
    )
    weighting: Literal["fixed", "uncertainty"] = "fixed"
    tumour_pos_weight: float = 0.0
    focal_gamma: float = 2.0
    tversky_alpha: float = 0.3
    tversky_beta: float = 0.7
    cox_ties: Literal["efron", "breslow"] = "efron"

    def validate(self) -> None:
        for k, v in self.task_weights.items():
            _check(k in TASKS, f"loss.task_weights.{k}", f"unknown task; expected one of {TASKS}")
            _check(v >= 0, f"loss.task_weights.{k}", "must be >= 0")
        _check(self.tumour_pos_weight >= 0, "loss.tumour_pos_weight", "must be >= 0")
        _check(self.focal_gamma >= 0, "loss.focal_gamma", "must be >= 0")
        _check(0 <= self.tversky_alpha <= 1, "loss.tversky_alpha", "must be in [0, 1]")
        _check(0 <= self.tversky_beta <= 1, "loss.tversky_beta", "must be in [0, 1]")


@dataclass(frozen=True)
class StageConfig:
    """One training stage.

    Attributes:
        name: Stage name (``seg_warmup``, ``cls_head``, ``joint``, ``surv_head``, ...).
        tasks: Tasks whose losses are optimised in this stage.
        freeze: Model parts frozen in this stage.
        lr: Learning rate of the unfrozen non-encoder parts.
        lr_encoder: Learning rate of the encoder (``None`` = ``lr``).
        batch_size: Slices per batch.
        max_steps: Optimisation steps (the stopping rule; reproducible).
        eval_every: Steps between validations.
        patience: Validations without improvement before early stopping (0 = off).
        grad_clip: Max gradient norm (0 = off).
        weight_decay: AdamW weight decay.
        warmup_steps: Linear LR warm-up steps before cosine decay.
        metric: Validation metric that selects the best checkpoint (``auto`` = from tasks).
        cohort_refit: Refit the survival head on the whole training cohort from cached
            patient embeddings (full-batch Cox) instead of mini-batches; needs a frozen encoder.
    """

    name: str
    tasks: tuple[str, ...]
    freeze: tuple[str, ...] = ()
    lr: float = 1e-3
    lr_encoder: float | None = None
    batch_size: int = 8
    max_steps: int = 100
    eval_every: int = 50
    patience: int = 0
    grad_clip: float = 1.0
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    metric: str = "auto"
    cohort_refit: bool = False

    def validate(self, key: str) -> None:
        _check(bool(self.name), f"{key}.name", "must not be empty")
        _check(len(self.tasks) >= 1, f"{key}.tasks", "must name at least one task")
        for t in self.tasks:
            _check(t in TASKS, f"{key}.tasks", f"unknown task {t!r}; expected one of {TASKS}")
        for p in self.freeze:
            _check(p in PARTS, f"{key}.freeze", f"unknown part {p!r}; expected one of {PARTS}")
        _check(self.lr > 0, f"{key}.lr", "must be > 0")
        _check(self.lr_encoder is None or self.lr_encoder > 0, f"{key}.lr_encoder", "must be > 0")
        _check(self.batch_size >= 1, f"{key}.batch_size", "must be >= 1")
        _check(self.max_steps >= 1, f"{key}.max_steps", "must be >= 1")
        _check(self.eval_every >= 1, f"{key}.eval_every", "must be >= 1")
        _check(self.patience >= 0, f"{key}.patience", "must be >= 0")
        _check(self.grad_clip >= 0, f"{key}.grad_clip", "must be >= 0")
        _check(self.weight_decay >= 0, f"{key}.weight_decay", "must be >= 0")
        _check(self.warmup_steps >= 0, f"{key}.warmup_steps", "must be >= 0")
        if self.cohort_refit:
            _check(
                tuple(self.tasks) == ("survival",), f"{key}.cohort_refit", "needs tasks: [survival]"
            )
            _check("encoder" in self.freeze, f"{key}.cohort_refit", "needs the encoder frozen")
        metrics = ("auto", "dice", "roc_auc", "type_accuracy", "c_index", "loss")
        _check(
            self.metric in metrics,
            f"{key}.metric",
            f"{self.metric!r} is not one of {list(metrics)}",
        )


@dataclass(frozen=True)
class CalibrationConfig:
    """Post-training calibration on the validation split.

    Attributes:
        temperature: Fit a temperature for the ``tumour`` logit by minimising NLL.
        threshold: ``youden`` or ``sensitivity`` (reach ``target_sensitivity``).
        target_sensitivity: Sensitivity the threshold must reach when ``threshold`` is ``sensitivity``.
        gate_threshold: Tumour probability under which no mask is returned.
        tau_quantile: Survival horizon ``tau`` as this quantile of training follow-up times.
        ece_bins: Equal-width bins of the expected calibration error.
    """

    temperature: bool = True
    threshold: Literal["youden", "sensitivity"] = "youden"
    target_sensitivity: float = 0.9
    gate_threshold: float = 0.3
    tau_quantile: float = 0.8
    ece_bins: int = 10

    def validate(self) -> None:
        _check(
            0 < self.target_sensitivity <= 1, "calibration.target_sensitivity", "must be in (0, 1]"
        )
        _check(0 <= self.gate_threshold <= 1, "calibration.gate_threshold", "must be in [0, 1]")
        _check(0 < self.tau_quantile <= 1, "calibration.tau_quantile", "must be in (0, 1]")
        _check(self.ece_bins >= 2, "calibration.ece_bins", "must be >= 2")


@dataclass(frozen=True)
class RuntimeConfig:
    """Execution settings.

    Attributes:
        seed: Seed of every random generator.
        threads: Torch intra-op threads (0 = library default).
        precision: ``fp32``, ``bf16`` (autocast) or ``auto`` (bf16 when the CPU supports it).
        channels_last: Use channels-last memory format.
        num_workers: Processes that preprocess volumes while the cache is built (> 1 = a pool).
        deterministic: Use deterministic algorithms (exact resume).
        checkpoint_every: Steps between resumable progress checkpoints.
    """

    seed: int = 0
    threads: int = 0
    precision: Precision = "fp32"
    channels_last: bool = False
    num_workers: int = 0
    deterministic: bool = True
    checkpoint_every: int = 50

    def validate(self) -> None:
        _check(self.seed >= 0, "runtime.seed", "must be >= 0")
        _check(self.checkpoint_every >= 1, "runtime.checkpoint_every", "must be >= 1")
        _check(self.threads >= 0, "runtime.threads", "must be >= 0")
        _check(self.num_workers >= 0, "runtime.num_workers", "must be >= 0")


@dataclass(frozen=True)
class Config:
    """A whole experiment."""

    profile: Profile = "brain-mri"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    stages: tuple[StageConfig, ...] = ()
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def validate(self) -> None:
        self.data.validate()
        self.model.validate()
        self.loss.validate()
        self.calibration.validate()
        self.runtime.validate()
        _check(
            self.model.in_channels == len(self.data.channels),
            "model.in_channels",
            f"{self.model.in_channels} does not match len(data.channels) = {len(self.data.channels)}",
        )
        names = [s.name for s in self.stages]
        _check(len(names) == len(set(names)), "stages", f"stage names must be unique, got {names}")
        for i, s in enumerate(self.stages):
            s.validate(f"stages[{i}]")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested mapping (tuples as lists), suitable for YAML/JSON."""
        return _to_plain(dataclasses.asdict(self))


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_plain(v) for v in obj]
    return obj
