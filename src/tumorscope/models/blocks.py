"""Small named building blocks of the U-Net-like network (conv, norm, activation, stages).

Normalisation is instance or group norm, never batch norm: batches are small, sources are
mixed and CPU DDP has no SyncBatchNorm (DESIGN "Model"). The blocks follow nnU-Net's
conv → norm → LeakyReLU pattern (Isensee et al., Nature Methods 2021).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Norm = Literal["instance", "group"]

# nnU-Net's activation slope; a module constant because it is part of the architecture.
LEAKY_SLOPE = 0.01
# Group norm uses at most this many groups (Wu & He 2018 default).
MAX_GROUPS = 8


def make_norm(norm: Norm, channels: int) -> nn.Module:
    """Normalisation layer with learnable affine parameters.

    Args:
        norm: ``instance`` (per-sample, per-channel) or ``group``.
        channels: Number of channels normalised.

    Returns:
        ``nn.InstanceNorm2d(affine=True)`` or ``nn.GroupNorm`` with the largest group count
        ``<= MAX_GROUPS`` that divides ``channels``.

    Raises:
        ValueError: for an unknown ``norm``.
    """
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "group":
        groups = next(g for g in range(min(MAX_GROUPS, channels), 0, -1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    raise ValueError(f"norm: {norm!r} is not one of ['instance', 'group']")


class ConvNormAct(nn.Sequential):
    """3×3 convolution → norm → LeakyReLU.

    Maps ``(B, in_channels, H, W)`` to ``(B, out_channels, H / stride, W / stride)``.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: Norm, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            make_norm(norm, out_channels),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
        )


class EncoderStage(nn.Module):
    """Two :class:`ConvNormAct`; the first one strided to halve H and W when ``downsample``.

    Maps ``(B, in_channels, H, W)`` to ``(B, out_channels, H', W')`` with ``H' = H / 2``
    when ``downsample`` else ``H``. The second block is split in two child modules,
    ``pre`` (first block and the second convolution) and ``post`` (its norm and
    activation), so :meth:`forward_with_pre_norm` can hand out the pre-normalisation map
    while every part still runs through its module call (forward hooks, Grad-CAM).
    """

    def __init__(self, in_channels: int, out_channels: int, norm: Norm, downsample: bool) -> None:
        super().__init__()
        self.pre = nn.Sequential(
            ConvNormAct(in_channels, out_channels, norm, stride=2 if downsample else 1),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        )
        self.post = nn.Sequential(
            make_norm(norm, out_channels), nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
        )

    def forward_with_pre_norm(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(output, pre_norm)``: the stage's output and its last convolution's output."""
        pre = self.pre(x)
        return self.post(pre), pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The stage's output."""
        return self.forward_with_pre_norm(x)[0]


class DecoderStage(nn.Module):
    """Transposed-conv ×2 upsampling, concatenation with the skip, two :class:`ConvNormAct`.

    ``forward(x (B, in_channels, h, w), skip (B, skip_channels, 2h, 2w))`` returns
    ``(B, out_channels, 2h, 2w)``; :meth:`first_half` and :meth:`second_half` split it
    between the two blocks (the decoder's MC-dropout layer sits there in its last stage).
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, norm: Norm) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.first = ConvNormAct(out_channels + skip_channels, out_channels, norm)
        self.second = ConvNormAct(out_channels, out_channels, norm)

    def first_half(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Upsample ``x``, join ``skip`` on channels, first block."""
        return self.first(torch.cat([self.up(x), skip], dim=1))

    def second_half(self, h: torch.Tensor) -> torch.Tensor:
        """The second block."""
        return self.second(h)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Upsample ``x``, join ``skip`` on channels and convolve."""
        return self.second_half(self.first_half(x, skip))
