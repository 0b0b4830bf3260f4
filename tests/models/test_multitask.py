"""MultiTaskNet contracts: output type, padding rule, trunk/tail split, freezing, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tumorscope.config import PARTS, ConfigError, ModelConfig
from tumorscope.models.multitask import ModelOutput, MultiTaskNet, pad_to_multiple, unpad
from tumorscope.models.registry import MODEL_SIZES, create_model, size_config

torch.set_num_threads(1)

ALL_HEADS = ("tumour", "tumour_type", "survival")


def _model(**overrides: object) -> MultiTaskNet:
    torch.manual_seed(0)
    return create_model(size_config("tiny", heads=ALL_HEADS, **overrides))


def test_registry_sizes_and_errors() -> None:
    assert set(MODEL_SIZES) == {"tiny", "demo", "brain-mri"}
    assert size_config("demo").base_channels == 16 and size_config("brain-mri").depth == 5
    with pytest.raises(ConfigError, match="'huge'"):
        size_config("huge")
    with pytest.raises(ConfigError, match=r"model\.base_filters"):
        size_config("tiny", base_filters=4)
    with pytest.raises(ConfigError, match=r"model\.depth"):
        size_config("tiny", depth=9)


def test_forward_returns_logits_for_every_task() -> None:
    model = _model(regions=("WT", "TC", "ET")).eval()
    out = model(torch.randn(2, 1, 32, 40))
    assert isinstance(out, ModelOutput)
    assert out.seg_logits is not None and out.seg_logits.shape == (2, 3, 32, 40)
    assert out.tumour_logit is not None and out.tumour_logit.shape == (2, 1)
    assert out.tumour_type_logits is not None and out.tumour_type_logits.shape == (2, 4)
    assert out.survival_embedding is not None and out.survival_embedding.shape == (2, 8)
    # Logits, not probabilities: values outside [0, 1] occur.
    assert bool((out.seg_logits < 0).any())


def test_tasks_not_asked_for_are_none_and_decoder_skipped() -> None:
    model = _model(seg_evidence=False).eval()
    calls: list[int] = []
    model.decoder.stages[0].register_forward_hook(lambda *_: calls.append(1))
    out = model(torch.randn(1, 1, 16, 16), tasks=("tumour",))
    assert out.tumour_logit is not None
    assert (
        out.seg_logits is None and out.tumour_type_logits is None and out.survival_embedding is None
    )
    assert calls == []
    # With the segmentation evidence the tumour decision needs the decoder.
    with_evidence = _model().eval()
    with_evidence.decoder.stages[0].register_forward_hook(lambda *_: calls.append(1))
    with_evidence(torch.randn(1, 1, 16, 16), tasks=("tumour",))
    assert calls == [1]


def test_unknown_or_missing_task_is_an_error() -> None:
    model = create_model(size_config("tiny", heads=("tumour",)))
    assert model.tasks == ("segmentation", "tumour")
    assert "tumour_type_head" not in model.parts
    with pytest.raises(ValueError, match="'survival' has no head"):
        model(torch.randn(1, 1, 16, 16), tasks=("survival",))
    with pytest.raises(ValueError, match="unknown task 'mask'"):
        model(torch.randn(1, 1, 16, 16), tasks=("mask",))


def test_odd_size_is_rejected_with_the_shape_and_multiple() -> None:
    model = _model()
    with pytest.raises(ValueError, match=r"multiples of 8.*\(1, 1, 37, 41\)"):
        model(torch.randn(1, 1, 37, 41))
    with pytest.raises(ValueError, match=r"expected shape \(B, 1, H, W\)"):
        model(torch.randn(1, 2, 16, 16))


def test_instance_norm_needs_more_than_one_bottleneck_pixel() -> None:
    with pytest.raises(ValueError, match=r"1×1 bottleneck at depth 3.*at least 16"):
        _model()(torch.randn(1, 1, 8, 8))
    assert _model()(torch.randn(1, 1, 8, 16)).seg_logits is not None
    assert _model(norm="group")(torch.randn(1, 1, 8, 8)).seg_logits is not None


@pytest.mark.parametrize("norm", ["instance", "group"])
def test_two_channel_petct_input(norm: str) -> None:
    model = _model(in_channels=2, norm=norm, regions=("GTVp", "GTVn")).eval()
    out = model(torch.randn(3, 2, 24, 32))
    assert out.seg_logits is not None and out.seg_logits.shape == (3, 2, 24, 32)
    assert out.tumour_logit is not None and out.tumour_logit.shape == (3, 1)


def test_odd_size_runs_through_pad_and_unpad() -> None:
    model = _model().eval()
    x = torch.randn(1, 1, 37, 41)
    xp, pad = pad_to_multiple(x, model.size_multiple)
    assert xp.shape == (1, 1, 40, 48) and pad == (3, 4, 1, 2)
    torch.testing.assert_close(unpad(xp, pad), x)
    out = model(xp)
    assert out.seg_logits is not None
    assert unpad(out.seg_logits, pad).shape == (1, 1, 37, 41)
    same, none = pad_to_multiple(torch.zeros(1, 1, 16, 8), 8)
    assert same.shape == (1, 1, 16, 8) and none == (0, 0, 0, 0)


def test_tail_of_trunk_equals_forward_in_eval() -> None:
    model = _model(dropout=0.3).eval()
    x = torch.randn(2, 1, 24, 16)
    full, split = model(x), model.tail(model.trunk(x))
    for name in ("seg_logits", "tumour_logit", "tumour_type_logits", "survival_embedding"):
        torch.testing.assert_close(getattr(split, name), getattr(full, name))


def test_trunk_is_deterministic_and_dropout_lives_in_the_tail() -> None:
    model = _model(dropout=0.5).train()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        t1, t2 = model.trunk(x), model.trunk(x)
        assert t1.decoder is not None and t2.decoder is not None
        torch.testing.assert_close(t1.decoder.mid, t2.decoder.mid)
        torch.testing.assert_close(t1.readout, t2.readout)
        a, b = model.tail(t1), model.tail(t1)
    for name in ("seg_logits", "tumour_logit", "tumour_type_logits", "survival_embedding"):
        assert not torch.allclose(getattr(a, name), getattr(b, name)), name
    trunk_modules = {id(m) for m in model.encoder.modules()}
    trunk_modules |= {id(m) for stage in model.decoder.stages[:-1] for m in stage.modules()}
    trunk_modules |= {id(m) for m in model.decoder.stages[-1].first.modules()}
    assert len(model.dropout_layers) == 4
    assert all(id(d) not in trunk_modules for d in model.dropout_layers)


def test_gradcam_layer_is_the_bottleneck() -> None:
    model = _model()
    layer = model.gradcam_layer
    assert layer is model.encoder.stages[-1].pre
    seen: list[torch.Size] = []
    layer.register_forward_hook(lambda _m, _i, o: seen.append(o.shape))
    model(torch.randn(1, 1, 32, 16))
    assert seen == [torch.Size([1, 64, 4, 2])]


def test_parameter_counts_per_part_sum_to_total() -> None:
    model = _model()
    counts = model.parameter_counts()
    assert set(counts) == {*PARTS, "total"}
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert sum(v for k, v in counts.items() if k != "total") == counts["total"]
    # Segmentation head: 1×1 conv from 8 channels to 1 region + bias, and the two
    # deep-supervision heads on the 16- and 32-channel decoder scales.
    assert counts["segmentation_head"] == (8 + 1) + (16 + 1) + (32 + 1)
    # Tumour head: the readout pools the last two stages (32 and 64 channels) by average
    # and max (192 features): layer norm (2 x 192) + linear (192 + 1) + evidence (2, no bias).
    assert counts["tumour_head"] == 2 * 192 + 193 + 2


def test_freeze_keeps_frozen_parts_in_eval_after_train() -> None:
    # Without the segmentation evidence: that comes from the (unfrozen) decoder's dropout.
    model = _model(dropout=0.5, seg_evidence=False)
    model.freeze("encoder")
    model.freeze("tumour_head")
    model.train()
    assert model.frozen == ("encoder", "tumour_head")
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(not m.training for m in model.encoder.modules())
    assert all(not m.training for m in model.tumour_head.modules())  # type: ignore[union-attr]
    assert model.decoder.training and model.tumour_type_head.training  # type: ignore[union-attr]
    # A frozen head's dropout is off: its output is deterministic in train mode.
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x).tumour_logit, model(x).tumour_logit)
    model.unfreeze("encoder")
    assert all(p.requires_grad for p in model.encoder.parameters())
    assert all(m.training for m in model.encoder.modules())
    with pytest.raises(ValueError, match="'neck' is not one of"):
        model.freeze("neck")


def test_frozen_group_norm_part_is_unaffected_by_a_training_step() -> None:
    model = _model(norm="group")
    model.freeze("encoder")
    before = [p.clone() for p in model.encoder.parameters()]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    out = model.train()(torch.randn(2, 1, 16, 16))
    assert out.seg_logits is not None and out.tumour_logit is not None
    (out.seg_logits.mean() + out.tumour_logit.sum()).backward()
    opt.step()
    for b, p in zip(before, model.encoder.parameters(), strict=True):
        torch.testing.assert_close(b, p)


def _grad_parts(model: MultiTaskNet) -> set[str]:
    return {
        name
        for name, part in model.parts.items()
        if any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in part.parameters())
    }


@pytest.mark.parametrize(
    ("task", "own"),
    [
        ("segmentation", {"decoder", "segmentation_head"}),
        # The tumour decisions read the segmentation evidence too.
        ("tumour", {"tumour_head", "decoder", "segmentation_head"}),
        ("tumour_type", {"tumour_type_head", "decoder", "segmentation_head"}),
        ("survival", {"survival_head"}),
    ],
)
def test_each_loss_reaches_only_its_own_head(task: str, own: set[str]) -> None:
    model = _model().train()
    x = torch.randn(3, 1, 16, 16)
    out = model(x)
    fields = {
        "segmentation": "seg_logits",
        "tumour": "tumour_logit",
        "tumour_type": "tumour_type_logits",
    }
    if task == "survival":
        assert out.survival_embedding is not None and model.survival_head is not None
        loss = model.survival_head(out.survival_embedding, torch.tensor([0, 0, 1])).sum()
    else:
        loss = getattr(out, fields[task]).square().mean()
    loss.backward()
    assert _grad_parts(model) == own | {"encoder"}
    # With the encoder frozen, only the task's own parts receive gradients.
    model.zero_grad(set_to_none=True)
    model.freeze("encoder")
    out = model(x)
    if task == "survival":
        assert out.survival_embedding is not None and model.survival_head is not None
        loss = model.survival_head(out.survival_embedding, torch.tensor([0, 0, 1])).sum()
    else:
        loss = getattr(out, fields[task]).square().mean()
    loss.backward()
    assert _grad_parts(model) == own
    assert all(p.grad is None for p in model.encoder.parameters())


def test_model_config_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"model\.heads"):
        MultiTaskNet(ModelConfig(heads=("grade",)))


def test_parameters_are_finite_and_outputs_depend_on_input() -> None:
    model = _model().eval()
    a, b = model(torch.randn(1, 1, 16, 16)), model(torch.randn(1, 1, 16, 16))
    assert a.tumour_logit is not None and b.tumour_logit is not None
    assert not torch.allclose(a.tumour_logit, b.tumour_logit)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
