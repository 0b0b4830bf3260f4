"""Segmentation losses against NumPy transcriptions of their papers' formulas, on odd sizes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss

from tumorscope.config import LossConfig
from tumorscope.losses.segmentation import make_segmentation_loss

torch.set_num_threads(1)
SMOOTH = 1e-5


def _data(regions: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, regions, 37, 41, generator=g, dtype=torch.float64) * 2
    target = (torch.rand(3, regions, 37, 41, generator=g) > 0.7).double()
    target[1] = 0  # a slice with an empty mask
    return logits, target


def _np(logits: torch.Tensor, target: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    return torch.sigmoid(logits).numpy(), target.numpy()


def _bce(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def _axes(batch: bool) -> tuple[int, ...]:
    # batch: sums over batch and pixels per region; per sample: over pixels per (sample, region)
    return (0, 2, 3) if batch else (2, 3)


def _tversky_per_region(
    p: np.ndarray, y: np.ndarray, alpha: float, beta: float, batch: bool = False
) -> np.ndarray:
    axes = _axes(batch)
    tp = (p * y).sum(axes)
    fp = (p * (1 - y)).sum(axes)
    fn = ((1 - p) * y).sum(axes)
    return 1 - (tp + SMOOTH) / (tp + alpha * fp + beta * fn + SMOOTH)


def _loss(name: str, **kw: float | bool) -> LossConfig:
    return dataclasses.replace(LossConfig(), segmentation=name, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("batch", [False, True])
def test_dice_bce_is_dice_plus_bce(batch: bool) -> None:
    logits, target = _data()
    p, y = _np(logits, target)
    axes = _axes(batch)  # soft Dice (Milletari et al. 2016)
    dice = 1 - (2 * (p * y).sum(axes) + SMOOTH) / (p.sum(axes) + y.sum(axes) + SMOOTH)
    ref = float(dice.mean()) + _bce(p, y)
    got = make_segmentation_loss(_loss("dice_bce", dice_batch=batch))(logits, target)
    assert got.item() == pytest.approx(ref, rel=1e-9)


def test_per_sample_dice_weighs_a_small_tumour_slice_like_a_large_one() -> None:
    # A false-positive island next to a small tumour costs that slice a third of its Dice;
    # batch Dice hides it behind the large tumour of the other slice.
    target = torch.zeros(2, 1, 32, 32, dtype=torch.float64)
    target[0, 0, 8:24, 8:24] = 1
    target[1, 0, 20:23, 20:23] = 1
    clean = (target * 2 - 1) * 12
    island = clean.clone()
    island[1, 0, 2:5, 2:5] = 12
    per_sample = make_segmentation_loss(_loss("dice_bce", dice_batch=False))
    batch = make_segmentation_loss(_loss("dice_bce", dice_batch=True))
    d_sample = (per_sample(island, target) - per_sample(clean, target)).item()
    d_batch = (batch(island, target) - batch(clean, target)).item()
    # Dice terms (the BCE is the same in both): per sample (1 - 2·9/27) / 2 slices = 0.167;
    # batch 1 - 530/539 = 0.017.
    assert d_sample - d_batch == pytest.approx(1 / 6 - 9 / 539, abs=2e-3)


def test_deep_supervision_weights_and_loss_match_a_manual_sum() -> None:
    from monai.losses import DeepSupervisionLoss

    from tumorscope.losses.segmentation import deep_supervision_weights

    w = deep_supervision_weights(3)
    assert w == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    g = torch.Generator().manual_seed(3)
    target = (torch.rand(2, 1, 32, 32, generator=g) > 0.6).double()
    scales = [torch.randn(2, 1, 32 // 2**k, 32 // 2**k, generator=g).double() for k in range(3)]
    loss_fn = make_segmentation_loss(_loss("dice_bce"))
    # nearest-exact downsampling of a 32² mask by 2 and 4 takes pixels 2i+1 and 4i+2 (pixel centres).
    manual = sum(
        wk * loss_fn(z, target[..., 2**k // 2 :: 2**k, 2**k // 2 :: 2**k] if k else target)
        for k, (wk, z) in enumerate(zip(w, scales, strict=True))
    )
    got = DeepSupervisionLoss(loss_fn, weights=w)(scales, target)  # type: ignore[arg-type]
    assert got.item() == pytest.approx(float(manual), rel=1e-6)  # MONAI computes in fp32


def test_dice_bce_uses_sigmoid_bce_for_several_regions() -> None:
    # MONAI's DiceCELoss switches to softmax cross-entropy for >1 channel; ours must not.
    logits, target = _data(regions=3)
    ours = make_segmentation_loss(_loss("dice_bce"))(logits, target)
    monai = DiceCELoss(sigmoid=True, batch=True)(logits, target)
    assert abs(ours.item() - monai.item()) > 1e-3


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_focal_matches_lin_et_al(gamma: float) -> None:
    logits, target = _data()
    p, y = _np(logits, target)
    pt = np.where(y == 1, p, 1 - p)
    ref = float(np.mean(-((1 - pt) ** gamma) * np.log(pt)))
    got = make_segmentation_loss(_loss("focal", focal_gamma=gamma))(logits, target)
    # MONAI's FocalLoss computes in float32.
    assert got.item() == pytest.approx(ref, rel=1e-6)
    if gamma == 0.0:
        assert got.item() == pytest.approx(_bce(p, y), rel=1e-6)


@pytest.mark.parametrize("batch", [False, True])
def test_tversky_weights_false_positives_and_negatives(batch: bool) -> None:
    logits, target = _data()
    p, y = _np(logits, target)
    ref = float(_tversky_per_region(p, y, 0.3, 0.7, batch).mean())
    cfg = _loss("tversky", tversky_alpha=0.3, tversky_beta=0.7, dice_batch=batch)
    got = make_segmentation_loss(cfg)(logits, target)
    assert got.item() == pytest.approx(ref, rel=1e-9)


def test_focal_tversky_follows_abraham_and_khan() -> None:
    logits, target = _data()
    p, y = _np(logits, target)
    gamma = 4 / 3
    ref = float((_tversky_per_region(p, y, 0.3, 0.7) ** (1 / gamma)).mean())
    got = make_segmentation_loss(_loss("focal_tversky", focal_gamma=gamma))(logits, target)
    assert got.item() == pytest.approx(ref, rel=1e-9)
    tversky = make_segmentation_loss(_loss("tversky"))(logits, target)
    assert make_segmentation_loss(_loss("focal_tversky", focal_gamma=1.0))(
        logits, target
    ).item() == pytest.approx(tversky.item(), rel=1e-12)


@pytest.mark.parametrize("name", ["dice_bce", "focal", "tversky", "focal_tversky"])
def test_perfect_prediction_scores_lower_and_gradients_flow(name: str) -> None:
    _, target = _data()
    loss_fn = make_segmentation_loss(_loss(name))
    good = (target * 2 - 1) * 20
    bad = torch.zeros_like(target, requires_grad=True)
    loss_bad = loss_fn(bad, target)
    assert loss_fn(good, target).item() < loss_bad.item()
    loss_bad.backward()
    assert (
        bad.grad is not None and bool(torch.isfinite(bad.grad).all()) and bad.grad.abs().sum() > 0
    )


def test_unknown_loss_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"loss\.segmentation: 'lovasz'"):
        make_segmentation_loss(_loss("lovasz"))
    with pytest.raises(ValueError, match="focal_gamma"):
        make_segmentation_loss(_loss("focal_tversky", focal_gamma=0.0))
