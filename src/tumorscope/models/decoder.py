"""U-Net decoder with skip connections.

MC-dropout (DESIGN "Inference") re-samples only what follows the dropout layer. The
decoder's channel dropout (:attr:`Decoder.dropout`) sits inside its last stage, between
that stage's two convolutions: every other decoder stage and the first half of the last
one run once per image, and a sample costs one full-resolution convolution and the 1×1
heads. It is not on the segmentation head's input, where it would cost Dice (the head is
one 1×1 convolution: a dropped channel there is a missing input at test time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from tumorscope.models.blocks import DecoderStage, Norm


@dataclass
class DecoderTrunk:
    """The deterministic part of the decoder, computed once per image.

    Attributes:
        coarse: Outputs of every stage but the last, coarse → fine (the deep-supervision
            inputs), ``(B, c_k, H / 2**k, W / 2**k)`` for ``k = depth-1 … 1``.
        mid: ``(B, c_0, H, W)`` the last stage's first block (input of the dropout layer).
    """

    coarse: list[torch.Tensor]
    mid: torch.Tensor


class Decoder(nn.Module):
    """Decoder mirroring an encoder: ``depth`` upsampling stages back to full resolution.

    Args:
        encoder_channels: Channels of the encoder feature maps, fine → coarse
            (``Encoder.out_channels``, length ``depth + 1``).
        norm: ``instance`` or ``group`` normalisation.
        dropout: Probability of the MC channel-dropout layer inside the last stage.
    """

    def __init__(self, encoder_channels: Sequence[int], norm: Norm, dropout: float = 0.0) -> None:
        super().__init__()
        # Channel (spatial) dropout: one Bernoulli draw per feature map, not per pixel.
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
        # Channels of the coarse stage outputs, coarse → fine (deep-supervision heads).
        self.coarse_channels: list[int] = chans[1:-1][::-1]

    def trunk(self, features: Sequence[torch.Tensor]) -> DecoderTrunk:
        """Every stage but the last one's second block (no dropout).

        Args:
            features: Encoder maps fine → coarse, ``f_i`` of shape ``(B, c_i, H / 2**i, W / 2**i)``.
        """
        x = features[-1]
        coarse: list[torch.Tensor] = []
        last = len(self.stages) - 1
        for k, stage in enumerate(self.stages):
            assert isinstance(stage, DecoderStage)
            if k == last:
                return DecoderTrunk(coarse=coarse, mid=stage.first_half(x, features[-k - 2]))
            x = stage(x, features[-k - 2])
            coarse.append(x)
        raise AssertionError("unreachable: a decoder has at least one stage")

    def finish(self, trunk: DecoderTrunk) -> torch.Tensor:
        """Dropout, then the last stage's second block: ``(B, c_0, H, W)``."""
        last = self.stages[-1]
        assert isinstance(last, DecoderStage)
        return last.second_half(self.dropout(trunk.mid))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """The whole decoder: encoder maps fine → coarse to ``(B, c_0, H, W)``."""
        return self.finish(self.trunk(features))
