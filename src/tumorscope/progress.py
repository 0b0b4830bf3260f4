"""Rich progress bars for long CLI work (library code reports through callbacks)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

StageProgress = Callable[[str, int, int, dict[str, float]], None]


@contextmanager
def training_progress() -> Iterator[StageProgress]:
    """A bar per training stage showing the step, the loss and validation metrics."""
    with Progress(
        TextColumn("{task.description:<11}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=Console(stderr=True),
    ) as progress:
        tasks: dict[str, Any] = {}
        shown: dict[str, str] = {}

        def update(stage: str, step: int, total: int, row: dict[str, float]) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total, info="")
            loss = f"loss={row['loss']:.3f}" if "loss" in row else ""
            val = " ".join(f"{k}={v:.3f}" for k, v in row.items() if k.startswith("val_"))
            if val:
                shown[stage] = val  # keep the last validation figures on screen
            progress.update(
                tasks[stage], completed=step, info=f"{loss} {shown.get(stage, '')}".strip()
            )

        yield update
