"""The config schema: one frozen dataclass per section of a config file.

Each section checks its own ranges in ``validate``; :class:`Config.validate` adds the
checks that span sections and that every number is finite. Every numeric value has a fixed
upper bound, the same on every machine (README, "Limits"), so that a config that validates
cannot ask for a 10 TB array or a seed numpy refuses. Reading YAML into these classes lives
in :mod:`tumorscope.config.loading`.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from tumorscope.config.checks import (
    MAX_NAMES,
    MAX_SNAPSHOTS,
    SEED_MAX,
    _check,
    _check_finite,
    _names,
    _range,
    _to_plain,
    key_name,
    short,
)
from tumorscope.config.data import DataConfig

Profile = Literal["brain-mri", "petct"]
Task = Literal["segmentation", "tumour", "tumour_type", "survival"]
Part = Literal[
    "encoder", "decoder", "segmentation_head", "tumour_head", "tumour_type_head", "survival_head"
]
SegLoss = Literal["dice_bce", "focal", "tversky", "focal_tversky"]
Precision = Literal["fp32", "bf16", "auto"]

TASKS: tuple[str, ...] = ("segmentation", "tumour", "tumour_type", "survival")
PARTS: tuple[str, ...] = typing.get_args(Part)


@dataclass(frozen=True)
class ModelConfig:
    """Network size and heads.

    Attributes:
        in_channels: Input channels; must equal ``len(data.channels)``.
        base_channels: Channels of the first encoder stage; doubled per level.
        depth: Number of down-sampling steps (feature maps = depth + 1).
        norm: ``instance`` or ``group`` normalisation (never batch norm).
        dropout: Probability of the MC-dropout layers: channel dropout inside the last
            decoder stage (between its two convolutions) and dropout before each head's
            linear layer; never on the segmentation head's input.
        regions: Segmentation regions, one sigmoid output each.
        heads: Heads to build besides segmentation.
        survival_dim: Size of the per-slice survival embedding.
        clinical_features: Number of clinical covariates joined in the survival head.
        deep_supervision: Coarser decoder scales (1/2, 1/4, ...) given their own 1×1
            segmentation head and loss during training (nnU-Net style; 0 = off; at most
            ``depth - 1`` exist).
        readout: Features of the slice heads: ``multiscale`` pools the last two encoder
            stages before their last normalisation (average and max); ``bottleneck`` is
            the average of the normalised bottleneck alone.
        seg_evidence: Add the segmentation logits' evidence (top-k mean and log-mean-exp
            of each region's map) to the tumour and tumour-type decisions.
        evidence_grad: Let the slice losses reach the segmentation logits through the
            evidence (False: the evidence is read with a stop-gradient, so only the
            segmentation loss shapes the segmentation map).
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
    deep_supervision: int = 2
    readout: Literal["multiscale", "bottleneck"] = "multiscale"
    seg_evidence: bool = True
    evidence_grad: bool = True

    def validate(self) -> None:
        _range("model.in_channels", self.in_channels, 1, 16)
        _range("model.base_channels", self.base_channels, 1, 128)
        _range("model.depth", self.depth, 1, 6)
        widest = self.base_channels * 2**self.depth
        _check(
            widest <= 2048,
            "model.base_channels",
            f"base_channels x 2**depth = {widest} channels at the deepest stage; at most 2048",
        )
        _range("model.dropout", self.dropout, 0, 1, open_hi=True)
        _names("model.regions", self.regions, least=1)
        for h in self.heads:
            _check(
                h in ("tumour", "tumour_type", "survival"),
                "model.heads",
                f"unknown head {short(h)}",
            )
        _check(len(set(self.heads)) == len(self.heads), "model.heads", "a head is named twice")
        _range("model.survival_dim", self.survival_dim, 1, 1024)
        _range("model.clinical_features", self.clinical_features, 0, 1024)
        _range("model.deep_supervision", self.deep_supervision, 0, 6)
        _check(
            self.readout in ("multiscale", "bottleneck"),
            "model.readout",
            f"{short(self.readout)} is not one of ['multiscale', 'bottleneck']",
        )


@dataclass(frozen=True)
class LossConfig:
    """Loss functions and how tasks are weighted.

    Attributes:
        segmentation: Segmentation loss.
        dice_batch: Dice/Tversky over the whole batch (one ratio) instead of per sample
            (the mean of each slice's ratio; MONAI ``DiceCELoss``'s default).
        task_weights: Fixed weight per task (used when ``weighting`` is ``fixed``).
        weighting: ``fixed`` or ``uncertainty`` (Kendall et al. 2018, learned).
        tumour_pos_weight: BCE positive-class weight for the ``tumour`` head; 0 = from data.
        focal_gamma: Focal-loss exponent.
        tversky_alpha: Tversky false-positive weight.
        tversky_beta: Tversky false-negative weight.
        cox_ties: Tie handling of the Cox partial likelihood.
    """

    segmentation: SegLoss = "dice_bce"
    dice_batch: bool = False
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
            key = f"loss.task_weights.{key_name(k)}"
            _check(k in TASKS, key, f"unknown task; expected one of {TASKS}")
            _range(key, v, 0, 1000)
        _range("loss.tumour_pos_weight", self.tumour_pos_weight, 0, 1000)
        _range("loss.focal_gamma", self.focal_gamma, 0, 10)
        _range("loss.tversky_alpha", self.tversky_alpha, 0, 1)
        _range("loss.tversky_beta", self.tversky_beta, 0, 1)


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
        warmup_steps: Linear LR warm-up steps before the decay.
        warmup_fraction: Warm-up as a fraction of ``max_steps`` (overrides ``warmup_steps``).
        decay: LR decay after warm-up: ``cosine`` (to 5 % of the LR) or ``poly``
            (nnU-Net's ``(1 - t)^0.9``).
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
    warmup_fraction: float | None = None
    decay: Literal["cosine", "poly"] = "cosine"
    metric: str = "auto"
    cohort_refit: bool = False

    @property
    def warmup(self) -> int:
        """Warm-up steps: ``warmup_fraction`` of ``max_steps`` when set, else ``warmup_steps``."""
        if self.warmup_fraction is not None:
            return round(self.warmup_fraction * self.max_steps)
        return self.warmup_steps

    def validate(self, key: str) -> None:
        _check(bool(self.name), f"{key}.name", "must not be empty")
        _names(f"{key}.name", (self.name,))  # a folder name: RUN/stages/<name>
        _check(len(self.tasks) >= 1, f"{key}.tasks", "must name at least one task")
        for t in self.tasks:
            _check(t in TASKS, f"{key}.tasks", f"unknown task {short(t)}; expected one of {TASKS}")
        for p in self.freeze:
            _check(p in PARTS, f"{key}.freeze", f"unknown part {short(p)}; expected one of {PARTS}")
        _range(f"{key}.lr", self.lr, 0, 10, open_lo=True)
        if self.lr_encoder is not None:
            _range(f"{key}.lr_encoder", self.lr_encoder, 0, 10, open_lo=True)
        _range(f"{key}.batch_size", self.batch_size, 1, 1024)
        _range(f"{key}.max_steps", self.max_steps, 1, 10**7)
        _range(f"{key}.eval_every", self.eval_every, 1, 10**7)
        _range(f"{key}.patience", self.patience, 0, 10**4)
        _range(f"{key}.grad_clip", self.grad_clip, 0, 1e6)
        _range(f"{key}.weight_decay", self.weight_decay, 0, 10)
        _range(f"{key}.warmup_steps", self.warmup_steps, 0, 10**7)
        if self.warmup_fraction is not None:
            _range(f"{key}.warmup_fraction", self.warmup_fraction, 0, 1, open_hi=True)
        _check(
            self.decay in ("cosine", "poly"),
            f"{key}.decay",
            f"{short(self.decay)} is not one of ['cosine', 'poly']",
        )
        if self.cohort_refit:
            _check(
                tuple(self.tasks) == ("survival",), f"{key}.cohort_refit", "needs tasks: [survival]"
            )
            _check("encoder" in self.freeze, f"{key}.cohort_refit", "needs the encoder frozen")
        metrics = ("auto", "dice", "roc_auc", "type_accuracy", "c_index", "loss")
        _check(
            self.metric in metrics,
            f"{key}.metric",
            f"{short(self.metric)} is not one of {list(metrics)}",
        )


@dataclass(frozen=True)
class CalibrationConfig:
    """Post-training calibration on the validation split.

    Attributes:
        temperature: Fit a temperature for the ``tumour`` logit by minimising NLL.
        threshold: ``youden`` or ``sensitivity`` (reach ``target_sensitivity``).
        target_sensitivity: Sensitivity the threshold must reach when ``threshold`` is ``sensitivity``.
        gate_threshold: Tumour probability under which no mask is returned.
        slice_gate: Zero a volume's mask on the slices whose tumour probability is under
            ``gate_threshold`` (post-processing only a model with a tumour head can do).
        min_component_ml: 3D mask components smaller than this (mL) are removed (0 = keep all).
        tau_quantile: Survival horizon ``tau`` as this quantile of training follow-up times.
        ece_bins: Equal-width bins of the expected calibration error.
        review_target_error: The operating point of the review flag: the largest error
            rate allowed among the validation slice/image decisions that are *not* sent for
            review. The cut-off ``review_confidence`` stored in the manifest is the smallest
            confidence ``|p − threshold|`` whose accepted validation decisions reach it
            (:func:`tumorscope.metrics.selective.review_cutoff`); None = no confidence-based
            review.
        domain_quantile: Share of in-domain validation inputs of each kind (2D images,
            volume slices) the out-of-domain thresholds keep: the level of their quantile
            and log-normal prediction bound (:mod:`tumorscope.training.ood`), so that about
            ``1 − domain_quantile`` of in-domain inputs are flagged.
    """

    temperature: bool = True
    threshold: Literal["youden", "sensitivity"] = "youden"
    target_sensitivity: float = 0.9
    gate_threshold: float = 0.3
    slice_gate: bool = True
    min_component_ml: float = 0.1
    tau_quantile: float = 0.8
    ece_bins: int = 10
    review_target_error: float | None = 0.02
    domain_quantile: float = 0.98

    def validate(self) -> None:
        _range("calibration.target_sensitivity", self.target_sensitivity, 0, 1, open_lo=True)
        _range("calibration.gate_threshold", self.gate_threshold, 0, 1)
        _range("calibration.min_component_ml", self.min_component_ml, 0, 10**6)
        _range("calibration.tau_quantile", self.tau_quantile, 0, 1, open_lo=True)
        _range("calibration.ece_bins", self.ece_bins, 2, 1000)
        if self.review_target_error is not None:
            _range("calibration.review_target_error", self.review_target_error, 0, 1, open_hi=True)
        q = self.domain_quantile
        _range("calibration.domain_quantile", q, 0.5, 1, open_lo=True, open_hi=True)


@dataclass(frozen=True)
class SurvivalConfig:
    """The patient-level survival model fitted at the end of training.

    Attributes:
        model: ``cox``: tumour features measured on the predicted 3D masks plus clinical
            covariates in a penalised Cox (:mod:`tumorscope.survival`), fitted on the
            training patients' ground-truth masks; ``deep``: the survival head's risk alone.
        clinical: Use the outcome tables' clinical covariates (e.g. ``Age``,
            ``Extent_of_Resection``) in the Cox model.
        deep_risk: Add the survival head's risk as a covariate: ``never`` (default), ``auto``
            where inner cross-validation raises Harrell's C by more than ``min_gain``, or
            ``always``. The head's risks of the training patients are in-sample (its refit
            saw their outcomes), so ``auto`` overrates them: a demo run chose the deep risk
            at inner C 1.0 and zeroed every measured feature. ``never`` until those risks
            come out of fold.
        min_gain: Inner-CV C-index gain the deep risk must bring under ``auto``.
        l1_ratio: Elastic-net mixing of the Cox penalty (1 = lasso, towards 0 = ridge).
        inner_folds: Folds of the inner cross-validation that chooses the penalty.
        bootstrap: Resamples for the coefficients' 95 % confidence intervals.
    """

    model: Literal["cox", "deep"] = "cox"
    clinical: bool = True
    deep_risk: Literal["auto", "never", "always"] = "never"
    min_gain: float = 0.005
    l1_ratio: float = 0.5
    inner_folds: int = 5
    bootstrap: int = 200

    def validate(self) -> None:
        _range("survival.min_gain", self.min_gain, 0, 1)
        _range("survival.l1_ratio", self.l1_ratio, 0, 1, open_lo=True)
        _range("survival.inner_folds", self.inner_folds, 2, 20)
        _range("survival.bootstrap", self.bootstrap, 0, 10000)


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
        snapshot_steps: Run-wide step counts (stages in order, each stage counting its
            configured ``max_steps``) after which the weights are also saved to
            ``RUN/snapshots/step-<N>/`` as a loadable checkpoint (learning curves).
    """

    seed: int = 0
    threads: int = 0
    precision: Precision = "fp32"
    channels_last: bool = False
    num_workers: int = 0
    deterministic: bool = True
    checkpoint_every: int = 50
    snapshot_steps: tuple[int, ...] = ()

    def validate(self) -> None:
        _range("runtime.seed", self.seed, 0, SEED_MAX)
        _range("runtime.checkpoint_every", self.checkpoint_every, 1, 10**7)
        steps = self.snapshot_steps
        _check(
            len(steps) <= MAX_SNAPSHOTS,
            "runtime.snapshot_steps",
            f"{len(steps)} steps; at most {MAX_SNAPSHOTS}",
        )
        for i, n in enumerate(steps):
            _range(f"runtime.snapshot_steps[{i}]", n, 1, MAX_NAMES * 10**7)  # 16 stages' steps
        _check(
            all(a < b for a, b in itertools.pairwise(steps)),
            "runtime.snapshot_steps",
            f"must be strictly increasing, got {short(list(steps))}",
        )
        _range("runtime.threads", self.threads, 0, 1024)
        _range("runtime.num_workers", self.num_workers, 0, 256)


@dataclass(frozen=True)
class ExportConfig:
    """``tumorscope export``: what an exported model must keep.

    Attributes:
        max_accuracy_change: Largest change against the PyTorch run, on the validation
            split, of Dice, slice AUC and 2D-image AUC an export may have (absolute); an
            INT8 export over it is refused.
        calibration_slices: Training slices the INT8 ranges are calibrated on.
        parity_probability: Largest tumour-probability difference an FP32 export may
            have against PyTorch on real slices.
        parity_mask_agreement: Smallest share of mask pixels an FP32 export must agree
            on with PyTorch.
    """

    max_accuracy_change: float = 0.005
    calibration_slices: int = 256
    parity_probability: float = 1e-4
    parity_mask_agreement: float = 0.999

    def validate(self) -> None:
        _range("export.max_accuracy_change", self.max_accuracy_change, 0, 1)
        _range("export.calibration_slices", self.calibration_slices, 1, 100_000)
        _range("export.parity_probability", self.parity_probability, 0, 1)
        _range("export.parity_mask_agreement", self.parity_mask_agreement, 0, 1)


@dataclass(frozen=True)
class Config:
    """A whole experiment."""

    profile: Profile = "brain-mri"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    stages: tuple[StageConfig, ...] = ()
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    survival: SurvivalConfig = field(default_factory=SurvivalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def validate(self) -> None:
        _check_finite(self, "")
        self.data.validate()
        self.model.validate()
        self.loss.validate()
        self.calibration.validate()
        self.survival.validate()
        self.runtime.validate()
        self.export.validate()
        _check(
            self.model.in_channels == len(self.data.channels),
            "model.in_channels",
            f"{self.model.in_channels} does not match len(data.channels) = {len(self.data.channels)}",
        )
        _check(
            len(self.stages) <= MAX_NAMES,
            "stages",
            f"{len(self.stages)} stages; at most {MAX_NAMES}",
        )
        names = [s.name for s in self.stages]
        _check(
            len(names) == len(set(names)),
            "stages",
            f"stage names must be unique, got {short(names)}",
        )
        for i, s in enumerate(self.stages):
            s.validate(f"stages[{i}]")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested mapping (tuples as lists), suitable for YAML/JSON."""
        return _to_plain(dataclasses.asdict(self))
