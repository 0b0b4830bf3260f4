"""Per-stage set-up: which parts train, optimiser groups, LR schedule, selection metric."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch

from tumorscope.config import PARTS, StageConfig

if TYPE_CHECKING:
    from tumorscope.models.multitask import MultiTaskNet

# Which model part serves which task; a stage trains only the parts its tasks need.
TASK_PARTS: dict[str, tuple[str, ...]] = {
    "segmentation": ("encoder", "decoder", "segmentation_head"),
    "tumour": ("encoder", "tumour_head"),
    "tumour_type": ("encoder", "tumour_type_head"),
    "survival": ("encoder", "survival_head"),
}

# nnU-Net's poly learning-rate exponent.
POLY_EXPONENT = 0.9

# Validation metric selecting the best checkpoint, per task (higher is better).
TASK_METRIC: dict[str, str] = {
    "segmentation": "dice",
    "tumour": "roc_auc",
    "tumour_type": "type_accuracy",
    "survival": "c_index",
}


def trained_parts(stage: StageConfig, available: Iterable[str]) -> list[str]:
    """Parts that receive gradients: those the stage's tasks use, minus frozen ones."""
    have = set(available)
    parts = {p for t in stage.tasks for p in TASK_PARTS[t] if p in have}
    return [p for p in PARTS if p in parts and p not in stage.freeze]


def apply_freeze(model: MultiTaskNet, stage: StageConfig) -> list[str]:
    """Freeze every part the stage does not train; return the trained parts."""
    available = list(model.parts)
    train = trained_parts(stage, available)
    for part in available:
        if part in train:
            model.unfreeze(part)
        else:
            model.freeze(part)
    return train


def param_groups(
    model: MultiTaskNet, stage: StageConfig, train: list[str]
) -> list[dict[str, object]]:
    """Optimiser groups: the encoder at ``lr_encoder`` (when set), everything else at ``lr``."""
    groups: list[dict[str, object]] = []
    parts = model.parts
    enc_lr = stage.lr_encoder if stage.lr_encoder is not None else stage.lr
    if "encoder" in train:
        groups.append(
            {"params": list(parts["encoder"].parameters()), "lr": enc_lr, "name": "encoder"}
        )
    rest = [p for name in train if name != "encoder" for p in parts[name].parameters()]
    if rest:
        groups.append({"params": rest, "lr": stage.lr, "name": "heads"})
    return groups


def make_scheduler(
    optimizer: torch.optim.Optimizer, stage: StageConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up for ``stage.warmup`` steps, then ``cosine`` decay to 5 % of the LR at
    ``max_steps`` or nnU-Net's ``poly`` decay ``(1 - t)^0.9``."""
    warm, total, poly = stage.warmup, stage.max_steps, stage.decay == "poly"

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        if poly:
            return float((1.0 - progress) ** POLY_EXPONENT)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def selection_metric(stage: StageConfig) -> list[str]:
    """Validation metrics whose mean selects the stage's best checkpoint."""
    if stage.metric != "auto":
        return [stage.metric]
    return [TASK_METRIC[t] for t in stage.tasks]
