"""Property: volume masks keep the input's exact geometry (shape and affine), oblique included.

The written mask is checked with nibabel alone: its stored shape and affine equal the
input's, and nibabel's own reorientation of it to the closest canonical grid gives back the
predictor's canonical masks voxel for voxel.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from tumorscope.config import load_config
from tumorscope.data.transforms import preprocess_volume
from tumorscope.inference.predictor import Predictor

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    """An untrained predictor whose segmentation bias is centred on a probe volume's median
    logit, so that masks are neither empty nor full and their placement is checked; no
    component removal, which would empty the masks of these volumes of a fraction of a mL."""
    cfg = load_config(CONFIGS / "tiny.yaml")
    p = Predictor.from_config(cfg, calibration={"min_component_ml": 0.0}, seed=2)
    loaded, _, _ = p.load_volume(_volume((16, 16, 8), seed=0))
    slices = preprocess_volume(loaded, p.spec, source="volume", all_slices=True)
    probe = p.forward_slices(slices.images)["seg_prob"]
    median = float(np.median(np.log(probe / (1 - probe))))
    with torch.no_grad():
        p.model.segmentation_head.conv.bias -= median
    return p


@st.composite
def geometries(draw: st.DrawFn) -> tuple[tuple[int, int, int], np.ndarray]:
    """A small shape and an affine: axis permutation, flips, anisotropic spacing, an oblique
    rotation (sometimes none) and an offset."""
    shape = tuple(draw(st.integers(5, 14)) for _ in range(3))
    perm = draw(st.permutations([0, 1, 2]))
    flips = [draw(st.sampled_from([-1.0, 1.0])) for _ in range(3)]
    spacing = [draw(st.floats(0.5, 4.0)) for _ in range(3)]
    angles = draw(st.one_of(st.just((0.0, 0.0, 0.0)), st.tuples(*[st.floats(-40.0, 40.0)] * 3)))
    linear = np.eye(3)[:, perm] * np.asarray(flips) * np.asarray(spacing)
    linear = Rotation.from_euler("xyz", angles, degrees=True).as_matrix() @ linear
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = [draw(st.floats(-100.0, 100.0)) for _ in range(3)]
    return shape, affine


def _volume(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    head = sum(g**2 for g in grid) < 0.8
    blob = sum((g - c) ** 2 for g, c in zip(grid, (0.3, -0.2, 0.1), strict=True)) < 0.1
    return (100.0 * head + 80.0 * blob + rng.uniform(0, 5, size=shape)).astype(np.float32)


@settings(
    max_examples=25,
    derandomize=True,  # the same 25 geometries on every run: a CI failure is reproducible
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(geometry=geometries(), seed=st.integers(0, 1000))
def test_masks_keep_input_shape_and_affine(
    predictor: Predictor, geometry: tuple[tuple[int, int, int], np.ndarray], seed: int
) -> None:
    shape, affine = geometry
    data = _volume(shape, seed)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.nii.gz"
        img = nib.Nifti1Image(data, affine)
        img.set_sform(affine, code=1)
        img.set_qform(affine, code=1)
        nib.save(img, src)
        result = predictor.predict_volume(src, gate_threshold=0.0)
        canonical = nib.as_closest_canonical(nib.load(src))
        assert result.masks.shape == (1, *canonical.shape)
        np.testing.assert_allclose(result.meta.affine, canonical.affine, atol=1e-4)
        assert 0 < result.masks.mean() < 1
        stored = result.masks_in_input_geometry()
        assert stored.shape == (1, *shape) and stored.dtype == np.uint8
        out = predictor.write_mask(result, Path(tmp) / "mask.nii.gz")
        written = nib.load(out)
        assert written.shape == shape
        np.testing.assert_allclose(written.affine, affine, atol=1e-4)
        # The qform is a float32 quaternion that cannot hold every rotation exactly (NIfTI
        # format): it must equal the input file's own qform, the sform the exact affine.
        src_qform = nib.load(src).header.get_qform()
        np.testing.assert_allclose(written.header.get_qform(), src_qform, atol=1e-4)
        np.testing.assert_allclose(written.header.get_sform(), affine, atol=1e-4)
        on_disk = np.asarray(written.dataobj)
        assert np.array_equal(on_disk, stored[0])
        back = np.asarray(nib.as_closest_canonical(written).dataobj)
        assert np.array_equal(back, result.masks[0])
        # The array path with the same affine lands on the same voxels.
        from_array = predictor.predict_volume(data, affine=affine, gate_threshold=0.0)
        assert np.array_equal(from_array.masks_in_input_geometry(), stored)
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    assert result.volumes_ml["WT"] == pytest.approx(result.masks.sum() * voxel_ml)
