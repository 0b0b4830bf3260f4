"""The typed manifest of a run folder: what a checkpoint is, how it was made and calibrated.

``RunManifest`` and ``Calibration`` are frozen dataclasses read and written only here.
Code asks their attributes; the JSON form (``to_dict()``) is also offered as a read-only
mapping (``manifest["calibration"]["temperature"]``) so stored files and the objects read
alike.

Schema policy: ``schema_version`` is bumped whenever a field is added or changes meaning.
A manifest of an older schema loads with the stated defaults of the fields it lacks
(the field defaults below); one of a newer schema fails, naming the run and what to do.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tumorscope import DISCLAIMER, __version__
from tumorscope.data.types import DataError

log = logging.getLogger(__name__)

RUN_FORMAT = "tumorscope-run"
# 1: the first runs (``format_version`` 1, no ``schema_version`` key).
# 2: ``schema_version`` stored; calibration typed with every key present.
# 3: calibration gains ``slice_gate`` and ``min_component_ml`` (volume post-processing).
# 4: calibration gains ``review_confidence`` and ``review_target_error`` (the review flag).
# 5: calibration gains ``survival_model`` (features + clinical covariates in a penalised Cox).
SCHEMA_VERSION = 5
# A manifest without ``schema_version`` was written with schema 1.
LEGACY_SCHEMA = 1
# Calibration keys that are also settings of the config's ``calibration`` section.
CONFIG_KEYS = ("gate_threshold", "slice_gate", "min_component_ml")


class ManifestError(DataError):
    """A manifest that cannot be read as this version's ``RunManifest``."""


class _JsonView(Mapping[str, Any]):
    """Read-only mapping over ``to_dict()``, so a typed manifest reads like its JSON file."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


@dataclass(frozen=True, eq=False)
class Calibration(_JsonView):
    """What the end-of-training calibration stored; prediction needs nothing else.

    Attributes:
        temperature: Tumour-logit temperature ``T`` (probability ``σ(z / T)``).
        threshold: Decision threshold on the calibrated probability.
        gate_threshold: Probability under which no mask is returned.
        slice_gate: Zero a volume's mask on the axial slices whose calibrated tumour
            probability is under ``gate_threshold``.
        min_component_ml: 3D mask components smaller than this (mL) are removed (0: none).
        baseline_hazard: Breslow baseline ``{"times": [...], "cumulative": [...]}`` or None.
        risk_quantiles: Training-cohort log-hazard quantiles ``{"q": [...], "value": [...]}``.
        tau: Survival horizon (days) inside the training follow-up, or None.
        train_survival: Training outcomes ``{"time": [...], "event": [...]}`` (IPCW), or None.
        imputation: Clinical imputation values fitted on the training split, or None.
        review_confidence: Confidence cut-off ``κ``: a decision whose confidence
            ``|p − threshold|`` is under it needs review; chosen on the validation split
            for ``review_target_error`` (:func:`tumorscope.metrics.selective.review_cutoff`).
            None = no confidence-based review (runs of schema < 4, or none configured).
        review_target_error: The largest error rate allowed among the validation
            decisions not sent for review, for which ``review_confidence`` was chosen.
        survival_model: The patient-level survival model
            (:meth:`tumorscope.survival.model.SurvivalModel.to_dict`): tumour features of
            the predicted masks and clinical covariates in a penalised Cox; None = the
            survival head's risk (``baseline_hazard``/``risk_quantiles``) is the risk.
        reasons: Key → why it holds its default.
    """

    temperature: float = 1.0
    threshold: float = 0.5
    gate_threshold: float = 0.3
    slice_gate: bool = True
    min_component_ml: float = 0.1
    baseline_hazard: dict[str, list[float]] | None = None
    risk_quantiles: dict[str, list[float]] | None = None
    tau: float | None = None
    train_survival: dict[str, list[Any]] | None = None
    imputation: dict[str, Any] | None = None
    review_confidence: float | None = None
    review_target_error: float | None = None
    survival_model: dict[str, Any] | None = None
    reasons: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"calibration: temperature {self.temperature} is not positive")
        for name in ("threshold", "gate_threshold", "review_confidence", "review_target_error"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"calibration: {name} {value} is not a probability in [0, 1]")
        if not isinstance(self.slice_gate, bool):
            raise ValueError(f"calibration: slice_gate {self.slice_gate!r} is not true or false")
        if not (math.isfinite(self.min_component_ml) and self.min_component_ml >= 0):
            raise ValueError(
                f"calibration: min_component_ml {self.min_component_ml} is not a volume >= 0 mL"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Calibration:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def coerce(cls, value: Calibration | Mapping[str, Any]) -> Calibration:
        """``value`` itself, or a :class:`Calibration` read from its JSON form."""
        return value if isinstance(value, Calibration) else cls.from_dict(value)

    @classmethod
    def from_dict(
        cls, raw: Mapping[str, Any], *, config: Mapping[str, Any] | None = None
    ) -> Calibration:
        """Build from the stored mapping; ``None`` or absent keys take their defaults.

        Args:
            raw: The stored calibration.
            config: The run config's ``calibration`` section: its values of
                :data:`CONFIG_KEYS` fill keys ``raw`` lacks (a manifest of an older schema)
                before the field defaults do.

        Raises:
            ValueError: a key this version does not know, or a value out of range.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"calibration: unknown key(s) {unknown}")
        values = {k: v for k, v in raw.items() if v is not None}
        for key in CONFIG_KEYS:
            if config is not None and config.get(key) is not None:
                values.setdefault(key, config[key])
        floats = (
            "temperature", "threshold", "gate_threshold", "min_component_ml", "tau",
            "review_confidence", "review_target_error",
        )  # fmt: skip
        for key in floats:
            if key in values:
                values[key] = float(values[key])
        values["reasons"] = dict(values.get("reasons") or {})
        return cls(**values)


@dataclass(frozen=True, eq=False)
class RunManifest(_JsonView):
    """A run folder's (or stage checkpoint's) ``manifest.json``.

    Attributes:
        config: The resolved experiment config (``Config.to_dict()``).
        preprocessing: The preprocessing spec (``PreprocessSpec.to_dict()``).
        heads: Model heads.
        regions: Segmentation regions, in output order.
        channels: Input channels, in model order.
        clinical_columns: Clinical covariates the survival head takes, in order.
        world_size: Training processes.
        data: The data folders training read, absolute (the default data of ``export``).
        calibration: Present on a finished run; None on a stage checkpoint.
        splits: Split name → patient ids (finished runs).
        stage: Stage name of a stage checkpoint.
        step: Optimisation step of a stage checkpoint.
        metrics: Validation metrics.
        stages: Per-stage training summary (finished runs).
        files: File name → sha256 of every other file in the folder.
        export: What ``tumorscope export`` made of the run (format, graphs, dropout masks,
            parity and accuracy figures, the source run); None for a PyTorch run.
        extra: Keys this version does not interpret, kept as they were.
    """

    config: dict[str, Any]
    preprocessing: dict[str, Any]
    heads: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    clinical_columns: tuple[str, ...] = ()
    world_size: int = 1
    data: tuple[str, ...] = ()
    calibration: Calibration | None = None
    splits: dict[str, list[str]] | None = None
    stage: str | None = None
    step: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    export: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION
    code_version: str = __version__
    disclaimer: str = DISCLAIMER
    format: str = RUN_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_stage(self) -> bool:
        """A stage checkpoint (it names its stage and has no calibration of its own)."""
        return self.stage is not None

    def replace(self, **changes: Any) -> RunManifest:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": self.format,
            "schema_version": self.schema_version,
            "code_version": self.code_version,
            "disclaimer": self.disclaimer,
            "config": self.config,
            "preprocessing": self.preprocessing,
            "heads": list(self.heads),
            "regions": list(self.regions),
            "channels": list(self.channels),
            "clinical_columns": list(self.clinical_columns),
            "world_size": self.world_size,
        }
        if self.data:
            out["data"] = list(self.data)
        optional = {
            "stage": self.stage,
            "step": self.step,
            "stages": self.stages or None,
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "splits": self.splits,
            "export": self.export,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        out["metrics"] = self.metrics
        out.update(self.extra)
        if self.files:
            out["files"] = dict(self.files)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], path: str | Path = "<manifest>") -> RunManifest:
        """Read a stored manifest, applying the schema policy (see the module docstring).

        Raises:
            ManifestError: not a run manifest, a newer schema, or a malformed field.
        """
        if raw.get("format", RUN_FORMAT) != RUN_FORMAT:
            raise ManifestError(path, f"format {raw.get('format')!r} is not a tumorscope run")
        data = dict(raw)
        version = data.pop("schema_version", None)
        data.pop("format_version", None)  # schema 1 called it so
        if version is None:
            version = LEGACY_SCHEMA
        if not isinstance(version, int) or version < 1:
            raise ManifestError(path, f"schema_version {version!r} is not a positive integer")
        if version > SCHEMA_VERSION:
            raise ManifestError(
                path,
                f"written with manifest schema {version}, this tumorscope reads up to "
                f"{SCHEMA_VERSION}: upgrade tumorscope to load this run",
            )
        for key in ("config", "preprocessing"):
            if not isinstance(data.get(key), Mapping):
                raise ManifestError(path, f"manifest has no {key!r} mapping")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "schema_version"}
        values = {k: data.pop(k) for k in list(data) if k in known}
        cfg_cal = values["config"].get("calibration") or {}
        try:
            if values.get("calibration") is not None:
                values["calibration"] = Calibration.from_dict(values["calibration"], config=cfg_cal)
            for key in ("heads", "regions", "channels", "clinical_columns", "data"):
                if key in values:
                    values[key] = tuple(str(v) for v in values[key] or ())
            values["world_size"] = int(values.get("world_size", 1))
        except (TypeError, ValueError) as e:
            raise ManifestError(path, str(e)) from None
        if version < SCHEMA_VERSION:
            log.info(
                "%s: manifest schema %d read with the defaults of schema %d",
                path,
                version,
                SCHEMA_VERSION,
            )
        return cls(**values, extra=data)
