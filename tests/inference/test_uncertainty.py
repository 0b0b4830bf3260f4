"""MC dropout: cached-tail samples equal full passes, maps against numpy/scipy, review flag."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import entr

from tumorscope.inference.full import MAP_NAMES, predict_full
from tumorscope.inference.predictor import Predictor
from tumorscope.inference.uncertainty import (
    binary_mutual_information,
    mc_dropout,
    measure_costs,
)
from tumorscope.models.multitask import MultiTaskNet, pad_to_multiple, unpad
from tumorscope.models.registry import create_model, size_config


def _model(seed: int = 0, **overrides: object) -> MultiTaskNet:
    torch.manual_seed(seed)
    return create_model(size_config("tiny", dropout=0.3, **overrides))


def _images(n: int = 3, h: int = 37, w: int = 41, seed: int = 1) -> np.ndarray:
    # Odd sizes: mc_dropout must pad to the model's multiple and crop back.
    return np.random.default_rng(seed).normal(size=(n, 1, h, w)).astype(np.float32)


def _reference_samples(
    model: MultiTaskNet, images: np.ndarray, samples: int, seed: int, temperature: float
) -> tuple[np.ndarray, np.ndarray]:
    """Full forward passes (no cached trunk) with dropout alone in train mode, same seed."""
    model.eval()
    for layer in model.dropout_layers:
        layer.train(True)
    torch.manual_seed(seed)
    seg, tum = [], []
    with torch.no_grad():
        x, pad = pad_to_multiple(torch.from_numpy(images), model.size_multiple)
        for _ in range(samples):
            out = model(x, ("segmentation", "tumour"))
            assert out.seg_logits is not None and out.tumour_logit is not None
            seg.append(torch.sigmoid(unpad(out.seg_logits, pad)).numpy())
            tum.append(torch.sigmoid(out.tumour_logit.double().reshape(-1) / temperature).numpy())
    model.eval()
    return np.stack(seg), np.stack(tum)


def test_cached_tail_sample_equals_full_forward_with_same_masks() -> None:
    model, x = _model(), _images()
    mc = mc_dropout(model, x, samples=4, seed=7, temperature=1.7, keep_samples=True)
    seg, tum = _reference_samples(model, x, 4, seed=7, temperature=1.7)
    assert mc.seg_samples is not None and mc.tumour_samples is not None
    assert mc.seg_samples.shape == (4, 3, 1, 37, 41)
    np.testing.assert_allclose(mc.seg_samples, seg, atol=1e-5)
    np.testing.assert_allclose(mc.tumour_samples, tum, atol=1e-6)
    # Dropout really sampled: samples differ, so the equality above is not trivial.
    assert np.abs(mc.seg_samples[0] - mc.seg_samples[1]).max() > 1e-3
    assert np.abs(tum[0] - tum[1]).max() > 1e-4


def test_sampling_off_gives_identical_samples_equal_to_eval_pass() -> None:
    model, x = _model(), _images()
    mc = mc_dropout(model, x, samples=5, sampling=False, keep_samples=True)
    assert mc.seg_samples is not None and mc.std is not None and mc.tumour_samples is not None
    for t in range(1, 5):
        np.testing.assert_array_equal(mc.seg_samples[t], mc.seg_samples[0])
    with torch.no_grad():
        xp, pad = pad_to_multiple(torch.from_numpy(x), model.size_multiple)
        out = model.eval()(xp)
    assert out.seg_logits is not None
    np.testing.assert_allclose(
        mc.seg_samples[0], torch.sigmoid(unpad(out.seg_logits, pad)), atol=1e-6
    )
    assert float(mc.std.max()) < 1e-6
    assert mc.mutual_information is not None and float(mc.mutual_information.max()) < 1e-6
    np.testing.assert_array_equal(mc.tumour_samples, mc.tumour_samples[:1].repeat(5, axis=0))
    assert mc.case_score() < 1e-6


def test_maps_match_numpy_reference() -> None:
    model, x = _model(seed=3), _images(n=2, h=32, w=32)
    mc = mc_dropout(model, x, samples=6, seed=2, keep_samples=True, batch_size=1)
    s = mc.seg_samples
    assert s is not None and mc.probability is not None and mc.std is not None
    assert mc.entropy is not None and mc.mutual_information is not None
    p = s.astype(np.float64)
    mean = p.mean(0)
    h = lambda q: entr(q) + entr(1 - q)  # noqa: E731  # scipy, independent of torch.special
    np.testing.assert_allclose(mc.probability, mean, atol=1e-6)
    np.testing.assert_allclose(mc.std, p.std(0), atol=1e-5)
    np.testing.assert_allclose(mc.entropy, h(mean), atol=1e-5)
    np.testing.assert_allclose(
        mc.mutual_information, np.maximum(h(mean) - h(p).mean(0), 0), atol=1e-5
    )
    assert mc.entropy.max() <= math.log(2) + 1e-6
    assert (mc.mutual_information <= mc.entropy + 1e-6).all()
    # The score: mean MI inside the dilated union of the sampled masks.
    union = (p >= 0.5).any(axis=(0, 2))
    from scipy.ndimage import binary_dilation

    roi = np.stack([binary_dilation(u, np.ones((7, 7), bool)) for u in union])
    mi = mc.mutual_information.mean(axis=1)
    expected = [mi[i][roi[i]].mean() if roi[i].any() else 0.0 for i in range(2)]
    np.testing.assert_allclose(mc.slice_score, expected, atol=1e-6)
    np.testing.assert_array_equal(mc.roi_pixels, roi.sum(axis=(1, 2)))


def test_binary_mutual_information_known_values() -> None:
    # Samples 0 and 1 in equal measure: entropy of the mean ln 2, mean entropy 0.
    assert binary_mutual_information(np.array([0.0, 1.0, 0.0, 1.0])) == pytest.approx(math.log(2))
    assert binary_mutual_information(np.array([0.3, 0.3, 0.3])) == pytest.approx(0.0, abs=1e-12)


def test_model_modes_restored_and_rng_untouched() -> None:
    model = _model().train()
    state = torch.random.get_rng_state()
    mc_dropout(model, _images(n=1, h=32, w=32), samples=2)
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(state, torch.random.get_rng_state())
    model.eval()
    mc_dropout(model, _images(n=1, h=32, w=32), samples=2)
    assert not any(m.training for m in model.modules())


def test_bad_arguments() -> None:
    model = _model()
    with pytest.raises(ValueError, match="samples"):
        mc_dropout(model, _images(n=1), samples=0)
    with pytest.raises(ValueError, match="images"):
        mc_dropout(model, np.zeros((1, 32, 32), np.float32))
    with pytest.raises(ValueError, match="temperature"):
        mc_dropout(model, _images(n=1), temperature=0.0)


def test_predict_full_volume_flag_and_json(tiny_run: Path, synth_brain: Path) -> None:
    predictor = Predictor.from_run(tiny_run)
    case = sorted((synth_brain / "brats").glob("BraTS*"))[0]
    full = predict_full(predictor, case, mc_samples=4, gradcam=True, review_cutoff=0.0)
    assert full.mc is not None and full.slice_index is not None
    score = full.uncertainty_score
    assert score is not None and score > 0 and full.needs_review is True
    full.review_cutoff = score  # strictly above the cut-off is needed
    assert full.needs_review is False
    data = json.loads(json.dumps(full.to_json(), allow_nan=False))
    assert data["uncertainty"]["samples"] == 4
    assert data["uncertainty"]["score"] == pytest.approx(score)
    assert set(data["uncertainty"]["slice_scores"]) == {str(int(z)) for z in full.slice_index}
    maps = full.maps()
    assert maps is not None and maps.shape == (len(MAP_NAMES), *full.base.masks.shape[1:])
    assert np.isfinite(maps).all() and (maps >= 0).all() and maps[0].max() <= 1.0
    # The mean probability restored to the volume agrees with the predictor's ungated mask
    # wherever the samples are confident.
    confident = (maps[1] < 0.02) & ((maps[0] > 0.6) | (maps[0] < 0.4))
    agree = (maps[0] >= 0.5) == (full.base.masks_ungated[0] > 0)
    assert agree[confident].mean() > 0.99
    assert full.gradcam_tumour is not None and full.gradcam_tumour.shape[0] == full.images.shape[0]


def test_predict_full_without_samples_has_no_uncertainty(tiny_run: Path) -> None:
    predictor = Predictor.from_run(tiny_run)
    image = np.random.default_rng(0).uniform(0, 100, size=(45, 39)).astype(np.float32)
    full = predict_full(predictor, image, mc_samples=0, gradcam=False)
    assert full.mc is None and full.needs_review is None and full.uncertainty_json() is None
    assert full.to_json()["uncertainty"] is None


def test_measure_costs_reports_positive_ratios() -> None:
    out = measure_costs(_model(), size=32, batch=2, samples=3, repeats=1)
    for key in ("one_pass_s", "mc_s", "gradcam_s", "mc_cost_ratio", "gradcam_cost_ratio"):
        assert math.isfinite(out[key]) and out[key] > 0
    assert out["repeats"] == 1  # one timed round: its ratio is the median
    assert out["mc_cost_ratio"] > out["tail_fraction"]  # the trunk plus 3 tails
    assert out["naive_mc_cost_ratio"] == 3
