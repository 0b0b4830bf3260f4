"""U-Net decoder with skip connections, split so the last stage can be re-run alone.

MC-dropout (DESIGN "Inference") re-samples only what follows the dropout layer: every
decoder stage but the last runs once per image (:meth:`Decoder.forward_trunk`), the last
stage runs once per sample (:meth:`Decoder.forward_last`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tumorscope.models.blocks import DecoderStage, Norm


class Decoder(nn.Module):
    """Decoder mirroring an encoder: ``depth`` upsampling stages back to full resolution.

    Args:
        encoder_channels: Channels of the encoder feature maps, fine → coarse
            (``Encoder.out_channels``, length ``depth + 1``).
        norm: ``instance`` or ``group`` normalisation.
        dropout: Dropout probability on the input of the last stage (an MC-dropout layer).
    """

    def __init__(self, encoder_channels: Sequence[int], norm: Norm, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        if len(encoder_channels) < 2:
            raise ValueError(
                f"encoder_channels: need at least 2 feature maps, got {list(encoder_channels)}"
            )
        chans = list(encoder_channels)
        # Stages ordered coarse → fine; stage k maps level depth-k to level depth-k-1.
        self.stages = nn.ModuleList(
            DecoderStage(chans[level], chans[level - 1], chans[level - 1], norm)
            for level in range(len(chans) - 1, 0, -1)
        )
        self.out_channels: int = chans[0]
        self.trunk_channels: int = chans[1]

    def forward_trunk(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Every stage but the last.

        Args:
            features: Encoder maps fine → coarse, ``f_i`` of shape ``(B, c_i, H / 2**i, W / 2**i)``.

        Returns:
            ``(B, c_1, H / 2, W / 2)``: the input of the last stage (``f_1`` itself when depth is 1).
        """
        x = features[-1]
        for k, stage in enumerate(self.stages[:-1]):
            x = stage(x, features[-k - 2])
        return x

    def forward_last(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Dropout, then the last stage: ``(B, c_1, H / 2, W / 2)`` and skip ``f_0`` → ``(B, c_0, H, W)``."""
        return self.stages[-1](self.dropout(x), skip)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Full decoder: encoder maps fine → coarse to ``(B, c_0, H, W)``."""
        return self.forward_last(self.forward_trunk(features), features[0])
