"""U-Net encoder: feature maps fine → coarse, with their channel counts."""

from __future__ import annotations

import torch
from torch import nn

from tumorscope.models.blocks import EncoderStage, Norm


class Encoder(nn.Module):
    """Strided-conv encoder of ``depth + 1`` stages, channels doubling per stage.

    Stage ``i`` runs at stride ``2**i`` with ``base_channels * 2**i`` channels, so an input
    ``(B, in_channels, H, W)`` gives ``[f0 (B, c0, H, W), …, f_depth (B, c_depth, H / 2**depth,
    W / 2**depth)]``. H and W must be multiples of ``2**depth`` (checked by the caller,
    :class:`~tumorscope.models.multitask.MultiTaskNet`).

    Args:
        in_channels: Image channels.
        base_channels: Channels of stage 0.
        depth: Number of down-sampling steps.
        norm: ``instance`` or ``group`` normalisation.
    """

    def __init__(self, in_channels: int, base_channels: int, depth: int, norm: Norm) -> None:
        super().__init__()
        self.out_channels: list[int] = [base_channels * 2**i for i in range(depth + 1)]
        chans = [in_channels, *self.out_channels]
        self.stages: nn.ModuleList = nn.ModuleList(
            EncoderStage(chans[i], chans[i + 1], norm, downsample=i > 0) for i in range(depth + 1)
        )

    @property
    def depth(self) -> int:
        """Number of down-sampling steps."""
        return len(self.stages) - 1

    @property
    def last_stage(self) -> nn.Module:
        """The bottleneck stage (coarsest features), the Grad-CAM target layer."""
        return self.stages[-1]

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(features, pre_norm)``: every stage's output and its last convolution's output
        (before the final normalisation), both fine → coarse."""
        features, pre_norm = [], []
        for stage in self.stages:
            assert isinstance(stage, EncoderStage)
            x, pre = stage.forward_with_pre_norm(x)
            features.append(x)
            pre_norm.append(pre)
        return features, pre_norm

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of every stage, fine → coarse (see the class docstring for shapes)."""
        return self.encode(x)[0]
