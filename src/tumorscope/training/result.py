"""What a finished training run reports (``RUN/train-result.json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainResult:
    """What a finished run reports."""

    run_dir: Path
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        rows: dict[str, Any] = {}
        for name, info in self.stages.items():
            if info.get("skipped"):
                rows[f"{name}"] = f"skipped: {info['skipped']}"
                continue
            for k, v in info.get("best_metrics", {}).items():
                rows[f"{name}.{k}"] = v
            rows[f"{name}.steps"] = info.get("steps")
        rows["seconds"] = round(self.seconds, 1)
        return rows


RESULT_FILE = "train-result.json"


def read_result(run_dir: Path) -> TrainResult:
    """The :class:`TrainResult` a finished run wrote (used after a distributed launch)."""
    saved = json.loads((run_dir / RESULT_FILE).read_text())
    return TrainResult(run_dir=run_dir, stages=saved["stages"], seconds=float(saved["seconds"]))
