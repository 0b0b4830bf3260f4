"""Test-time augmentation: views invert exactly (flips) or closely (warps), an exactly
flip-equivariant model has zero epistemic spread, each member equals the hand-made pass,
the entropy splits into aleatoric + epistemic, and predict_full / predict --tta carry it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import entr
from torch import nn

from tumorscope.inference.full import predict_full
from tumorscope.inference.predictor import Predictor
from tumorscope.inference.uncertainty import mc_dropout, tta
from tumorscope.inference.views import DEFAULT_VIEWS, MAX_VIEWS, View, default_views
from tumorscope.models.multitask import ModelOutput, Trunk, pad_to_multiple, unpad
from tumorscope.models.registry import create_model, size_config


def _images(n: int = 2, h: int = 37, w: int = 41, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 1, h, w)).astype(np.float32)


def test_flip_views_invert_exactly_and_warps_closely() -> None:
    x = torch.from_numpy(_images(1, 40, 40))
    for view in DEFAULT_VIEWS[:4]:
        assert torch.equal(view.inverse(view.forward(x)), x), view.name
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    smooth = torch.exp(-4 * ((xx - 0.2) ** 2 + (yy + 0.1) ** 2))[None, None]
    for view in DEFAULT_VIEWS[4:]:
        back = view.inverse(view.forward(smooth))
        centre = (slice(None), slice(None), slice(16, 48), slice(16, 48))
        assert float((back - smooth)[centre].abs().max()) < 0.02, view.name
    rotated = View("r", angle_deg=90.0).forward(torch.arange(16.0).reshape(1, 1, 4, 4))
    np.testing.assert_allclose(
        rotated[0, 0].numpy(), np.rot90(np.arange(16.0).reshape(4, 4), k=-1), atol=1e-5
    )  # +90° turns the displayed image clockwise
    assert [v.name for v in default_views(3)] == ["identity", "flip_lr", "flip_ud"]
    with pytest.raises(ValueError, match="1 to 8 views"):
        default_views(MAX_VIEWS + 1)


class PixelNet(nn.Module):
    """Per-pixel logits and a mean-pooled tumour logit: exactly flip-equivariant/invariant."""

    tasks = ("segmentation", "tumour")
    size_multiple = 1
    dropout_layers: tuple[nn.Module, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(1.5)
            self.conv.bias.fill_(-0.2)

    def resolve_tasks(self, tasks: object) -> frozenset[str]:
        return frozenset(self.tasks)

    def trunk(self, x: torch.Tensor, tasks: object = None) -> Trunk:
        return Trunk(features=[x], decoder=None, readout=x.mean(dim=(1, 2, 3))[:, None])

    def tail(self, trunk: Trunk, tasks: object = None) -> ModelOutput:
        x = trunk.features[0]
        return ModelOutput(seg_logits=self.conv(x), tumour_logit=trunk.readout)


def test_a_flip_equivariant_model_has_zero_epistemic_spread() -> None:
    model, x = PixelNet(), _images()
    res = tta(model, x, views=4)  # type: ignore[arg-type]
    one = mc_dropout(model, x, samples=1, sampling=False)  # type: ignore[arg-type]
    assert res.samples == 4 and res.views == ("identity", "flip_lr", "flip_ud", "flip_both")
    assert res.mutual_information is not None and res.std is not None
    assert float(res.mutual_information.max()) == pytest.approx(0.0, abs=1e-6)
    assert float(res.std.max()) == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(res.probability, one.probability, atol=1e-6)
    assert res.tumour_samples is not None
    np.testing.assert_allclose(res.tumour_samples, np.repeat(res.tumour_samples[:1], 4, 0))


def test_each_member_is_the_hand_made_pass_and_entropy_splits() -> None:
    torch.manual_seed(0)
    model = create_model(size_config("tiny", dropout=0.3)).eval()
    x = _images()
    views = (DEFAULT_VIEWS[0], DEFAULT_VIEWS[1], DEFAULT_VIEWS[4])  # identity, flip, rotation
    res = tta(model, x, views=views, keep_samples=True, temperature=1.3)
    assert res.seg_samples is not None and res.seg_samples.shape == (3, 2, 1, 37, 41)
    with torch.no_grad():
        for k, view in enumerate(views):
            xv, pad = pad_to_multiple(view.forward(torch.from_numpy(x)), model.size_multiple)
            out = model(xv, ("segmentation", "tumour"))
            assert out.seg_logits is not None and out.tumour_logit is not None
            p = view.inverse(torch.sigmoid(unpad(out.seg_logits, pad))).numpy()
            np.testing.assert_allclose(res.seg_samples[k], p, atol=2e-6)
            t = torch.sigmoid(out.tumour_logit.double().reshape(-1) / 1.3).numpy()
            assert res.tumour_samples is not None
            np.testing.assert_allclose(res.tumour_samples[k], t, rtol=1e-6)
    s = res.seg_samples.astype(np.float64)
    mean = s.mean(0)
    total = entr(mean) + entr(1 - mean)
    aleatoric = (entr(s) + entr(1 - s)).mean(0)
    assert res.entropy is not None and res.mutual_information is not None
    np.testing.assert_allclose(res.entropy, total, atol=1e-5)
    np.testing.assert_allclose(res.aleatoric, aleatoric, atol=1e-5)
    np.testing.assert_allclose(res.entropy, res.aleatoric + res.mutual_information, atol=1e-6)
    assert float(res.mutual_information.max()) > 1e-4  # the rotation view does differ


def test_tta_merged_with_dropout_has_views_times_samples_members() -> None:
    torch.manual_seed(0)
    model = create_model(size_config("tiny", dropout=0.3)).eval()
    res = tta(model, _images(), views=2, mc_samples=3, seed=5)
    assert (res.samples, res.dropout_samples, res.views) == (6, 3, ("identity", "flip_lr"))
    assert res.tumour_samples is not None and res.tumour_samples.shape == (6, 2)
    assert len({float(v) for v in res.tumour_samples[:, 0]}) > 1


def test_predict_full_and_predict_cli_carry_tta(
    tiny_run: Path, synth_brain: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from tumorscope.cli import app

    predictor = Predictor.from_run(tiny_run)
    png = sorted((synth_brain / "kaggle" / "yes").iterdir())[0]
    full = predict_full(predictor, png, mc_samples=0, tta_views=4, gradcam=False)
    u = full.uncertainty_json()
    assert u is not None and u["views"] == ["identity", "flip_lr", "flip_ud", "flip_both"]
    assert u["samples"] == 4 and u["dropout_samples"] == 0
    assert u["tumour_entropy"] == pytest.approx(
        u["tumour_aleatoric"] + u["tumour_mutual_information"]
    )
    res = CliRunner().invoke(
        app, ["predict", "--run", str(tiny_run), str(png), "--out", str(tmp_path), "--tta", "3"]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / f"{png.stem}.json").read_text())
    assert doc["uncertainty"]["views"] == ["identity", "flip_lr", "flip_ud"]
    assert (tmp_path / f"{png.stem}_uncertainty.png").is_file()
