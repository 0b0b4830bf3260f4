"""ONNX export of the per-slice network, checked against PyTorch with onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tumorscope.models.multitask import TensorOutputs
from tumorscope.models.registry import create_model, size_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[TensorOutputs, Path]:
    torch.manual_seed(0)
    model = create_model(
        size_config("tiny", heads=("tumour", "tumour_type", "survival"), regions=("WT", "TC"))
    )
    net = TensorOutputs(model.eval())
    assert not net.training
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(
        net,
        (torch.randn(2, 1, 64, 64),),
        str(path),
        input_names=["image"],
        output_names=net.output_names,
        dynamic_shapes={"x": {0: batch}},
        dynamo=True,
    )
    return net, path


@pytest.mark.parametrize("batch", [1, 2])
def test_onnx_outputs_match_pytorch(exported: tuple[TensorOutputs, Path], batch: int) -> None:
    net, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == net.output_names
    x = torch.randn(batch, 1, 64, 64, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        expected = net(x)
    got = session.run(None, {"image": x.numpy()})
    assert len(got) == len(expected) == 4
    for name, e, g in zip(net.output_names, expected, got, strict=True):
        assert g.shape == tuple(e.shape), name
        np.testing.assert_allclose(g, e.numpy(), atol=1e-4, rtol=0, err_msg=name)


def test_output_names_follow_tasks() -> None:
    model = create_model(size_config("tiny", heads=("tumour",)))
    assert TensorOutputs(model).output_names == ["seg_logits", "tumour_logit"]
    assert TensorOutputs(model, tasks=("tumour",)).output_names == ["tumour_logit"]
