"""A small explicit registry of model sizes and the model factory."""

from __future__ import annotations

import dataclasses
from typing import Any

from tumorscope.config import ConfigError, ModelConfig
from tumorscope.models.multitask import MultiTaskNet

# Size presets: keys are ``ModelConfig`` fields. ``tiny`` is for tests, ``demo`` for the
# synthetic one-channel demo on CPU, ``brain-mri`` for real BraTS-size training.
MODEL_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"base_channels": 8, "depth": 3, "survival_dim": 8},
    "demo": {"base_channels": 16, "depth": 4, "survival_dim": 32},
    "brain-mri": {"base_channels": 32, "depth": 5, "survival_dim": 64},
}


def size_config(size: str, **overrides: Any) -> ModelConfig:
    """The :class:`ModelConfig` of a registered size, with field overrides.

    Args:
        size: A key of :data:`MODEL_SIZES`.
        **overrides: ``ModelConfig`` fields (e.g. ``heads=("tumour",)``, ``in_channels=4``).

    Raises:
        ConfigError: for an unknown size or field, or an invalid value.
    """
    if size not in MODEL_SIZES:
        raise ConfigError(f"model size: {size!r} is not one of {sorted(MODEL_SIZES)}")
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"model.{unknown[0]}: unknown key; known keys: {sorted(known)}")
    cfg = ModelConfig(**{**MODEL_SIZES[size], **overrides})
    cfg.validate()
    return cfg


def create_model(cfg: ModelConfig) -> MultiTaskNet:
    """Build the network a :class:`ModelConfig` describes.

    Raises:
        ConfigError: for an invalid config.
    """
    return MultiTaskNet(cfg)
