"""A stage's training log: one CSV row per value and TensorBoard scalars."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


def tensorboard(stage_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter  # deferred: slow to import
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        return None
    return SummaryWriter(log_dir=str(stage_dir / "tb"))


def log_row(writer: Any, csv_path: Path, stage: str, step: int, row: dict[str, float]) -> None:
    if writer is not None:
        for k, v in row.items():
            writer.add_scalar(f"{stage}/{k}", v, step)
    new = not csv_path.exists()
    with csv_path.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["step", "key", "value"])
        for k, v in row.items():
            w.writerow([step, k, f"{v:.6g}"])
