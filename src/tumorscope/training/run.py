"""``tumorscope train``: train every configured stage into a run folder, on 1 or N processes.

Run folder contract::

    RUN_DIR/config.yaml                       resolved config
    RUN_DIR/model.safetensors, manifest.json  the final, calibrated model
    RUN_DIR/stages/<name>/model.safetensors, manifest.json   best checkpoint of each stage
    RUN_DIR/stages/<name>/log.csv, tb/        CSV and TensorBoard logs
    RUN_DIR/progress/                         latest resumable state (optimizer, RNG, counters)

The folder's files and manifest belong to :mod:`tumorscope.runs`; one training process is
:func:`tumorscope.training.worker.train_in_process`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tumorscope.config import Config
from tumorscope.training.distributed import launch
from tumorscope.training.worker import ProgressFn, RunError, TrainResult, train_in_process

__all__ = ["ProgressFn", "RunError", "TrainResult", "train_run"]


def train_run(
    *,
    cfg: Config,
    data: Sequence[str | Path],
    out: str | Path,
    resume: bool = False,
    cache: str | Path | None = None,
    nproc: int = 1,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train every configured stage into ``out``.

    Args:
        cfg: Validated experiment config.
        data: Data folders (any layouts the readers recognise).
        out: Run folder.
        resume: Continue from ``out/progress`` after an interruption.
        cache: Preprocessing cache folder (default: ``<out>/cache``).
        nproc: Training processes (``torchrun`` is launched for > 1).
        progress: Called as ``progress(stage, step, max_steps, metrics)`` (one process only).

    Raises:
        RunError: ``out`` holds a run and ``resume`` is False, or nothing to resume.
    """
    if nproc > 1:
        return launch(cfg=cfg, data=data, out=out, resume=resume, cache=cache, nproc=nproc)
    return train_in_process(
        cfg=cfg, data=data, out=out, resume=resume, cache=cache, progress=progress
    )
