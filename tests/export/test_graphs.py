"""The exported graphs against the PyTorch network they come from, run by onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tumorscope.export.graphs import (
    PatientGraph,
    TailGraph,
    TrunkGraph,
    dropout_masks,
    export_graphs,
)
from tumorscope.inference.ood import DomainCheck, domain_layers
from tumorscope.models.registry import create_model, size_config
from tumorscope.runs import TorchBackend
from tumorscope.runs.load import DomainStats
from tumorscope.runs.onnx import DropoutMask, OnnxBackend

SIZE = 32


def _model(clinical: int = 0) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = size_config("tiny", heads=("tumour", "tumour_type", "survival"), regions=("WT", "TC"))
    cfg = type(cfg)(**{**cfg.__dict__, "clinical_features": clinical, "dropout": 0.3})
    return create_model(cfg).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, OnnxBackend]:
    model = _model(clinical=2)
    folder = tmp_path_factory.mktemp("graphs")
    masks = export_graphs(model, folder, SIZE)
    backend = OnnxBackend(
        folder, tasks=model.tasks, size=SIZE, channels=1, masks=masks, clinical_features=2
    )
    return model, backend


def _slices(n: int, side: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, side, side)).astype(np.float32)


def test_dropout_masks_name_every_dropout_layer() -> None:
    model = _model()
    masks = dropout_masks(model, SIZE)
    names = {n for n, m in model.named_modules() if m in model.dropout_layers}
    assert {m.module for m in masks} == names
    by_module = {m.module: m for m in masks}
    # channel dropout draws one value per feature map; plain dropout one per feature
    assert by_module["decoder.dropout"].shape == (model.decoder.out_channels, 1, 1)
    assert all(m.p == pytest.approx(0.3) for m in masks)


@pytest.mark.parametrize("n", [1, 5, 17])
def test_backend_matches_pytorch_with_dropout_off(exported: tuple, n: int) -> None:
    model, backend = exported
    x = _slices(n, seed=n)
    f = sum(int(layer[-1].out_channels) for layer in domain_layers(model))
    stats = DomainStats(
        mean=np.zeros(f),
        precision=np.eye(f),
        image_threshold=1.0, volume_threshold=1.0, quantile=0.98, n_train=1,
    )  # fmt: skip
    expected = DomainCheck(stats).forward(TorchBackend(model), x)  # features caught by hooks
    got = backend.forward_slices(x)
    assert set(got) == set(expected)
    for key in expected:
        assert got[key].shape == expected[key].shape, key
        np.testing.assert_allclose(got[key], expected[key], atol=2e-5, rtol=0, err_msg=key)


def test_smaller_slices_are_padded_like_pytorch(exported: tuple) -> None:
    model, backend = exported
    x = _slices(3, side=SIZE - 6)
    expected = TorchBackend(model).forward_slices(x)
    got = backend.forward_slices(x)
    assert got["seg_prob"].shape == (3, 2, SIZE - 6, SIZE - 6)
    np.testing.assert_allclose(got["seg_prob"], expected["seg_prob"], atol=2e-5)
    np.testing.assert_allclose(got["tumour_logit"], expected["tumour_logit"], atol=2e-5)


def test_larger_slice_is_refused(exported: tuple) -> None:
    _, backend = exported
    with pytest.raises(ValueError, match=f"H, W <= {SIZE}"):
        backend.forward_slices(_slices(1, side=SIZE + 4))


def test_tail_with_sampled_masks_matches_pytorch_dropout(exported: tuple) -> None:
    """The same masks through the ONNX tail and through PyTorch's dropout layers."""
    model, backend = exported
    x = _slices(4)
    state, _ = backend.run_trunk(x)
    rng = np.random.default_rng(3)
    masks = [m.sample(4, rng) for m in backend.masks]
    got = backend.run_tail(state, masks)
    # PyTorch: each dropout layer multiplies by its given mask (what train-mode dropout does
    # with the Bernoulli draw it makes itself), through the real tail.
    by_name = dict(model.named_modules())
    handles = []
    for m, a in zip(backend.masks, masks, strict=True):
        layer = by_name[m.module]
        handles.append(
            layer.register_forward_hook(lambda _mod, _i, out, a=a: out * torch.from_numpy(a))
        )
    try:
        with torch.no_grad():
            trunk = model.trunk(torch.from_numpy(x))
            out = model.tail(trunk)
    finally:
        for h in handles:
            h.remove()
    np.testing.assert_allclose(got["seg_logits"], out.seg_logits.numpy(), atol=5e-5)
    np.testing.assert_allclose(got["tumour_logit"], out.tumour_logit.reshape(-1).numpy(), atol=5e-5)
    np.testing.assert_allclose(got["embedding"], out.survival_embedding.numpy(), atol=5e-5)
    ones = backend.run_tail(state)
    assert not np.allclose(ones["tumour_logit"], got["tumour_logit"])  # the masks mattered


def test_patient_graph_is_the_head_for_one_patient(exported: tuple) -> None:
    model, backend = exported
    head = model.survival_head
    for n in (1, 7):
        emb = np.random.default_rng(n).standard_normal((n, head.survival_dim)).astype(np.float32)
        clin = np.array([0.5, -1.0], dtype=np.float32)
        with torch.no_grad():
            expected = head(
                torch.from_numpy(emb),
                torch.zeros(n, dtype=torch.long),
                torch.from_numpy(clin)[None],
            )
            direct = PatientGraph(head)(torch.from_numpy(emb), torch.from_numpy(clin)[None])
        assert backend.patient_log_hazard(emb, clin) == pytest.approx(float(expected[0]), abs=1e-5)
        assert float(direct[0]) == pytest.approx(float(expected[0]), abs=1e-6)


def test_torch_wrappers_equal_the_network() -> None:
    model = _model()
    x = torch.from_numpy(_slices(2))
    masks = dropout_masks(model, SIZE)
    with torch.no_grad():
        mid, readout, _ = TrunkGraph(model)(x)
        tail = TailGraph(model, masks)(mid, readout, *(torch.ones(2, *m.shape) for m in masks))
        out = model(x)
    assert torch.allclose(tail[0], out.seg_logits, atol=1e-6)
    assert torch.allclose(tail[1], out.tumour_logit.reshape(-1), atol=1e-6)


def test_dropout_mask_draws_inverted_dropout() -> None:
    mask = DropoutMask(name="m", module="x", p=0.25, shape=(400,))
    a = mask.sample(50, np.random.default_rng(0))
    np.testing.assert_allclose(np.unique(a), [0.0, 1 / 0.75], rtol=1e-6)
    assert (a == 0).mean() == pytest.approx(0.25, abs=0.01)
    assert a.mean() == pytest.approx(1.0, abs=0.02)  # expectation kept, as in training mode
    assert DropoutMask.from_dict(mask.to_dict()) == mask
    np.testing.assert_array_equal(mask.ones(2), np.ones((2, 400), dtype=np.float32))
