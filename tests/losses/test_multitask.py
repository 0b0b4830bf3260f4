"""Multi-task loss: masked per-task losses, patient-level survival, fixed and learned weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss

from tumorscope.config import LossConfig
from tumorscope.data.batch import Batch
from tumorscope.losses.cox import cox_nll
from tumorscope.losses.multitask import (
    MultiTaskLoss,
    masked_cross_entropy,
    pos_weight_from_labels,
)
from tumorscope.losses.segmentation import make_segmentation_loss
from tumorscope.models.heads import PatientSurvivalHead
from tumorscope.models.multitask import ModelOutput

torch.set_num_threads(1)
TASKS = ("segmentation", "tumour", "tumour_type", "survival")


def _batch(patient_index: list[int] | None = None) -> Batch:
    index = torch.tensor(patient_index or [0, 0, 1, 1, 2, 2])
    b = index.shape[0]
    g = torch.Generator().manual_seed(0)
    p_time = torch.tensor([5.0, 3.0, 8.0, 1.0])
    p_event = torch.tensor([True, True, False, True])
    p_surv = torch.tensor([True, True, True, False])
    return Batch(
        image=torch.randn(b, 1, 16, 16, generator=g),
        mask=(torch.rand(b, 1, 13, 11, generator=g) > 0.6).float(),
        has_mask=torch.tensor([True, False, True, False, True, False] + [False] * (b - 6)),
        tumour=torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0] + [0.0] * (b - 6)),
        has_tumour=torch.tensor([True, True, False, True, True, True] + [False] * (b - 6)),
        tumour_type=torch.tensor([2, -1, 0, 3, -1, 1] + [-1] * (b - 6)),
        has_tumour_type=torch.tensor([True, False, True, True, False, True] + [False] * (b - 6)),
        time=p_time[index],
        event=p_event[index],
        has_survival=p_surv[index],
        clinical=torch.zeros(b, 0),
        patient_index=index,
        patient_ids=[f"p{i}" for i in index.tolist()],
        sources=["brats"] * b,
        slice_index=torch.arange(b),
    )


def _output(b: int = 6, seed: int = 1) -> ModelOutput:
    g = torch.Generator().manual_seed(seed)
    return ModelOutput(
        seg_logits=torch.randn(b, 1, 13, 11, generator=g).requires_grad_(),
        tumour_logit=torch.randn(b, 1, generator=g).requires_grad_(),
        tumour_type_logits=torch.randn(b, 4, generator=g).requires_grad_(),
        survival_embedding=torch.randn(b, 3, generator=g).requires_grad_(),
    )


def _cfg(**kw: object) -> LossConfig:
    return dataclasses.replace(LossConfig(), **kw)  # type: ignore[arg-type]


def test_masked_cross_entropy_equals_sklearn_log_loss_on_present_subset() -> None:
    out, batch = _output(), _batch()
    present = batch.has_tumour_type
    assert out.tumour_type_logits is not None
    got = masked_cross_entropy(out.tumour_type_logits, batch.tumour_type, present)
    probs = torch.softmax(out.tumour_type_logits[present], 1).detach().numpy()
    ref = log_loss(batch.tumour_type[present].numpy(), probs, labels=[0, 1, 2, 3])
    assert got.item() == pytest.approx(ref, rel=1e-6)


def test_each_task_uses_only_samples_with_targets() -> None:
    out, batch = _output(), _batch()
    head = PatientSurvivalHead(4, 3).eval()
    assert (
        out.survival_embedding is not None
        and out.seg_logits is not None
        and out.tumour_logit is not None
    )
    log_hz = head(out.survival_embedding, batch.patient_index)
    loss_fn = MultiTaskLoss(_cfg(tumour_pos_weight=2.0), TASKS)
    res = loss_fn(out, batch, log_hz)
    m = batch.has_mask
    seg_ref = make_segmentation_loss(LossConfig())(out.seg_logits[m], batch.mask[m])
    torch.testing.assert_close(res.per_task["segmentation"], seg_ref)
    # Weighted BCE by hand: −[w·y·log σ(z) + (1 − y)·log(1 − σ(z))].
    t = batch.has_tumour
    z = out.tumour_logit.reshape(-1)[t].detach().numpy().astype(np.float64)
    y = batch.tumour[t].numpy()
    p = 1 / (1 + np.exp(-z))
    bce = np.mean(-(2.0 * y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert res.per_task["tumour"].item() == pytest.approx(bce, rel=1e-5)
    # Survival: one row per patient with survival data (patients 0, 1, 2).
    surv_ref = cox_nll(log_hz, torch.tensor([5.0, 3.0, 8.0]), torch.tensor([True, True, False]))
    torch.testing.assert_close(res.per_task["survival"], surv_ref)
    assert res.counts == {"segmentation": 3, "tumour": 5, "tumour_type": 4, "survival": 3}
    assert res.n_events == 2
    w = LossConfig().task_weights
    total = sum(w[k] * v for k, v in res.per_task.items())
    torch.testing.assert_close(res.total, total)


def test_survival_skips_patients_without_outcome() -> None:
    out, batch = _output(8), _batch([0, 0, 1, 1, 2, 2, 3, 3])
    assert out.survival_embedding is not None
    head = PatientSurvivalHead(4, 3).eval()
    log_hz = head(out.survival_embedding, batch.patient_index)
    res = MultiTaskLoss(LossConfig(), TASKS)(out, batch, log_hz, tasks=("survival",))
    torch.testing.assert_close(
        res.per_task["survival"], cox_nll(log_hz[:3], batch.time[[0, 2, 4]], batch.event[[0, 2, 4]])
    )
    assert res.counts == {"survival": 3}


def test_duplicating_a_patients_slices_leaves_the_loss_unchanged() -> None:
    torch.manual_seed(0)
    head = PatientSurvivalHead(4, 3).eval()
    out, batch = _output(), _batch()
    loss_fn = MultiTaskLoss(LossConfig(), TASKS)
    assert out.survival_embedding is not None
    base = loss_fn(
        out, batch, head(out.survival_embedding, batch.patient_index), tasks=("survival",)
    )
    rows = torch.tensor([0, 1, 2, 3, 4, 5, 2, 3])  # patient 1's slices twice
    dup_batch = _batch([0, 0, 1, 1, 2, 2, 1, 1])
    dup_emb = out.survival_embedding[rows]
    dup = loss_fn(
        ModelOutput(survival_embedding=dup_emb),
        dup_batch,
        head(dup_emb, dup_batch.patient_index),
        tasks=("survival",),
    )
    torch.testing.assert_close(dup.per_task["survival"], base.per_task["survival"])


def test_absent_targets_give_in_graph_zeros() -> None:
    out, batch = _output(), _batch()
    for flag in ("has_mask", "has_tumour", "has_tumour_type", "has_survival"):
        setattr(batch, flag, torch.zeros(6, dtype=torch.bool))
    res = MultiTaskLoss(LossConfig(), TASKS)(out, batch, None)
    for task, value in res.per_task.items():
        assert value.item() == 0.0 and value.requires_grad, task
    assert res.counts == dict.fromkeys(TASKS, 0)
    res.total.backward()
    assert out.seg_logits is not None and out.seg_logits.grad is not None
    assert torch.equal(out.seg_logits.grad, torch.zeros_like(out.seg_logits))


def test_uncertainty_weighting_is_learned() -> None:
    out, batch = _output(), _batch()
    loss_fn = MultiTaskLoss(_cfg(weighting="uncertainty"), ("segmentation", "tumour"))
    names = {n for n, _ in loss_fn.named_parameters()}
    assert names == {"log_vars.segmentation", "log_vars.tumour"}
    with torch.no_grad():
        loss_fn.log_vars["tumour"].fill_(0.5)
    res = loss_fn(out, batch)
    seg, tum = res.per_task["segmentation"], res.per_task["tumour"]
    ref = seg + np.exp(-0.5) * tum + 0.5
    torch.testing.assert_close(res.total, ref)
    res.total.backward()
    # d/ds [exp(−s)·L + s] = 1 − exp(−s)·L
    grad = loss_fn.log_vars["tumour"].grad
    assert grad is not None and grad.item() == pytest.approx(
        1 - np.exp(-0.5) * tum.item(), rel=1e-5
    )
    assert res.weights["tumour"] == pytest.approx(np.exp(-0.5))


def test_fixed_weights_from_config() -> None:
    out, batch = _output(), _batch()
    cfg = _cfg(task_weights={"segmentation": 0.0, "tumour": 3.0})
    res = MultiTaskLoss(cfg, ("segmentation", "tumour"))(out, batch)
    torch.testing.assert_close(res.total, 3.0 * res.per_task["tumour"])


def test_pos_weight_from_labels() -> None:
    assert pos_weight_from_labels(np.array([1, 0, 0, 0])) == 3.0
    assert pos_weight_from_labels(torch.ones(4)) == 1.0
    loss_fn = MultiTaskLoss(LossConfig(), ("tumour",), tumour_pos_weight=3.0)
    assert loss_fn.pos_weight.item() == 3.0
    # A value in the config wins over the measured one.
    assert (
        MultiTaskLoss(
            _cfg(tumour_pos_weight=2.0), ("tumour",), tumour_pos_weight=3.0
        ).pos_weight.item()
        == 2.0
    )


def test_errors_name_the_fault() -> None:
    out, batch = _output(), _batch()
    loss_fn = MultiTaskLoss(LossConfig(), TASKS)
    with pytest.raises(ValueError, match="no log_hazard"):
        loss_fn(out, batch, None, tasks=("survival",))
    with pytest.raises(ValueError, match=r"log_hazard: expected shape \(3,\)"):
        loss_fn(out, batch, torch.zeros(2), tasks=("survival",))
    with pytest.raises(ValueError, match="no tumour_type field"):
        loss_fn(dataclasses.replace(out, tumour_type_logits=None), batch, tasks=("tumour_type",))
    with pytest.raises(
        ValueError, match=r"logits shape \(6, 1, 12, 11\) does not match mask shape"
    ):
        loss_fn(
            dataclasses.replace(out, seg_logits=torch.zeros(6, 1, 12, 11)),
            batch,
            tasks=("segmentation",),
        )
    with pytest.raises(ValueError, match="unknown task 'grade'"):
        MultiTaskLoss(LossConfig(), ("grade",))
    with pytest.raises(ValueError, match="not one of this loss's tasks"):
        MultiTaskLoss(LossConfig(), ("tumour",))(out, batch, tasks=("segmentation",))
