"""Contract tests of the building blocks on tiny odd-sized tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tumorscope.models.blocks import ConvNormAct, DecoderStage, EncoderStage, make_norm

torch.set_num_threads(1)


def test_instance_norm_is_affine_and_normalises_per_sample_and_channel() -> None:
    norm = make_norm("instance", 3)
    assert isinstance(norm, nn.InstanceNorm2d) and norm.affine
    x = torch.randn(2, 3, 37, 41) * 5 + 2
    y = norm(x)
    ref = (x - x.mean(dim=(2, 3), keepdim=True)) / torch.sqrt(
        x.var(dim=(2, 3), unbiased=False, keepdim=True) + 1e-5
    )
    torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("channels", "groups"), [(8, 8), (12, 6), (3, 3), (16, 8), (7, 7)])
def test_group_norm_uses_largest_divisor_up_to_eight(channels: int, groups: int) -> None:
    norm = make_norm("group", channels)
    assert isinstance(norm, nn.GroupNorm)
    assert norm.num_groups == groups and channels % norm.num_groups == 0


def test_unknown_norm_is_rejected() -> None:
    with pytest.raises(ValueError, match="batch"):
        make_norm("batch", 4)  # type: ignore[arg-type]


def test_no_batch_norm_anywhere() -> None:
    modules = [
        ConvNormAct(1, 4, "group"),
        EncoderStage(1, 4, "instance", True),
        DecoderStage(8, 4, 4, "group"),
    ]
    for block in modules:
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in block.modules())


def test_conv_norm_act_shapes_on_odd_sizes() -> None:
    x = torch.randn(1, 1, 37, 41)
    assert ConvNormAct(1, 4, "instance")(x).shape == (1, 4, 37, 41)
    # Strided 3×3 conv with padding 1: ceil(n / 2).
    assert ConvNormAct(1, 4, "instance", stride=2)(x).shape == (1, 4, 19, 21)


def test_encoder_stage_downsamples_by_two() -> None:
    x = torch.randn(2, 3, 40, 48)
    assert EncoderStage(3, 6, "group", downsample=True)(x).shape == (2, 6, 20, 24)
    assert EncoderStage(3, 6, "group", downsample=False)(x).shape == (2, 6, 40, 48)


def test_decoder_stage_upsamples_and_joins_skip() -> None:
    stage = DecoderStage(in_channels=8, skip_channels=4, out_channels=4, norm="instance")
    y = stage(torch.randn(2, 8, 5, 6), torch.randn(2, 4, 10, 12))
    assert y.shape == (2, 4, 10, 12)
    # The skip connection matters: changing it changes the output.
    y2 = stage(torch.randn(2, 8, 5, 6), torch.randn(2, 4, 10, 12))
    assert not torch.allclose(y, y2)


def test_leaky_relu_output_follows_norm() -> None:
    block = ConvNormAct(2, 3, "instance").eval()
    x = torch.randn(1, 2, 9, 11)
    pre = block[1](block[0](x))
    torch.testing.assert_close(block(x), torch.where(pre > 0, pre, 0.01 * pre))
