"""Training augmentation: each transform against its definition on tiny arrays."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tumorscope.data import augment
from tumorscope.data.spec import PreprocessSpec


def test_gamma_on_a_ramp_matches_its_definition() -> None:
    x = np.linspace(-1.0, 3.0, 101).astype(np.float32)
    g = 2.0
    # nnU-Net's definition, written out: rescale to [0, 1], power, back, then restore stats.
    u = (x - x.min()) / (x.max() - x.min())
    y = u**g * (x.max() - x.min()) + x.min()
    y = (y - y.mean()) / y.std() * x.std() + x.mean()
    np.testing.assert_allclose(augment.gamma(x, g), y, rtol=1e-5, atol=1e-5)
    # inverted: the same on -x, negated; the mean and std are kept either way
    inv = augment.gamma(x, g, invert=True)
    np.testing.assert_allclose(inv, -augment.gamma(-x, g), atol=1e-6)
    assert inv.mean() == pytest.approx(x.mean(), abs=1e-5)
    assert inv.std() == pytest.approx(x.std(), rel=1e-4)
    # gamma > 1 on a ramp is convex: the middle falls below the straight line
    assert augment.gamma(x, g)[50] < x[50]
    assert augment.gamma(x, 1.0) == pytest.approx(x, abs=1e-5)


def test_warp_rotates_and_scales_image_and_mask_together() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 9, 9)).astype(np.float32)
    mask = (rng.random((1, 9, 9)) < 0.3).astype(np.uint8)
    out, m = augment.warp(image, mask, 90.0, 1.0)
    np.testing.assert_allclose(out[0], np.rot90(image[0], -1), atol=1e-5)
    np.testing.assert_array_equal(m[0], np.rot90(mask[0], -1))
    square = np.zeros((1, 41, 41), dtype=np.float32)
    square[0, 15:26, 15:26] = 1.0  # 11 px wide, centred
    big, big_mask = augment.warp(square, (square > 0).astype(np.uint8), 0.0, 2.0)
    assert int(big_mask[0].sum(axis=1).max()) in (21, 22, 23)  # twice as wide
    assert big[0, 20, 20] == pytest.approx(1.0)
    assert big[0, 2, 2] == 0.0  # zero outside


def test_low_resolution_removes_fine_detail_and_keeps_coarse() -> None:
    fine = (np.indices((32, 32)).sum(axis=0) % 2).astype(np.float32)  # 1 px checkerboard
    coarse = ((np.indices((32, 32)) // 8).sum(axis=0) % 2).astype(np.float32)
    np.testing.assert_allclose(augment.low_resolution(coarse, 1.0), coarse, atol=1e-6)
    assert augment.low_resolution(fine, 0.5).shape == (32, 32)
    assert augment.low_resolution(fine, 0.5).std() < 0.05 * fine.std()  # detail gone
    assert np.corrcoef(augment.low_resolution(coarse, 0.5).ravel(), coarse.ravel())[0, 1] > 0.9


def test_bias_field_is_smooth_and_bounded() -> None:
    f = augment.bias_field(np.random.default_rng(4), (60, 60), 0.3)
    assert f.min() >= np.exp(-0.3) - 1e-6 and f.max() <= np.exp(0.3) + 1e-6
    assert max(f.max() / f.min(), f.min() / f.max()) > 1.2  # it does vary
    assert np.abs(np.diff(np.log(f), axis=0)).max() < 0.05  # slowly, pixel to pixel


def test_contrast_draw_own_channel_half_the_time() -> None:
    own = np.zeros((1, 2, 2), dtype=np.float32)
    alternates = np.stack([np.full((2, 2), k + 1.0, dtype=np.float32) for k in range(3)])
    rng = np.random.default_rng(1)
    draws = [augment.choose_contrast(rng, own, alternates, 0b101) for _ in range(4000)]
    picks = [float(image[0, 0, 0]) for image, _ in draws]
    assert all(is_own == (v == 0.0) for v, (_, is_own) in zip(picks, draws, strict=True))
    counts = {v: picks.count(v) / len(picks) for v in set(picks)}
    assert set(counts) == {0.0, 1.0, 3.0}  # alternate 1 (bit 1) is absent: never drawn
    assert counts[0.0] == pytest.approx(0.5, abs=0.03)
    assert counts[1.0] == pytest.approx(0.25, abs=0.03)
    same, is_own = augment.choose_contrast(rng, own, alternates, 0)
    assert same is own and is_own


def _disc_slice(size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    r, c = np.indices((size, size))
    brain = np.hypot(r - size / 2, c - size / 2) < size * 0.45
    tumour = np.hypot(r - size * 0.4, c - size * 0.55) < size * 0.1
    image = np.where(brain, 0.0, 0.0).astype(np.float32)
    image[brain] = np.random.default_rng(0).normal(0, 0.2, brain.sum())
    image[tumour] = 3.0
    image[brain & (image == 0)] = 0.01
    return image[None], tumour[None].astype(np.uint8)


def test_intensity_keeps_background_zero_and_changes_only_inside() -> None:
    image, _ = _disc_slice()
    rng = np.random.default_rng(2)
    for _ in range(20):
        out = augment.intensity(rng, image)
        assert np.all(out[image == 0] == 0)
        assert out.dtype == np.float32 and out.shape == image.shape


def test_render_upload_keeps_mask_on_the_tumour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(augment, "P_SKULL", 1.0)
    image, mask = _disc_slice()
    spec = PreprocessSpec(image_size=48)
    rng = np.random.default_rng(3)
    for _ in range(5):
        out, m = augment.render_upload(rng, image, mask, spec)
        assert out.shape == (1, 48, 48) and m.shape == (1, 48, 48)
        inside, outside = out[0][m[0] == 1], out[0][(m[0] == 0) & (out[0] != 0)]
        assert m.sum() > 10
        assert inside.mean() > outside.mean() + 1.0  # the bright tumour is where the mask is
        # per-image normalisation: the new foreground is z-scored
        fg = out[0] != 0
        assert abs(float(out[0][fg].mean())) < 0.2


def test_full_is_a_pure_function_of_the_generator() -> None:
    image, mask = _disc_slice()
    spec = dataclasses.replace(PreprocessSpec(image_size=48))
    a = augment.full(np.random.default_rng([7, 1, 2]), image, mask, spec, volume=True)
    b = augment.full(np.random.default_rng([7, 1, 2]), image, mask, spec, volume=True)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] is True  # no alternates: its own contrast
