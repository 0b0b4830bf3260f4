"""One training process: run the configured stages, checkpoint, resume, calibrate.

:func:`tumorscope.training.run.train_run` calls :func:`train_in_process` directly, or
through the ``torchrun`` launcher (:mod:`tumorscope.training.distributed`) for N processes.

Run folder contract::

    RUN_DIR/config.yaml                       resolved config (in tumorscope-outputs.json)
    RUN_DIR/cache/                            preprocessing cache, unless one is named
    RUN_DIR/model.safetensors, manifest.json  the final, calibrated model
    RUN_DIR/stages/<name>/model.safetensors, manifest.json   best checkpoint of each stage
    RUN_DIR/stages/<name>/log.csv, tb/        CSV and TensorBoard logs
    RUN_DIR/snapshots/step-<N>/               weights after run-wide step N (a stage checkpoint;
                                              ``runtime.snapshot_steps``)
    RUN_DIR/progress/                         latest resumable state (optimizer, RNG, counters)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tumorscope.config import Config, StageConfig
from tumorscope.losses.multitask import MultiTaskLoss
from tumorscope.models.multitask import MultiTaskNet
from tumorscope.models.registry import create_model
from tumorscope.runs.load import SNAPSHOTS_DIR
from tumorscope.runtime import configure_threads, resolve_precision, seed_everything
from tumorscope.training import loop
from tumorscope.training.checkpoint import (
    CheckpointError,
    atomic_write_json,
    load_checkpoint,
    read_manifest,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from tumorscope.training.cohort import refit_survival_head
from tumorscope.training.collective import SINGLE, DistContext, barrier, broadcast_flag
from tumorscope.training.data import StageData
from tumorscope.training.finish import finish
from tumorscope.training.logs import log_row, tensorboard
from tumorscope.training.loop import ProgressFn
from tumorscope.training.manifest import run_manifest
from tumorscope.training.ood import save_with_domain
from tumorscope.training.preflight import check_step_memory
from tumorscope.training.result import RESULT_FILE, TrainResult
from tumorscope.training.runfolder import (
    RunError,
    default_cache,
    open_run_dir,
    write_run_config,
    write_seen,
)
from tumorscope.training.stages import apply_freeze, make_scheduler, param_groups, selection_metric

log = logging.getLogger(__name__)


@dataclass
class _Progress:
    stage_index: int = 0
    step: int = 0
    best_score: float = -math.inf
    best_step: int = -1
    best_metrics: dict[str, float] = field(default_factory=dict)
    evals_since_best: int = 0
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)


def train_in_process(
    *,
    cfg: Config,
    data: Sequence[str | Path],
    out: str | Path,
    resume: bool = False,
    cache: str | Path | None = None,
    progress: ProgressFn | None = None,
    ctx: DistContext = SINGLE,
) -> TrainResult:
    """Train every configured stage into ``out`` as rank ``ctx.rank`` of ``ctx.world``.

    Args:
        cfg: Validated experiment config.
        data: Data folders (any layouts the readers recognise).
        out: Run folder.
        resume: Continue from ``out/progress`` after an interruption.
        cache: Preprocessing cache folder (default: ``<out>/cache``); an existing folder
            must be empty or a cache tumorscope made (:func:`tumorscope.data.cache.prepare`).
        progress: Called as ``progress(stage, step, max_steps, metrics)``.
        ctx: This process's rank when run under ``torchrun``.

    Raises:
        RunError: ``out`` is not empty and ``resume`` is False, or ``resume`` and ``out`` is
            not a run (:func:`tumorscope.training.runfolder.open_run_dir`).
        DataError: ``cache`` is not a cache folder tumorscope made (checked first, too).
    """
    check_step_memory(cfg)  # before anything is written, built or allocated
    t0 = time.perf_counter()
    run_dir = Path(out)
    cache_dir = Path(cache) if cache else default_cache(run_dir)
    if ctx.is_main:
        open_run_dir(run_dir, resume, cache=cache_dir)
        write_run_config(run_dir, cfg, resume)
    seed_everything(cfg.runtime.seed, deterministic=cfg.runtime.deterministic)
    configure_threads(cfg.runtime.threads)
    precision = resolve_precision(cfg.runtime.precision)

    if ctx.is_main:
        stage_data = StageData.build(data=data, cfg=cfg, cache=cache_dir)
        write_seen(run_dir, data, stage_data.prepared, resume)
    barrier(ctx)  # the cache and splits exist before other ranks read them
    if not ctx.is_main:
        stage_data = StageData.load(cfg=cfg, cache=cache_dir)

    model = create_model(cfg.model)
    loss_fn = MultiTaskLoss(cfg.loss, model.tasks, tumour_pos_weight=stage_data.tumour_pos_weight())
    state = _Progress()
    if resume and (run_dir / "progress" / "manifest.json").is_file():
        state = _restore_progress(run_dir, model, loss_fn)
        log.info("resuming stage %d at step %d", state.stage_index, state.step)

    for index in range(state.stage_index, len(cfg.stages)):
        stage = cfg.stages[index]
        if index > state.stage_index:
            state = _Progress(stage_index=index, stages=state.stages)
        reason = stage_data.skip_reason(stage)
        if reason:
            log.warning("stage %s skipped: %s", stage.name, reason)
            state.stages[stage.name] = {"skipped": reason}
            continue
        info = _run_stage(
            cfg, stage, model, loss_fn, stage_data, run_dir, state, precision, progress, ctx
        )
        state.stages[stage.name] = info
        barrier(ctx)
        # Hand the stage's best weights on to the next stage.
        best_dir = run_dir / "stages" / stage.name
        _, best_state, _, best_extra = load_checkpoint(best_dir)
        model.load_state_dict(best_state)
        _load_loss_state(loss_fn, best_extra.get("loss", {}))

    result = TrainResult(run_dir=run_dir, stages=state.stages, seconds=time.perf_counter() - t0)
    if ctx.is_main:
        _finalise(cfg, model, stage_data, run_dir, state, precision, ctx.world)
        atomic_write_json(
            run_dir / RESULT_FILE, {"stages": state.stages, "seconds": result.seconds}
        )
    barrier(ctx)
    return result


def _loss_state(loss_fn: nn.Module) -> dict[str, list[float]]:
    """Learned loss weights (a handful of scalars) as JSON."""
    return {k: v.detach().reshape(-1).tolist() for k, v in loss_fn.state_dict().items()}


def _load_loss_state(loss_fn: nn.Module, state: dict[str, list[float]]) -> None:
    if state:
        current = loss_fn.state_dict()
        loss_fn.load_state_dict(
            {k: torch.tensor(v).reshape(current[k].shape) for k, v in state.items()}
        )


def _run_stage(
    cfg: Config,
    stage: StageConfig,
    model: MultiTaskNet,
    loss_fn: nn.Module,
    stage_data: StageData,
    run_dir: Path,
    state: _Progress,
    precision: str,
    progress: ProgressFn | None,
    ctx: DistContext,
) -> dict[str, Any]:
    stage_dir = run_dir / "stages" / stage.name
    if ctx.is_main:
        stage_dir.mkdir(parents=True, exist_ok=True)
    train_parts = apply_freeze(model, stage)
    # Run-wide step of this stage's step k: first + k (earlier stages count their max_steps).
    first = sum(s.max_steps for s in cfg.stages[: state.stage_index])
    snapshots = set(cfg.runtime.snapshot_steps)

    def save(folder: Path, step: int, metrics: dict[str, float]) -> None:
        _save_weights(
            folder, cfg, stage, model, loss_fn, stage_data, ctx.world, step=step, metrics=metrics
        )

    if stage.cohort_refit:
        # Full-batch and deterministic: every rank computes the same head; rank 0 saves it.
        info = refit_survival_head(
            cfg, stage, model, stage_data, stage_dir, precision, progress, ctx=ctx
        )
        # The refit has no step-wise weights here: its snapshots hold the refitted head.
        for g in sorted(g for g in snapshots if first < g <= first + stage.max_steps):
            if ctx.is_main:
                save(_snapshot_dir(run_dir, g), stage.max_steps, {})
        return info

    groups = param_groups(model, stage, train_parts)
    if cfg.loss.weighting == "uncertainty":
        groups.append({"params": list(loss_fn.parameters()), "lr": stage.lr, "name": "loss"})
    optimizer = torch.optim.AdamW(groups, lr=stage.lr, weight_decay=stage.weight_decay)
    scheduler = make_scheduler(optimizer, stage)
    if state.step > 0:
        _, _, optim_state, saved = load_checkpoint(run_dir / "progress")
        if optim_state is not None:
            optimizer.load_state_dict(optim_state)
        scheduler.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng"])

    metrics_names = selection_metric(stage)
    writer = tensorboard(stage_dir) if ctx.is_main else None
    csv_path = stage_dir / "log.csv"
    batches = stage_data.train_batches(stage, seed=cfg.runtime.seed, start_step=state.step, ctx=ctx)
    stopped_early = False
    while state.step < stage.max_steps:
        batch = next(batches)
        result = loop.train_step(
            model,
            loss_fn,
            optimizer,
            scheduler,
            batch,
            stage.tasks,
            precision=precision,
            grad_clip=stage.grad_clip,
            ctx=ctx,
        )
        state.step += 1
        row: dict[str, float] = {
            "loss": result.total,
            **{f"loss_{k}": v for k, v in result.per_task.items()},
        }
        row["lr"] = optimizer.param_groups[-1]["lr"]
        is_eval = state.step % stage.eval_every == 0 or state.step == stage.max_steps
        improved_now = False
        metrics: dict[str, float] = {}  # of this step's validation, if any
        if is_eval and ctx.is_main:  # every rank holds the same weights; rank 0 validates
            val = loop.collect_validation(
                model, stage_data.val_batches(stage), stage.tasks, precision
            )
            metrics = loop.validation_metrics(val)
            row.update({f"val_{k}": v for k, v in metrics.items()})
            score = loop.selection_score(metrics, metrics_names)
            if (math.isfinite(score) and score > state.best_score) or state.best_step < 0:
                state.best_score = score if math.isfinite(score) else state.best_score
                state.best_step = state.step
                state.best_metrics = metrics
                state.evals_since_best = 0
                improved_now = True
                save(stage_dir, state.step, metrics)
            else:
                state.evals_since_best += 1
            stopped_early = bool(stage.patience) and state.evals_since_best >= stage.patience
        if is_eval and ctx.active:
            stopped_early = broadcast_flag(stopped_early)
        if ctx.is_main:
            if first + state.step in snapshots:  # saved before progress: a kill replays it
                save(_snapshot_dir(run_dir, first + state.step), state.step, metrics)
            log_row(writer, csv_path, stage.name, state.step, row)
            if progress:
                progress(stage.name, state.step, stage.max_steps, row)
            # Saving progress right after a new best means a kill during the best-save replays it.
            if (
                state.step % cfg.runtime.checkpoint_every == 0
                or state.step == stage.max_steps
                or stopped_early
                or improved_now
            ):
                _save_progress(run_dir, model, loss_fn, optimizer, scheduler, state)
        if stopped_early:
            log.info(
                "stage %s: early stop at step %d (best at %d)",
                stage.name,
                state.step,
                state.best_step,
            )
            break
    if writer is not None:
        writer.close()
    return {
        "steps": state.step,
        "best_step": state.best_step,
        "best_metrics": state.best_metrics,
        "stopped_early": stopped_early,
        "trained_parts": train_parts,
    }


def _snapshot_dir(run_dir: Path, step: int) -> Path:
    """Folder of the snapshot after run-wide step ``step``."""
    return run_dir / SNAPSHOTS_DIR / f"step-{step}"


def _save_weights(
    folder: Path,
    cfg: Config,
    stage: StageConfig,
    model: MultiTaskNet,
    loss_fn: nn.Module,
    stage_data: StageData,
    world_size: int,
    *,
    step: int,
    metrics: dict[str, float],
) -> None:
    """Save the current weights as a stage checkpoint (a stage's best, or a snapshot).

    Args:
        folder: Destination checkpoint folder.
        cfg: The experiment config.
        stage: The stage being trained.
        model: The network.
        loss_fn: The multi-task loss (its learned weights are kept in the state).
        stage_data: The prepared data (manifest facts).
        world_size: Training processes.
        step: The stage's step of these weights.
        metrics: Validation metrics of these weights ({} when not validated).
    """
    manifest = run_manifest(
        cfg, stage_data, world_size, stage=stage.name, step=step, metrics=metrics
    )
    save_checkpoint(
        folder,
        model_state=model.state_dict(),
        manifest=manifest.to_dict(),
        state={"loss": _loss_state(loss_fn)},
    )


def _save_progress(
    run_dir: Path,
    model: MultiTaskNet,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: _Progress,
) -> None:
    sched = scheduler.state_dict()
    saved = {
        "stage_index": state.stage_index,
        "step": state.step,
        "best_score": state.best_score if math.isfinite(state.best_score) else None,
        "best_step": state.best_step,
        "best_metrics": state.best_metrics,
        "evals_since_best": state.evals_since_best,
        "stages": state.stages,
        "scheduler": sched,
        "rng": rng_state(),
        "loss": _loss_state(loss_fn),
    }
    save_checkpoint(
        run_dir / "progress",
        model_state=model.state_dict(),
        manifest={"format": "tumorscope-progress"},
        optimizer_state=optimizer.state_dict(),
        state=saved,
    )


def _restore_progress(run_dir: Path, model: MultiTaskNet, loss_fn: nn.Module) -> _Progress:
    try:
        _, model_state, _, saved = load_checkpoint(run_dir / "progress")
    except CheckpointError as e:
        raise RunError(f"cannot resume: {e}") from None
    model.load_state_dict(model_state)
    _load_loss_state(loss_fn, saved.get("loss", {}))
    set_rng_state(saved["rng"])
    best = saved.get("best_score")
    return _Progress(
        stage_index=int(saved["stage_index"]),
        step=int(saved["step"]),
        best_score=-math.inf if best is None else float(best),
        best_step=int(saved["best_step"]),
        best_metrics=dict(saved.get("best_metrics", {})),
        evals_since_best=int(saved.get("evals_since_best", 0)),
        stages=dict(saved.get("stages", {})),
    )


def _finalise(
    cfg: Config,
    model: MultiTaskNet,
    stage_data: StageData,
    run_dir: Path,
    state: _Progress,
    precision: str,
    world_size: int,
) -> None:
    done = finish(cfg, model, stage_data, precision)
    manifest = run_manifest(
        cfg,
        stage_data,
        world_size,
        stages=state.stages,
        calibration=done.calibration,
        metrics=done.metrics,
        splits=stage_data.split_patients(),
    )
    save_with_domain(run_dir, model, manifest.to_dict(), done.domain)
    read_manifest(run_dir)  # verify what was written
