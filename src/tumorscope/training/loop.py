"""The training step and the validation pass: functions over explicit state."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from tumorscope.data.batch import Batch
from tumorscope.metrics.classification import ClassificationAccumulator, roc_auc
from tumorscope.metrics.segmentation import dice
from tumorscope.metrics.survival import SurvivalAccumulator
from tumorscope.models.multitask import ModelOutput, MultiTaskNet
from tumorscope.models.patients import PatientCollector
from tumorscope.training.collective import (
    SINGLE,
    DistContext,
    average_gradients,
    gather_batch,
    gather_output,
)

ProgressFn = Callable[[str, int, int, dict[str, float]], None]


@dataclass
class StepResult:
    """Losses of one optimisation step (floats, for logging)."""

    total: float
    per_task: dict[str, float]
    grad_norm: float


def autocast(precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CPU when asked for, else a no-op."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _float_output(output: ModelOutput) -> ModelOutput:
    """Cast every tensor field of a ModelOutput to fp32 so losses run in fp32 under autocast."""
    for name, value in vars(output).items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            setattr(output, name, value.float())
        elif isinstance(value, list):
            setattr(output, name, [v.float() for v in value])
    return output


def patient_log_hazard(model: MultiTaskNet, embedding: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Per-patient log-hazard ``(P,)`` from per-slice embeddings via the patient survival head."""
    clinical = _patient_rows(batch.clinical, batch.patient_index)
    return model.patient_log_hazard(embedding, batch.patient_index, clinical)


def _patient_rows(values: torch.Tensor, patient_index: torch.Tensor) -> torch.Tensor:
    """First row of ``values`` for each patient (values repeat on a patient's slices)."""
    n_patients = int(patient_index.max().item()) + 1 if patient_index.numel() else 0
    first = torch.full((n_patients,), values.shape[0], dtype=torch.long, device=values.device)
    pos = torch.arange(values.shape[0], device=values.device)
    first = first.scatter_reduce(0, patient_index, pos, reduce="amin")
    return values[first]


def compute_losses(
    model: MultiTaskNet,
    loss_fn: nn.Module,
    batch: Batch,
    tasks: Sequence[str],
    precision: str,
    ctx: DistContext = SINGLE,
) -> Any:
    """Forward pass and multi-task loss for one batch (losses in fp32).

    Under distribution ``batch`` is this rank's shard; outputs and targets are gathered
    so the loss is the global batch's loss (see :mod:`tumorscope.training.distributed`).
    """
    with autocast(precision):
        output = model(batch.image, tasks=tuple(tasks))
    output = _float_output(output)
    if ctx.active:
        output, batch = gather_output(output), gather_batch(batch)
    log_hz = None
    if (
        "survival" in tasks
        and output.survival_embedding is not None
        and bool(batch.has_survival.any())
    ):
        log_hz = patient_log_hazard(model, output.survival_embedding, batch).float()
    return loss_fn(output, batch, log_hz, tasks=tuple(tasks))


def train_step(
    model: MultiTaskNet,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batch: Batch,
    tasks: Sequence[str],
    *,
    precision: str,
    grad_clip: float,
    ctx: DistContext = SINGLE,
) -> StepResult:
    """One optimisation step: forward, backward, (all-reduce), clip, step, schedule."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    result = compute_losses(model, loss_fn, batch, tasks, precision, ctx)
    result.total.backward()
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if ctx.active:
        average_gradients(params, ctx.world)
    grad_norm = (
        float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
        if grad_clip > 0 and params
        else 0.0
    )
    optimizer.step()
    scheduler.step()
    return StepResult(
        total=float(result.total.detach()),
        per_task={k: float(v.detach()) for k, v in result.per_task.items()},
        grad_norm=grad_norm,
    )


@dataclass
class ValidationOutputs:
    """Everything a validation pass collects, fed into the metric accumulators.

    Attributes:
        dice: Per-slice Dice (mean over regions) of slices with a mask.
        tumour: Uncalibrated tumour probabilities ``σ(z)`` and labels of labelled slices.
        tumour_logit: The same slices' logits ``z`` (the temperature is fitted on them).
        tumour_type: Per-slice ``(predicted class, true class)`` of slices with a type.
        survival: Patient log-hazards, times and events (one row per patient).
        survival_patients: The patients of ``survival``'s rows, in order.
    """

    dice: list[float] = field(default_factory=list)
    tumour: ClassificationAccumulator = field(default_factory=ClassificationAccumulator)
    tumour_logit: list[float] = field(default_factory=list)
    tumour_type: list[tuple[int, int]] = field(default_factory=list)
    survival: SurvivalAccumulator = field(default_factory=SurvivalAccumulator)
    survival_patients: list[str] = field(default_factory=list)


def _slice_dice(pred: torch.Tensor, target: torch.Tensor) -> list[float]:
    """Per-sample Dice of binarised predictions over all regions (BraTS empty convention)."""
    out = []
    for p, t in zip(pred.numpy(), target.numpy(), strict=True):
        out.append(float(np.mean([dice(pr, tr) for pr, tr in zip(p, t, strict=True)])))
    return out


@torch.no_grad()
def collect_validation(
    model: MultiTaskNet, batches: Iterable[Batch], tasks: Sequence[str], precision: str
) -> ValidationOutputs:
    """Run the model over validation batches and collect what the metrics need.

    Survival risk is pooled per patient over *all* that patient's validation slices, so
    slices of one patient are gathered first and then passed through the patient head.
    """
    model.eval()
    out = ValidationOutputs()
    patients = PatientCollector()
    run_tasks = tuple(t for t in tasks)
    for batch in batches:
        with autocast(precision):
            output = model(batch.image, tasks=run_tasks)
        output = _float_output(output)
        if output.seg_logits is not None and bool(batch.has_mask.any()):
            m = batch.has_mask
            pred = (output.seg_logits[m] > 0).to(torch.uint8)
            out.dice.extend(_slice_dice(pred, batch.mask[m].to(torch.uint8)))
        if output.tumour_logit is not None and bool(batch.has_tumour.any()):
            m = batch.has_tumour
            logit = output.tumour_logit.reshape(-1)[m]
            out.tumour_logit.extend(logit.tolist())
            out.tumour.update(torch.sigmoid(logit), batch.tumour[m])
        if output.tumour_type_logits is not None and bool(batch.has_tumour_type.any()):
            m = batch.has_tumour_type
            pred_type = output.tumour_type_logits[m].argmax(1).tolist()
            out.tumour_type.extend(zip(pred_type, batch.tumour_type[m].tolist(), strict=True))
        if output.survival_embedding is not None and bool(batch.has_survival.any()):
            rows = torch.nonzero(batch.has_survival).reshape(-1)
            add_patient_slices(patients, output.survival_embedding[rows], batch, rows)
    if len(patients):
        p = patients.stack()
        risk = model.patient_log_hazard(p.embedding, p.patient_index, p.clinical).float()
        out.survival.update(risk, p.time.double(), p.event)
        out.survival_patients.extend(p.patient_ids)
    return out


def add_patient_slices(
    patients: PatientCollector, embedding: torch.Tensor, batch: Batch, rows: torch.Tensor
) -> None:
    """Add slice embeddings ``(M, D)``: row ``k`` is the batch's slice ``rows[k]``."""
    for k, i in enumerate(rows.tolist()):
        patients.add(
            batch.patient_ids[i],
            embedding[k],
            batch.clinical[i],
            float(batch.time[i]),
            bool(batch.event[i]),
        )


def validation_metrics(v: ValidationOutputs) -> dict[str, float]:
    """Scalar validation metrics (NaN where undefined on this split)."""
    metrics: dict[str, float] = {}
    if v.dice:
        metrics["dice"] = float(np.mean(v.dice))
    prob, label = v.tumour.arrays()
    if label.size:
        metrics["roc_auc"] = float(roc_auc(prob, label))
    if v.tumour_type:
        metrics["type_accuracy"] = float(np.mean([p == t for p, t in v.tumour_type]))
    _, _, event = v.survival.arrays()
    if event.any():
        metrics["c_index"] = float(v.survival.compute()["harrell_c"])
    return metrics


def selection_score(metrics: dict[str, float], names: Sequence[str]) -> float:
    """Mean of the selection metrics that are defined (NaN if none is)."""
    vals = [metrics[n] for n in names if n in metrics and math.isfinite(metrics[n])]
    return float(np.mean(vals)) if vals else float("nan")


def cycle(batches: Iterable[Batch]) -> Iterator[Batch]:
    """Repeat an iterable of batches forever."""
    while True:
        yield from batches
