"""Multi-task loss: Σ wₜ·Lₜ over the tasks whose targets are present in the batch.

Each task's loss uses only the samples whose presence flag is set (``Batch.has_*``);
survival uses one row per patient. Weights are fixed (``loss.task_weights``) or learned by
homoscedastic uncertainty (Kendall, Gal & Cipolla, CVPR 2018): ``exp(−sₜ)·Lₜ + sₜ`` with
``sₜ = log σₜ²`` a parameter of this module (the trainer adds it to the optimiser).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss
from torch import nn

from tumorscope.config import TASKS, LossConfig
from tumorscope.data.batch import Batch
from tumorscope.losses.cox import cox_nll
from tumorscope.losses.segmentation import deep_supervision_weights, make_segmentation_loss
from tumorscope.models.multitask import ModelOutput

logger = logging.getLogger(__name__)


@dataclass
class LossResult:
    """Losses of one batch.

    Attributes:
        total: Scalar weighted sum, in the autograd graph.
        per_task: Unweighted loss per requested task (an in-graph zero where the batch has
            no target for it).
        counts: Samples used per task (patients for ``survival``).
        n_events: Events among the survival patients.
        weights: Effective weight per task (``exp(−sₜ)`` under uncertainty weighting).
    """

    total: torch.Tensor
    per_task: dict[str, torch.Tensor] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    n_events: int = 0
    weights: dict[str, float] = field(default_factory=dict)


def pos_weight_from_labels(labels: np.ndarray | torch.Tensor) -> float:
    """BCE positive-class weight ``n_negative / n_positive`` from training labels (1.0 if degenerate)."""
    y = np.asarray(labels, dtype=float).reshape(-1)
    pos, neg = float((y > 0.5).sum()), float((y <= 0.5).sum())
    return neg / pos if pos > 0 and neg > 0 else 1.0


def masked_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, present: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy over the samples flagged ``present``.

    Args:
        logits: ``(B, K)`` class logits.
        target: ``(B,)`` int64 class indices (ignored where absent).
        present: ``(B,)`` bool.

    Returns:
        Scalar; ``(logits * 0).sum()`` when no sample is present.
    """
    if not bool(present.any()):
        return (logits * 0).sum()
    return F.cross_entropy(logits[present].float(), target[present].long())


def _first_rows(values: torch.Tensor, patient_index: torch.Tensor, n_patients: int) -> torch.Tensor:
    """First row of ``values`` per patient (survival targets repeat on a patient's slices)."""
    pos = torch.arange(values.shape[0], device=values.device)
    first = torch.full((n_patients,), values.shape[0], dtype=torch.long, device=values.device)
    first = first.scatter_reduce(0, patient_index, pos, reduce="amin")
    return values[first]


class MultiTaskLoss(nn.Module):
    """Weighted sum of the task losses present in a batch.

    Args:
        cfg: Loss configuration.
        tasks: Tasks the model serves (``MultiTaskNet.tasks``); one learned weight each.
        tumour_pos_weight: BCE positive weight measured on the training data, used when
            ``cfg.tumour_pos_weight`` is 0 ("from data"); 1.0 when neither is given.

    Raises:
        ValueError: for an unknown task.
    """

    def __init__(
        self, cfg: LossConfig, tasks: Iterable[str], tumour_pos_weight: float | None = None
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.tasks = tuple(t for t in TASKS if t in set(tasks))
        unknown = sorted(set(tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"tasks: unknown task {unknown[0]!r}; expected some of {list(TASKS)}")
        self.segmentation_loss = make_segmentation_loss(cfg)
        pw = cfg.tumour_pos_weight if cfg.tumour_pos_weight > 0 else (tumour_pos_weight or 1.0)
        self.pos_weight: torch.Tensor
        self.register_buffer("pos_weight", torch.tensor([pw], dtype=torch.float32))
        self.log_vars = nn.ParameterDict(
            {t: nn.Parameter(torch.zeros(())) for t in self.tasks}
            if cfg.weighting == "uncertainty"
            else {}
        )

    def forward(
        self,
        output: ModelOutput,
        batch: Batch,
        log_hazard: torch.Tensor | None = None,
        tasks: Iterable[str] | None = None,
    ) -> LossResult:
        """Losses of one batch.

        Args:
            output: Per-slice model output for ``batch.image``.
            batch: Targets and presence flags.
            log_hazard: ``(P,)`` per-patient log-hazard from ``model.survival_head`` over
                ``batch.patient_index``; needed when ``survival`` is asked for and present.
            tasks: Tasks to optimise (None = all of ``self.tasks``).

        Returns:
            :class:`LossResult`.

        Raises:
            ValueError: when a task is asked for whose output is missing.
        """
        wanted = self.tasks if tasks is None else tuple(t for t in TASKS if t in set(tasks))
        result = LossResult(total=torch.zeros(()))
        terms: list[torch.Tensor] = []
        for task in wanted:
            if task not in self.tasks:
                raise ValueError(
                    f"tasks: {task!r} is not one of this loss's tasks {list(self.tasks)}"
                )
            loss, count = self._task_loss(task, output, batch, log_hazard, result)
            result.per_task[task] = loss
            result.counts[task] = count
            terms.append(self._weighted(task, loss, present=count > 0, result=result))
        if terms:
            result.total = torch.stack(terms).sum()
        return result

    def _weighted(
        self, task: str, loss: torch.Tensor, present: bool, result: LossResult
    ) -> torch.Tensor:
        if self.cfg.weighting == "uncertainty":
            s = self.log_vars[task]
            result.weights[task] = float(torch.exp(-s.detach()))
            # An absent task keeps its parameter in the graph with a zero (DDP needs every parameter used).
            return torch.exp(-s) * loss + s if present else loss + s * 0
        w = float(self.cfg.task_weights.get(task, 1.0))
        result.weights[task] = w
        return w * loss

    def _task_loss(
        self,
        task: str,
        output: ModelOutput,
        batch: Batch,
        log_hazard: torch.Tensor | None,
        result: LossResult,
    ) -> tuple[torch.Tensor, int]:
        if task == "segmentation":
            logits = _need(output.seg_logits, task)
            if logits.shape != batch.mask.shape:
                raise ValueError(
                    f"segmentation: logits shape {tuple(logits.shape)} does not match mask shape "
                    f"{tuple(batch.mask.shape)} (unpad padded outputs first)"
                )
            present = batch.has_mask
            n = int(present.sum())
            if n == 0:
                anchor = (logits * 0).sum()
                for aux in output.seg_aux_logits or []:
                    anchor = anchor + (aux * 0).sum()  # DDP: every parameter in the graph
                return anchor, 0
            target = batch.mask[present].float()
            if not output.seg_aux_logits:
                return self.segmentation_loss(logits[present].float(), target), n
            scales = [logits, *output.seg_aux_logits]
            deep = DeepSupervisionLoss(
                self.segmentation_loss,  # type: ignore[arg-type]
                weights=deep_supervision_weights(len(scales)),
            )
            return deep([z[present].float() for z in scales], target), n
        if task == "tumour":
            logit = _need(output.tumour_logit, task).reshape(-1)
            present = batch.has_tumour
            n = int(present.sum())
            if n == 0:
                return (logit * 0).sum(), 0
            loss = F.binary_cross_entropy_with_logits(
                logit[present].float(), batch.tumour[present].float(), pos_weight=self.pos_weight
            )
            return loss, n
        if task == "tumour_type":
            logits = _need(output.tumour_type_logits, task)
            present = batch.has_tumour_type
            return masked_cross_entropy(logits, batch.tumour_type, present), int(present.sum())
        return self._survival_loss(output, batch, log_hazard, result)

    def _survival_loss(
        self, output: ModelOutput, batch: Batch, log_hazard: torch.Tensor | None, result: LossResult
    ) -> tuple[torch.Tensor, int]:
        embedding = _need(output.survival_embedding, "survival")
        if not bool(batch.has_survival.any()):
            anchor = log_hazard if log_hazard is not None else embedding
            return (anchor * 0).sum(), 0
        if log_hazard is None:
            raise ValueError(
                "survival: the batch has survival targets but no log_hazard was given "
                "(call model.survival_head(output.survival_embedding, batch.patient_index, clinical))"
            )
        n_patients = int(batch.patient_index.max()) + 1
        if log_hazard.shape != (n_patients,):
            raise ValueError(
                f"log_hazard: expected shape ({n_patients},) (one per patient of patient_index), "
                f"got {tuple(log_hazard.shape)}"
            )
        index = batch.patient_index
        present = _first_rows(batch.has_survival, index, n_patients)
        time = _first_rows(batch.time, index, n_patients)[present]
        event = _first_rows(batch.event, index, n_patients)[present]
        result.n_events = int(event.sum())
        return cox_nll(log_hazard[present], time, event, ties=self.cfg.cox_ties), int(present.sum())


def _need(value: torch.Tensor | None, task: str) -> torch.Tensor:
    if value is None:
        raise ValueError(
            f"{task}: the model output has no {task} field; run the model with this task"
        )
    return value
