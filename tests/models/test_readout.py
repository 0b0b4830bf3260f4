"""The slice heads' readout: pre-normalisation pooling, the segmentation evidence, deep
supervision outputs; each against an independent computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from tumorscope.models.readout import EVIDENCE_TOPK, pooled_readout, seg_evidence
from tumorscope.models.registry import create_model, size_config

torch.set_num_threads(1)


def test_seg_evidence_is_top_k_mean_and_log_mean_exp_per_region() -> None:
    z = torch.randn(3, 2, 9, 11, generator=torch.Generator().manual_seed(0)) * 4
    got = seg_evidence(z).numpy()
    flat = z.numpy().reshape(3, 2, -1).astype(np.float64)
    top = np.sort(flat, axis=-1)[..., -EVIDENCE_TOPK:].mean(axis=-1)
    lme = logsumexp(flat, axis=-1) - np.log(flat.shape[-1])
    np.testing.assert_allclose(got, np.concatenate([top, lme], axis=1), rtol=1e-5, atol=1e-5)
    # Fewer pixels than k: the mean of all of them.
    tiny = torch.randn(1, 1, 3, 3)
    assert seg_evidence(tiny)[0, 0].item() == pytest.approx(float(tiny.mean()), abs=1e-6)


def test_readout_pools_the_last_two_stages_before_their_norm() -> None:
    torch.manual_seed(0)
    model = create_model(size_config("tiny", heads=("tumour",))).eval()
    seen: list[torch.Tensor] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, o: seen.append(o)) for m in model.readout_layers
    ]
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        trunk = model.trunk(x, ("tumour",))
    for h in hooks:
        h.remove()
    assert len(seen) == 2 and seen[1].shape[-1] == 32 // 2**3
    expected = torch.cat(
        [seen[0].mean((2, 3)), seen[0].amax((2, 3)), seen[1].mean((2, 3)), seen[1].amax((2, 3))], 1
    )
    torch.testing.assert_close(trunk.readout, expected)
    torch.testing.assert_close(pooled_readout(seen), expected)
    # The pre-norm maps keep each slice's scale; the normalised stage output does not.
    assert not torch.allclose(seen[1].mean((2, 3)), trunk.features[-1].mean((2, 3)))


@pytest.mark.parametrize("evidence", [True, False])
def test_the_tumour_logit_reads_the_segmentation_map_only_with_evidence(evidence: bool) -> None:
    torch.manual_seed(1)
    model = create_model(size_config("tiny", heads=("tumour",), seg_evidence=evidence)).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        before = model(x, ("tumour",)).tumour_logit
        model.segmentation_head.conv.bias.add_(5.0)  # the map says "tumour everywhere"
        after = model(x, ("tumour",)).tumour_logit
    assert before is not None and after is not None
    assert (not torch.allclose(before, after)) is evidence


@pytest.mark.parametrize("grad", [True, False])
def test_evidence_grad_decides_whether_the_slice_loss_reaches_the_segmentation_map(
    grad: bool,
) -> None:
    torch.manual_seed(3)
    cfg = size_config("tiny", heads=("tumour",), evidence_grad=grad)
    model = create_model(cfg).eval()
    x = torch.randn(2, 1, 32, 32)
    out = model(x, ("tumour",))
    assert out.tumour_logit is not None
    out.tumour_logit.sum().backward()
    bias = model.segmentation_head.conv.bias.grad
    # Only the evidence links the tumour logit to the segmentation head.
    assert (bias is not None and float(bias.abs().sum()) > 0) is grad
    # The readout side trains either way, and the forward value does not change.
    assert model.tumour_head.evidence is not None
    assert model.tumour_head.evidence.weight.grad is not None
    twin = create_model(size_config("tiny", heads=("tumour",), evidence_grad=not grad)).eval()
    twin.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(twin(x, ("tumour",)).tumour_logit, out.tumour_logit.detach())


def test_deep_supervision_outputs_only_in_training() -> None:
    torch.manual_seed(2)
    model = create_model(size_config("demo", regions=("WT", "TC"), deep_supervision=2))
    x = torch.randn(2, 1, 64, 64)
    out = model.train()(x, ("segmentation",))
    assert out.seg_aux_logits is not None
    assert [tuple(z.shape) for z in out.seg_aux_logits] == [(2, 2, 32, 32), (2, 2, 16, 16)]
    assert model.eval()(x, ("segmentation",)).seg_aux_logits is None
    off = create_model(size_config("demo", deep_supervision=0)).train()
    assert off(x, ("segmentation",)).seg_aux_logits is None
    assert len(off.segmentation_head.aux_convs) == 0
