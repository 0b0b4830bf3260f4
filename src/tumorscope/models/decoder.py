"""U-Net decoder with skip connections.

MC-dropout (DESIGN "Inference") re-samples only what follows the dropout layer. The
decoder's dropout (:attr:`Decoder.dropout`) acts on its full-resolution output, just
before the 1×1 segmentation head, so every decoder stage runs once per image and a sample
costs only the head: on CPU the last stage alone is about a third of a forward pass, which
would make 20 samples cost ~9 passes instead of < 3.
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
        dropout: Probability of the MC-dropout layer applied by the model to the decoder's
            output before the segmentation head (held here so the part owns it).
    """

    def __init__(self, encoder_channels: Sequence[int], norm: Norm, dropout: float = 0.0) -> None:
        super().__init__()
        # Channel (spatial) dropout: one Bernoulli draw per feature map, not per pixel, so a
        # sample's mask costs nothing next to the 1×1 head (per-pixel masks cost ~4 passes).
        self.dropout = nn.Dropout2d(dropout)
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

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Full decoder (no dropout): encoder maps fine → coarse to ``(B, c_0, H, W)``.

        Args:
            features: Encoder maps fine → coarse, ``f_i`` of shape ``(B, c_i, H / 2**i, W / 2**i)``.
        """
        x = features[-1]
        for k, stage in enumerate(self.stages):
            x = stage(x, features[-k - 2])
        return x
