"""The manifest training writes with every checkpoint, built in one place."""

from __future__ import annotations

from typing import Any

from tumorscope.config import Config
from tumorscope.runs.manifest import RunManifest
from tumorscope.training.data import StageData


def run_manifest(cfg: Config, stage_data: StageData, world_size: int, **fields: Any) -> RunManifest:
    """The :class:`RunManifest` of a stage checkpoint or the final model.

    Args:
        cfg: The experiment config.
        stage_data: The prepared data (preprocessing spec, clinical columns).
        world_size: Training processes.
        fields: Further manifest fields (``stage``, ``step``, ``metrics``, ``calibration``, ...).
    """
    return RunManifest(
        config=cfg.to_dict(),
        preprocessing=stage_data.spec_dict(),
        heads=tuple(cfg.model.heads),
        regions=tuple(cfg.model.regions),
        channels=tuple(cfg.data.channels),
        clinical_columns=tuple(stage_data.clinical_columns()),
        world_size=world_size,
        data=stage_data.roots,
        **fields,
    )
