"""Encoder and decoder contracts: shapes fine → coarse, skip connections, trunk/last split."""

from __future__ import annotations

import pytest
import torch

from tumorscope.models.decoder import Decoder
from tumorscope.models.encoder import Encoder

torch.set_num_threads(1)


def test_encoder_feature_maps_fine_to_coarse() -> None:
    enc = Encoder(in_channels=2, base_channels=4, depth=3, norm="instance")
    assert enc.out_channels == [4, 8, 16, 32]
    feats = enc(torch.randn(2, 2, 40, 48))
    assert [tuple(f.shape) for f in feats] == [
        (2, 4, 40, 48),
        (2, 8, 20, 24),
        (2, 16, 10, 12),
        (2, 32, 5, 6),
    ]
    assert enc.depth == 3
    assert enc.last_stage is enc.stages[-1]


def test_decoder_restores_full_resolution() -> None:
    enc = Encoder(1, 4, 3, "group")
    dec = Decoder(enc.out_channels, "group")
    feats = enc(torch.randn(1, 1, 40, 48))
    out = dec(feats)
    assert out.shape == (1, dec.out_channels, 40, 48) and dec.out_channels == 4


def test_decoder_depth_one() -> None:
    enc = Encoder(1, 4, 1, "instance")
    dec = Decoder(enc.out_channels, "instance")
    feats = enc(torch.randn(1, 1, 6, 10))
    assert dec(feats).shape == (1, 4, 6, 10)


def test_decoder_uses_every_skip_connection() -> None:
    torch.manual_seed(0)
    enc = Encoder(1, 4, 3, "instance")
    dec = Decoder(enc.out_channels, "instance").eval()
    feats = [f.detach() for f in enc(torch.randn(1, 1, 16, 24))]
    base = dec(feats)
    for i in range(len(feats) - 1):
        changed = list(feats)
        changed[i] = changed[i] + torch.randn_like(changed[i])
        assert not torch.allclose(dec(changed), base), f"skip {i} has no effect"


def test_decoder_is_deterministic_in_train_mode() -> None:
    # The decoder's dropout is applied by the model's tail, never inside the decoder.
    torch.manual_seed(0)
    enc = Encoder(1, 4, 3, "instance")
    dec = Decoder(enc.out_channels, "instance", dropout=0.5).train()
    with torch.no_grad():
        feats = enc(torch.randn(1, 1, 16, 16))
        y = dec(feats)
        torch.testing.assert_close(dec(feats), y)
        draws = [dec.dropout(y) for _ in range(8)]
        assert any(not torch.allclose(draws[0], d) for d in draws[1:])
        # Channel dropout: every feature map is either dropped whole or kept (scaled by 2).
        for d in draws:
            kept = d.abs().sum(dim=(2, 3)) > 0
            torch.testing.assert_close(d[kept], 2 * y.expand_as(d)[kept])


def test_decoder_needs_two_feature_maps() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        Decoder([8], "instance")
