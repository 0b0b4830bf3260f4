"""Structured pruning (tumorscope.export.prune): channels removed physically, outputs kept."""

from __future__ import annotations

import torch
from torch import nn

from tumorscope.export.prune import macs_per_slice, prune
from tumorscope.models.registry import create_model, size_config


def test_pruning_removes_channels_and_keeps_the_heads_inputs() -> None:
    torch.manual_seed(0)
    model = create_model(size_config("tiny", heads=("tumour", "survival"))).eval()
    pruned = prune(model, 0.5, 32)
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    kept = dict(pruned.named_modules())
    narrower = [n for n, m in convs if kept[n].out_channels < m.out_channels]
    assert narrower  # physically smaller weight tensors
    assert all(kept[n].weight.shape[0] == kept[n].out_channels for n, _ in convs)
    for layer, orig in zip(pruned.readout_layers, model.readout_layers, strict=True):
        assert layer.out_channels == orig.out_channels  # the heads keep their inputs
    assert pruned.segmentation_head.conv.out_channels == model.segmentation_head.conv.out_channels
    with torch.no_grad():
        a, b = model(torch.randn(3, 1, 32, 32)), pruned(torch.randn(3, 1, 32, 32))
    assert b.seg_logits.shape == a.seg_logits.shape
    assert b.tumour_logit.shape == a.tumour_logit.shape
    assert b.survival_embedding.shape == a.survival_embedding.shape
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    assert macs_per_slice(pruned, 32) < 0.6 * macs_per_slice(model, 32)
    # the original is untouched
    assert all(dict(model.named_modules())[n].out_channels == m.out_channels for n, m in convs)
