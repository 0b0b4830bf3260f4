"""Experiment configuration: frozen dataclasses loaded from YAML and validated once.

Every section of a config file maps onto one dataclass of :mod:`~tumorscope.config.schema`.
:mod:`~tumorscope.config.loading` reads YAML, applies ``--set section.key=value``
overrides to the raw mapping and checks unknown keys, types and ranges, raising
:class:`ConfigError` naming the key and the file.
"""

from __future__ import annotations

from tumorscope.config.checks import ConfigError
from tumorscope.config.loading import config_from_dict, load_config, parse_override, save_config
from tumorscope.config.schema import (
    PARTS,
    TASKS,
    CalibrationConfig,
    Config,
    DataConfig,
    ExportConfig,
    LossConfig,
    ModelConfig,
    Part,
    Precision,
    Profile,
    RuntimeConfig,
    SegLoss,
    StageConfig,
    SurvivalConfig,
    Task,
)

__all__ = [
    "PARTS",
    "TASKS",
    "CalibrationConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "ExportConfig",
    "LossConfig",
    "ModelConfig",
    "Part",
    "Precision",
    "Profile",
    "RuntimeConfig",
    "SegLoss",
    "StageConfig",
    "SurvivalConfig",
    "Task",
    "config_from_dict",
    "load_config",
    "parse_override",
    "save_config",
]
