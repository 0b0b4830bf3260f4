"""The ``surv_head`` stage: refit the survival head on the whole training cohort.

Cox on the handful of patients in a mini-batch is noise (DESIGN "Model"), so with the
encoder frozen the per-slice readouts (the pooled features the slice heads read) of every
training patient are computed once and the whole patient survival head — slice embedding,
attention pooling, hazard — is fitted full-batch, Cox over the whole cohort at each step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from tumorscope.config import Config, StageConfig
from tumorscope.data.batch import Batch
from tumorscope.losses.cox import cox_nll
from tumorscope.metrics.survival import harrell_c_index
from tumorscope.models.multitask import MultiTaskNet
from tumorscope.models.patients import PatientBatch, PatientCollector
from tumorscope.training.checkpoint import save_checkpoint
from tumorscope.training.collective import SINGLE, DistContext
from tumorscope.training.data import StageData
from tumorscope.training.loop import ProgressFn, add_patient_slices, autocast
from tumorscope.training.manifest import run_manifest

log = logging.getLogger(__name__)


@torch.no_grad()
def cohort_readouts(model: MultiTaskNet, batches: Iterable[Batch], precision: str) -> PatientBatch:
    """Per-slice readouts (``Trunk.readout``) of every patient with an outcome, grouped by
    patient (in :class:`PatientBatch`'s ``embedding`` field)."""
    model.eval()
    patients = PatientCollector()
    for batch in batches:
        keep = batch.has_survival
        if not bool(keep.any()):
            continue
        with autocast(precision):
            readout = model.trunk(batch.image[keep], tasks=("survival",)).readout
        rows = torch.nonzero(keep).reshape(-1)
        add_patient_slices(patients, readout.float(), batch, rows)
    return patients.stack()


def refit_survival_head(
    cfg: Config,
    stage: StageConfig,
    model: MultiTaskNet,
    stage_data: StageData,
    stage_dir: Path,
    precision: str,
    progress: ProgressFn | None,
    *,
    ctx: DistContext = SINGLE,
) -> dict[str, Any]:
    """Fit ``model.survival_head`` full-batch on cached training-cohort embeddings.

    Full-batch and deterministic: every rank computes the same head; rank 0 keeps the best
    head by validation C-index in ``stage_dir``.
    """
    save = ctx.is_main
    train = cohort_readouts(model, stage_data.train_survival_batches(), precision)
    val = cohort_readouts(model, stage_data.val_survival_batches(), precision)
    head = model.survival_head
    if head is None:
        raise ValueError("the model has no survival head (add 'survival' to model.heads)")
    optimizer = torch.optim.AdamW(head.parameters(), lr=stage.lr, weight_decay=stage.weight_decay)

    def val_c_index() -> float:
        if not len(val) or not bool(val.event.any()):
            return float("nan")
        head.eval()
        with torch.no_grad():
            emb = head.embed(val.embedding)
            risk = model.patient_log_hazard(emb, val.patient_index, val.clinical)
        return float(harrell_c_index(risk.numpy(), val.time.numpy(), val.event.numpy()))

    best = -math.inf
    best_metrics: dict[str, float] = {}
    best_step = -1
    for step in range(1, stage.max_steps + 1):
        head.train()
        optimizer.zero_grad(set_to_none=True)
        emb = head.embed(train.embedding)
        log_hz = model.patient_log_hazard(emb, train.patient_index, train.clinical)
        loss = cox_nll(log_hz, train.time, train.event, ties=cfg.loss.cox_ties)
        loss.backward()
        if stage.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(head.parameters(), stage.grad_clip)
        optimizer.step()
        row = {"loss_survival": float(loss.detach())}
        if step % stage.eval_every == 0 or step == stage.max_steps:
            c = val_c_index()
            row["val_c_index"] = c
            score = c if math.isfinite(c) else -float(loss.detach())
            if score > best or best_step < 0:
                best, best_step = score, step
                best_metrics = {"c_index": c} if math.isfinite(c) else {}
                manifest = run_manifest(
                    cfg, stage_data, ctx.world, stage=stage.name, step=step, metrics=best_metrics
                )
                if save:
                    save_checkpoint(
                        stage_dir, model_state=model.state_dict(), manifest=manifest.to_dict()
                    )
        if progress and save:
            progress(stage.name, step, stage.max_steps, row)
    log.info(
        "surv_head: %d training patients, best val C-index %s at step %d",
        len(train),
        best_metrics,
        best_step,
    )
    return {
        "steps": stage.max_steps,
        "best_step": best_step,
        "best_metrics": best_metrics,
        "cohort_refit": True,
    }
