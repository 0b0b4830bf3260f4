"""The ``surv_head`` stage: refit the survival head on the whole training cohort.

Cox on the handful of patients in a mini-batch is noise (DESIGN "Model"), so with the
encoder frozen the per-slice embeddings of every training patient are computed once and
the patient survival head is fitted full-batch, Cox over the whole cohort at each step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tumorscope.config import Config, StageConfig
from tumorscope.data.batch import Batch
from tumorscope.training.checkpoint import save_checkpoint
from tumorscope.training.loop import autocast, survival_head

if TYPE_CHECKING:
    from tumorscope.models.multitask import MultiTaskNet

log = logging.getLogger(__name__)


@torch.no_grad()
def cohort_embeddings(
    model: MultiTaskNet, batches: Iterable[Batch], precision: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Per-slice embeddings of every patient with an outcome, grouped by patient.

    Returns:
        ``(embedding (N, D), patient_index (N,), clinical (P, K), time (P,), event (P,), patient_ids)``.
    """
    model.eval()
    emb: dict[str, list[torch.Tensor]] = {}
    meta: dict[str, tuple[torch.Tensor, float, bool]] = {}
    for batch in batches:
        keep = batch.has_survival
        if not bool(keep.any()):
            continue
        with autocast(precision):
            out = model(batch.image[keep], tasks=("survival",))
        e = out.survival_embedding.float()
        for j, i in enumerate(torch.nonzero(keep).reshape(-1).tolist()):
            pid = batch.patient_ids[i]
            emb.setdefault(pid, []).append(e[j])
            meta[pid] = (batch.clinical[i], float(batch.time[i]), bool(batch.event[i]))
    pids = list(emb)
    if not pids:
        empty = torch.zeros(0)
        return empty, empty.long(), empty, empty, empty.bool(), []
    embedding = torch.cat([torch.stack(emb[p]) for p in pids])
    index = torch.cat([torch.full((len(emb[p]),), k, dtype=torch.long) for k, p in enumerate(pids)])
    clinical = torch.stack([meta[p][0] for p in pids])
    time = torch.tensor([meta[p][1] for p in pids], dtype=torch.float32)
    event = torch.tensor([meta[p][2] for p in pids], dtype=torch.bool)
    return embedding, index, clinical, time, event, pids


def refit_survival_head(
    cfg: Config,
    stage: StageConfig,
    model: MultiTaskNet,
    stage_data: Any,
    stage_dir: Path,
    precision: str,
    progress: Any,
    *,
    save: bool = True,
) -> dict[str, Any]:
    """Fit ``model.survival_head`` full-batch on cached training-cohort embeddings.

    The best head by validation C-index is kept in ``stage_dir``.
    """
    from tumorscope.losses.cox import cox_nll
    from tumorscope.metrics.survival import harrell_c_index
    from tumorscope.training.run import base_manifest

    train = cohort_embeddings(model, stage_data.train_survival_batches(), precision)
    val = cohort_embeddings(model, stage_data.val_survival_batches(), precision)
    emb, index, clin, time, event, _ = train
    head = survival_head(model)
    optimizer = torch.optim.AdamW(head.parameters(), lr=stage.lr, weight_decay=stage.weight_decay)
    use_clin = clin.ndim == 2 and clin.shape[1] > 0

    def val_c_index() -> float:
        v_emb, v_idx, v_clin, v_time, v_event, _ = val
        if v_emb.numel() == 0 or not bool(v_event.any()):
            return float("nan")
        head.eval()
        with torch.no_grad():
            risk = head(v_emb, v_idx, v_clin if use_clin else None)
        return float(harrell_c_index(risk.numpy(), v_time.numpy(), v_event.numpy()))

    best = -math.inf
    best_metrics: dict[str, float] = {}
    best_step = -1
    for step in range(1, stage.max_steps + 1):
        head.train()
        optimizer.zero_grad(set_to_none=True)
        log_hz = head(emb, index, clin if use_clin else None)
        loss = cox_nll(log_hz, time, event, ties=cfg.loss.cox_ties)
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
                manifest = {
                    **base_manifest(cfg, stage_data),
                    "stage": stage.name,
                    "step": step,
                    "metrics": best_metrics,
                }
                if save:
                    save_checkpoint(stage_dir, model_state=model.state_dict(), manifest=manifest)
        if progress and save:
            progress(stage.name, step, stage.max_steps, row)
    log.info(
        "surv_head: %d training patients, best val C-index %s at step %d",
        int(index.max()) + 1,
        best_metrics,
        best_step,
    )
    return {
        "steps": stage.max_steps,
        "best_step": best_step,
        "best_metrics": best_metrics,
        "cohort_refit": True,
    }
