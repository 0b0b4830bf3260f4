"""Preprocessing: spec round trip, normalisation vs MONAI, slice choice, crop/restore geometry."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import NormalizeIntensity

from tumorscope.config import config_from_dict
from tumorscope.data.intensity import foreground_mask, normalise
from tumorscope.data.spec import PreprocessSpec
from tumorscope.data.transforms import (
    prepare_image,
    preprocess_image,
    preprocess_volume,
    restore_image_mask,
    restore_volume,
)
from tumorscope.data.types import DataError, ImageMeta, LoadedCase

torch.set_num_threads(1)

SHAPE = (37, 41, 23)  # odd sizes catch off-by-one crops
BRAIN = (slice(5, 29), slice(9, 33))  # a 24 x 24 in-plane box
TUMOUR_Z = range(8, 13)


def make_case(*, tumour: bool = True, channels: int = 1, seed: int = 0) -> LoadedCase:
    """A volume with zero background, a 24x24 'brain' box and a BraTS-labelled tumour."""
    rng = np.random.default_rng(seed)
    img = np.zeros((channels, *SHAPE), dtype=np.float32)
    img[(slice(None), *BRAIN, slice(None))] = rng.uniform(
        50, 150, size=(channels, 24, 24, SHAPE[2])
    )
    mask = np.zeros(SHAPE, dtype=np.uint8)
    if tumour:
        mask[10:16, 12:20, TUMOUR_Z.start : TUMOUR_Z.stop] = 2
        mask[12:14, 14:17, 9:12] = 4
        mask[12:13, 15:16, 10] = 1
    meta = ImageMeta(
        path=Path("case.nii.gz"), shape=SHAPE, spacing=(1.0, 1.0, 1.0), affine=np.eye(4)
    )
    return LoadedCase(image=img, mask=mask, meta=meta, channel_present=(True,) * channels)


def spec_for(**kw: object) -> PreprocessSpec:
    base = PreprocessSpec(
        image_size=24, slices_per_patient=6, clip_percentiles=(0.0, 100.0), crop_margin=0.0
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_spec_round_trip_and_hash() -> None:
    cfg = config_from_dict(
        {
            "data": {"channels": ["flair", "t1"], "image_size": 64},
            "model": {"in_channels": 2, "regions": ["WT", "ET"]},
        }
    )
    spec = PreprocessSpec.from_config(cfg)
    assert (
        spec.channels == ("flair", "t1") and spec.image_size == 64 and spec.regions == ("WT", "ET")
    )
    d = json.loads(json.dumps(spec.to_dict()))
    back = PreprocessSpec.from_dict(d)
    assert back == spec and back.hash() == spec.hash()
    assert dataclasses.replace(spec, image_size=65).hash() != spec.hash()
    with pytest.raises(ValueError, match="unknown keys"):
        PreprocessSpec.from_dict({**d, "colour": 1})
    with pytest.raises(ValueError, match="cache_dtype='int8'"):
        PreprocessSpec.from_dict({**d, "cache_dtype": "int8"})
    with pytest.raises(ValueError, match="version 0"):
        PreprocessSpec.from_dict({**d, "version": 0})


def test_normalise_matches_monai_nonzero_normalisation() -> None:
    case = make_case(channels=2)
    fg = foreground_mask(case.image, (True, True), 0.05)
    np.testing.assert_array_equal(fg, case.image[0] > 0)  # the foreground is the brain box exactly
    ours = normalise(case.image, fg, (True, True), (0.0, 100.0))
    ref = NormalizeIntensity(nonzero=True, channel_wise=True)(torch.from_numpy(case.image)).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_clipping_uses_foreground_percentiles() -> None:
    case = make_case()
    img = case.image.copy()
    img[0, 10, 10, 5] = 1e6  # one outlier
    fg = img[0] > 0
    out = normalise(img, fg, (True,), (1.0, 99.0))
    vals = img[0][fg]
    lo, hi = np.percentile(vals, (1.0, 99.0))
    clipped = np.clip(vals, lo, hi)
    expected_max = (hi - clipped.mean()) / clipped.std()
    assert out[0].max() == pytest.approx(expected_max, rel=1e-4)
    assert np.all(out[0][~fg] == 0)


def test_volume_slices_balance_tumour_and_flags() -> None:
    case = make_case()
    vs = preprocess_volume(case, spec_for(), source="brats")
    assert vs.images.shape == (6, 1, 24, 24) and vs.images.dtype == np.float32
    assert vs.masks is not None and vs.masks.shape == (6, 1, 24, 24) and vs.masks.dtype == np.uint8
    assert np.all(np.diff(vs.slice_index) > 0)
    truth = np.isin(case.mask, [1, 2, 4]).any(axis=(0, 1))  # type: ignore[union-attr]
    assert vs.tumour is not None
    np.testing.assert_array_equal(vs.tumour, truth[vs.slice_index])
    assert vs.tumour.sum() == 3  # tumour_slice_fraction 0.5 of 6
    np.testing.assert_array_equal(vs.masks.reshape(6, -1).any(axis=1), vs.tumour)
    np.testing.assert_allclose(vs.foreground, 24 * 24 / (SHAPE[0] * SHAPE[1]), rtol=1e-6)


def test_non_tumour_shortage_is_topped_up_with_tumour_slices() -> None:
    case = make_case()
    vs = preprocess_volume(
        case, spec_for(slices_per_patient=22, tumour_slice_fraction=0.1), source="brats"
    )
    assert vs.slice_index.size == 22 and vs.tumour is not None
    assert vs.tumour.sum() == 4  # 18 non-tumour slices exist, the rest are tumour slices


def test_restore_is_exact_when_no_resampling_is_needed() -> None:
    case = make_case()
    vs = preprocess_volume(case, spec_for(), source="brats")
    assert vs.masks is not None and vs.restore.box == (5, 9, 24)
    back = restore_volume(vs.masks.astype(np.float32), vs, SHAPE)
    truth = np.isin(case.mask, [1, 2, 4]).astype(np.float32)  # type: ignore[union-attr]
    z = vs.slice_index
    np.testing.assert_array_equal(back[0][:, :, z], truth[:, :, z])
    others = np.setdiff1d(np.arange(SHAPE[2]), z)
    assert back[0][:, :, others].sum() == 0


def test_restore_after_resampling_keeps_the_tumour() -> None:
    case = make_case()
    vs = preprocess_volume(
        case, spec_for(image_size=40, crop_margin=0.1), source="brats", all_slices=True
    )
    assert vs.masks is not None
    back = restore_volume(vs.masks.astype(np.float32), vs, SHAPE)[0] >= 0.5
    truth = np.isin(case.mask, [1, 2, 4])  # type: ignore[union-attr]
    dice = 2 * (back & truth).sum() / (back.sum() + truth.sum())
    assert dice > 0.9


def test_display_orientation_is_radiological() -> None:
    case = make_case(tumour=False)
    img = case.image.copy()
    img[0, 27:29, 31:33, :] = 1000.0  # patient right (high x) and anterior (high y) corner
    vs = preprocess_volume(dataclasses.replace(case, image=img), spec_for(), source="brats")
    s = vs.images[0, 0]
    r, c = np.unravel_index(np.argmax(s), s.shape)
    assert r < 3 and c < 3  # top-left of the radiological view


def test_all_slices_and_empty_volumes() -> None:
    case = make_case()
    vs = preprocess_volume(case, spec_for(), source="brats", all_slices=True)
    np.testing.assert_array_equal(vs.slice_index, np.arange(SHAPE[2]))
    empty = dataclasses.replace(
        case, image=np.zeros_like(case.image), mask=np.zeros(SHAPE, np.uint8)
    )
    ve = preprocess_volume(empty, spec_for(), source="brats")
    assert ve.images.shape == (0, 1, 24, 24) and ve.tumour is not None and ve.tumour.size == 0
    assert restore_volume(np.zeros((0, 1, 24, 24)), ve, SHAPE).sum() == 0


def test_volume_without_tumour_and_bad_shapes() -> None:
    vs = preprocess_volume(make_case(tumour=False), spec_for(), source="brats")
    assert vs.tumour is not None and not vs.tumour.any() and vs.slice_index.size == 6
    with pytest.raises(DataError, match=r"case\.nii\.gz: image shape"):
        preprocess_volume(make_case(channels=2), spec_for(), source="brats")
    with pytest.raises(DataError, match="regions"):
        preprocess_volume(make_case(), spec_for(regions=("GTVp",)), source="brats")


def image_with_box() -> np.ndarray:
    img = np.zeros((37, 53), dtype=np.float32)
    img[6:30, 10:40] = np.linspace(60, 200, 30)[None, :]
    return img


def test_preprocess_image_channels() -> None:
    img = image_with_box()
    out = preprocess_image(img, spec_for(image_size=32))
    assert out.shape == (1, 32, 32) and out.dtype == np.float32
    fg = out[0] != 0
    assert abs(out[0][fg].mean()) < 0.1
    two = preprocess_image(
        img, spec_for(image_size=32, channels=("t1", "flair"), missing_channels="zero_fill")
    )
    assert two.shape == (2, 32, 32) and np.all(two[0] == 0)
    np.testing.assert_allclose(two[1], out[0], atol=1e-6)
    rgb = preprocess_image(np.stack([img] * 3), spec_for(image_size=32))
    np.testing.assert_allclose(rgb, out, atol=1e-5)
    with pytest.raises(DataError, match="missing_channels=error"):
        preprocess_image(img, spec_for(channels=("flair", "t1")))
    with pytest.raises(DataError, match="no place"):
        preprocess_image(img, spec_for(channels=("ct",)))


def test_restore_image_mask_round_trip() -> None:
    img = image_with_box()
    prep = prepare_image(img, spec_for(image_size=48, crop_margin=0.1))
    back = restore_image_mask((prep.image[0] != 0).astype(np.float32), prep.restore)
    assert back.shape == img.shape
    truth = img > 0
    pred = back >= 0.5
    iou = (pred & truth).sum() / (pred | truth).sum()
    assert iou > 0.9
    assert restore_image_mask(np.ones((2, 48, 48)), prep.restore).shape == (2, *img.shape)


def test_specks_outside_the_brain_do_not_move_the_crop() -> None:
    case = make_case()
    img = case.image.copy()
    img[0, 0, 0, 3] = 140.0  # a bright speck far from the brain (noise, a text marker)
    vs = preprocess_volume(dataclasses.replace(case, image=img), spec_for(), source="brats")
    assert vs.restore.box == (5, 9, 24)


def test_statistics_of_a_large_foreground_come_from_a_bounded_subsample() -> None:
    from tumorscope.data.intensity import MAX_STAT_VOXELS, intensity_stats

    rng = np.random.default_rng(0)
    img = rng.gamma(2.0, 50.0, size=(1, 2 * MAX_STAT_VOXELS + 1001)).astype(np.float32)
    fg = np.ones(img.shape[1:], dtype=bool)
    v = img[0].astype(np.float64)
    lo, hi = np.percentile(v, (0.5, 99.5))
    c = np.clip(v, lo, hi)
    lo_s, hi_s, mean_s, std_s = intensity_stats(img, fg, [True], (0.5, 99.5))[0]  # type: ignore[misc]
    np.testing.assert_allclose([lo_s, hi_s, mean_s, std_s], [lo, hi, c.mean(), c.std()], rtol=2e-3)
    small = img[:, :1000]
    exact = intensity_stats(small, np.ones(1000, bool), [True], (0.5, 99.5))[0]
    s = small[0].astype(np.float64)
    lo, hi = np.percentile(s, (0.5, 99.5))
    assert exact == (lo, hi, float(np.clip(s, lo, hi).mean()), float(np.clip(s, lo, hi).std()))


def test_slice_labels_come_from_the_resized_training_mask() -> None:
    # One voxel of tumour on slice 5 vanishes when 24 pixels shrink to 8: that slice's
    # training mask is empty, so its label must say "no tumour" too.
    case = make_case()
    mask = case.mask.copy()  # type: ignore[union-attr]
    mask[14, 14, 5] = 2
    case = dataclasses.replace(case, mask=mask)
    vs = preprocess_volume(case, spec_for(image_size=8), source="brats", all_slices=True)
    assert vs.masks is not None and vs.tumour is not None
    np.testing.assert_array_equal(vs.tumour, vs.masks[:, 0].any(axis=(1, 2)))
    z5 = int(np.nonzero(vs.slice_index == 5)[0][0])
    assert not vs.tumour[z5] and bool(mask[:, :, 5].any())
    assert vs.tumour[vs.slice_index == 10].all()
