"""Segmentation losses on region logits (one sigmoid per region), selected by config.

``dice_bce`` (default), ``focal``, ``tversky`` and ``focal_tversky`` — MONAI's losses where
they fit. Inputs are ``(B, R, H, W)`` logits and ``(B, R, H, W)`` binary masks of the
samples that carry a mask (the caller drops the others). Dice and Tversky are per sample
by default (``loss.dice_batch: false``, MONAI's default): every slice's ratio counts
once, so a false-positive island on a tumour-free slice costs as much as a missed small
tumour. With deep supervision (:func:`deep_supervision_weights`) MONAI's
``DeepSupervisionLoss`` sums the loss over the decoder scales.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.losses import DiceLoss, FocalLoss, TverskyLoss
from torch import nn

from tumorscope.config import LossConfig

SegLossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# MONAI's smoothing constants.
SMOOTH = 1e-5


def deep_supervision_weights(levels: int) -> list[float]:
    """nnU-Net's deep-supervision weights: ``1/2**k`` for scale ``k``, normalised to sum 1."""
    raw = [0.5**k for k in range(max(1, levels))]
    return [w / sum(raw) for w in raw]


class DiceBCELoss(nn.Module):
    """Soft Dice (sigmoid; per sample, or over the batch) + binary cross-entropy, weighted equally.

    MONAI's ``DiceCELoss`` falls back to softmax cross-entropy when there is more than one
    channel, which is wrong for independent sigmoid regions (WT/TC/ET overlap), so the two
    MONAI/PyTorch parts are summed here instead.

    Args:
        batch: One Dice ratio over the whole batch instead of the mean of per-sample ratios.
    """

    def __init__(self, batch: bool = False) -> None:
        super().__init__()
        self.dice = DiceLoss(sigmoid=True, batch=batch, smooth_nr=SMOOTH, smooth_dr=SMOOTH)
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss for ``(B, R, H, W)`` logits and masks."""
        return self.dice(logits, target) + self.bce(logits, target)


class FocalTverskyLoss(nn.Module):
    """Focal Tversky loss (Abraham & Khan, ISBI 2019): ``mean_r (1 − TI_r)^(1/γ)``.

    MONAI has no Focal Tversky loss; this raises MONAI's per-region batch Tversky loss
    ``1 − TI_r`` to ``1/γ`` (the paper's γ > 1, e.g. 4/3, emphasises hard regions).

    Args:
        alpha: Weight of false positives.
        beta: Weight of false negatives.
        gamma: Focal exponent γ (``focal_gamma``); γ = 1 gives the Tversky loss.
    """

    def __init__(self, alpha: float, beta: float, gamma: float, batch: bool = False) -> None:
        super().__init__()
        if gamma <= 0:
            raise ValueError(f"loss.focal_gamma: must be > 0 for focal_tversky, got {gamma}")
        self.tversky = TverskyLoss(
            sigmoid=True,
            alpha=alpha,
            beta=beta,
            batch=batch,
            reduction="none",
            smooth_nr=SMOOTH,
            smooth_dr=SMOOTH,
        )
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss for ``(B, R, H, W)`` logits and masks."""
        per_item = self.tversky(logits, target).clamp(min=0)
        return per_item.pow(1.0 / self.gamma).mean()


def make_segmentation_loss(cfg: LossConfig) -> SegLossFn:
    """The segmentation loss ``cfg.segmentation`` names.

    Args:
        cfg: Loss configuration (``segmentation``, ``focal_gamma``, ``tversky_alpha/beta``).

    Returns:
        ``loss(logits (B, R, H, W), target (B, R, H, W)) -> scalar``; sigmoid per region is
        applied inside.

    Raises:
        ValueError: for an unknown loss name.
    """
    name = cfg.segmentation
    if name == "dice_bce":
        return DiceBCELoss(batch=cfg.dice_batch)
    if name == "focal":
        return FocalLoss(gamma=cfg.focal_gamma, use_softmax=False)
    if name == "tversky":
        return TverskyLoss(
            sigmoid=True,
            alpha=cfg.tversky_alpha,
            beta=cfg.tversky_beta,
            batch=cfg.dice_batch,
            smooth_nr=SMOOTH,
            smooth_dr=SMOOTH,
        )
    if name == "focal_tversky":
        return FocalTverskyLoss(
            cfg.tversky_alpha, cfg.tversky_beta, cfg.focal_gamma, batch=cfg.dice_batch
        )
    raise ValueError(
        f"loss.segmentation: {name!r} is not one of ['dice_bce', 'focal', 'tversky', 'focal_tversky']"
    )
