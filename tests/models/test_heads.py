"""Head contracts, and patient-level survival pooling against a per-patient loop."""

from __future__ import annotations

import pytest
import torch

from tumorscope.models.heads import ClassificationHead, PatientSurvivalHead, SegmentationHead

torch.set_num_threads(1)


def _head(clinical: int = 0) -> PatientSurvivalHead:
    torch.manual_seed(0)
    return PatientSurvivalHead(in_features=6, survival_dim=5, clinical_features=clinical).eval()


def test_segmentation_head_one_logit_per_region() -> None:
    head = SegmentationHead(4, 3)
    assert head(torch.randn(2, 4, 37, 41)).shape == (2, 3, 37, 41)


@pytest.mark.parametrize("n_classes", [1, 4])
def test_classification_head_shapes(n_classes: int) -> None:
    head = ClassificationHead(8, n_classes, dropout=0.2).eval()
    x = torch.randn(3, 8)
    y = head(x)
    assert y.shape == (3, n_classes)
    torch.testing.assert_close(y, x @ head.linear.weight.T + head.linear.bias)


def test_patient_pooling_matches_a_per_patient_loop() -> None:
    head = _head()
    emb = torch.randn(7, 5)
    index = torch.tensor([0, 1, 0, 2, 1, 0, 2])
    pooled, weights = head.pool(emb, index)
    scores = head.attention(emb).squeeze(1)
    for p in range(3):
        rows = index == p
        w = torch.softmax(scores[rows], dim=0)
        torch.testing.assert_close(weights[rows], w)
        torch.testing.assert_close(pooled[p], (w[:, None] * emb[rows]).sum(0))
    log_hz = head(emb, index)
    assert log_hz.shape == (3,)
    torch.testing.assert_close(log_hz, pooled @ head.hazard.weight[0])


def test_duplicating_a_patients_slices_leaves_its_log_hazard_unchanged() -> None:
    head = _head()
    emb = torch.randn(5, 5)
    index = torch.tensor([0, 0, 1, 1, 1])
    base = head(emb, index)
    dup_emb = torch.cat([emb, emb[2:]])  # every slice of patient 1 twice
    dup_index = torch.cat([index, index[2:]])
    torch.testing.assert_close(head(dup_emb, dup_index), base)
    # ... and the order of slices does not matter either.
    perm = torch.randperm(dup_emb.shape[0])
    torch.testing.assert_close(head(dup_emb[perm], dup_index[perm]), base)


def test_clinical_covariates_join_at_patient_level() -> None:
    head = _head(clinical=2)
    emb, index = torch.randn(4, 5), torch.tensor([0, 1, 1, 0])
    clinical = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    pooled, _ = head.pool(emb, index)
    ref = torch.cat([pooled, clinical], 1) @ head.hazard.weight[0]
    torch.testing.assert_close(head(emb, index, clinical), ref)
    with pytest.raises(ValueError, match=r"clinical: expected shape \(2, 2\)"):
        head(emb, index)
    with pytest.raises(ValueError, match="one row per patient"):
        head(emb, index, clinical[:1])


def test_clinical_rejected_when_head_has_none() -> None:
    with pytest.raises(ValueError, match="clinical_features=0"):
        _head()(torch.randn(2, 5), torch.tensor([0, 0]), torch.ones(1, 3))


@pytest.mark.parametrize(
    ("index", "match"),
    [
        (torch.tensor([0, 2, 2]), "at least one slice"),
        (torch.tensor([0, -1, 1]), "at least one slice"),
        (torch.tensor([0, 1]), "patient_index: expected int64"),
        (torch.tensor([0.0, 1.0, 1.0]), "patient_index: expected int64"),
    ],
)
def test_bad_patient_index_is_a_clear_error(index: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _head()(torch.randn(3, 5), index)


def test_survival_embedding_shape_and_dropout() -> None:
    head = PatientSurvivalHead(6, 5, dropout=0.5)
    x = torch.randn(4, 6)
    assert head.embed(x).shape == (4, 5)
    head.eval()
    torch.testing.assert_close(head.embed(x), head.embed(x))
    head.train()
    torch.manual_seed(1)
    assert not torch.allclose(head.embed(x), head.embed(x))


def test_gradients_flow_through_attention_and_embedding() -> None:
    head = _head()
    emb = torch.randn(4, 5, requires_grad=True)
    head(emb, torch.tensor([0, 0, 1, 1])).sum().backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    assert all(p.grad is not None for p in head.attention.parameters())
