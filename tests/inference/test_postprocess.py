"""Volume post-processing: slice gate and small 3D components, against an independent reference.

The reference labels components with networkx over an explicit 26-neighbour voxel graph
(not scipy, which the implementation uses), and the hand-placed masks have components of
known size, so every expected voxel is known without our code.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from tumorscope.config import Config, load_config
from tumorscope.inference.postprocess import (
    CONNECTIVITY,
    PostprocessReport,
    min_component_voxels,
    postprocess_masks,
)
from tumorscope.inference.predictor import Predictor

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SPACING = (0.5, 0.5, 2.0)  # mm, anisotropic: one voxel is 0.5 mm³ = 0.0005 mL
VOXEL_ML = float(np.prod(SPACING)) / 1000.0
# 13 of the 26 neighbour offsets: each unordered voxel pair once.
FORWARD = [d for d in itertools.product((-1, 0, 1), repeat=3) if d > (0, 0, 0)]


def tiny_config(*overrides: str) -> Config:
    return load_config(CONFIGS / "tiny.yaml", overrides)


def components(mask: np.ndarray) -> list[set[tuple[int, int, int]]]:
    """26-connected components of a 3D mask, from a networkx graph of its voxels."""
    points = [(int(x), int(y), int(z)) for x, y, z in np.argwhere(mask)]
    present = set(points)
    graph = nx.Graph()
    graph.add_nodes_from(points)
    for x, y, z in points:
        for dx, dy, dz in FORWARD:
            q = (x + dx, y + dy, z + dz)
            if q in present:
                graph.add_edge((x, y, z), q)
    return [set(c) for c in nx.connected_components(graph)]


def reference(
    masks: np.ndarray,
    probs: np.ndarray,
    *,
    gate: float,
    voxel_ml: float,
    slice_gate: bool,
    min_ml: float,
) -> tuple[np.ndarray, int, int]:
    """(masks, slices zeroed, components removed) by the rule, written independently."""
    out = masks.copy()
    zeroed = 0
    if slice_gate:
        for z in range(out.shape[3]):
            if probs[z] < gate:
                zeroed += int(out[..., z].any())
                out[..., z] = 0
    removed = 0
    for r in range(out.shape[0]):
        for comp in components(out[r]):
            if len(comp) * voxel_ml < min_ml - 1e-12:
                removed += 1
                for p in comp:
                    out[r][p] = 0
    return out, zeroed, removed


def block(masks: np.ndarray, x: slice, y: slice, z: slice, region: int = 0) -> int:
    masks[region, x, y, z] = 1
    return int(masks[region, x, y, z].size)


@pytest.fixture
def islands() -> np.ndarray:
    """(1, 48, 40, 12): components of 1.2, 0.05, 0.2, 0.1 (exactly) and 0.1 mL (two
    0.05 mL blocks that touch only at a corner), each at least one voxel from the others."""
    m = np.zeros((1, 48, 40, 12), dtype=np.uint8)
    assert block(m, slice(0, 20), slice(0, 20), slice(0, 6)) * VOXEL_ML == pytest.approx(1.2)
    assert block(m, slice(24, 29), slice(0, 5), slice(0, 4)) * VOXEL_ML == pytest.approx(0.05)
    assert block(m, slice(24, 34), slice(8, 18), slice(0, 4)) * VOXEL_ML == pytest.approx(0.2)
    assert block(m, slice(36, 46), slice(0, 5), slice(0, 4)) * VOXEL_ML == pytest.approx(0.1)
    block(m, slice(0, 5), slice(24, 29), slice(2, 6))
    block(m, slice(5, 10), slice(29, 34), slice(6, 10))  # corner to corner with the one above
    return m


# --------------------------------------------------------------------------- components


def test_the_reference_sees_five_components_and_the_corner_pair_as_one(
    islands: np.ndarray,
) -> None:
    sizes = sorted(len(c) for c in components(islands[0]))
    assert sizes == [100, 200, 200, 400, 2400]
    assert CONNECTIVITY == 26


def test_islands_under_the_size_limit_are_removed_at_anisotropic_spacing(
    islands: np.ndarray,
) -> None:
    probs = np.ones(12)
    out, report = postprocess_masks(
        islands, probs, gate_threshold=0.3, voxel_ml=VOXEL_ML, min_component_ml=0.1
    )
    # Only the 0.05 mL island goes; the 0.1 mL block (exactly the limit) and the corner
    # pair (two 0.05 mL blocks, one 26-connected component of 0.1 mL) stay.
    expected = islands.copy()
    expected[0, 24:29, 0:5, 0:4] = 0
    assert np.array_equal(out, expected)
    assert out.dtype == np.uint8 and out.shape == islands.shape
    want, zeroed, removed = reference(
        islands, probs, gate=0.3, voxel_ml=VOXEL_ML, slice_gate=True, min_ml=0.1
    )
    assert np.array_equal(out, want) and (zeroed, removed) == (0, 1)
    assert report == PostprocessReport(
        slice_gate=True,
        gate_threshold=0.3,
        min_component_ml=0.1,
        connectivity=26,
        slices_zeroed=0,
        components_removed=1,
        voxels_removed=100,
    )
    # Just over 0.1 mL: the exact-limit block and the corner pair go as well.
    out2, report2 = postprocess_masks(
        islands, probs, gate_threshold=0.3, voxel_ml=VOXEL_ML, min_component_ml=0.1001
    )
    assert report2.components_removed == 3 and report2.voxels_removed == 500
    assert int(out2.sum()) == 2400 + 400


def test_slices_under_the_gate_are_zeroed_in_every_region() -> None:
    m = np.zeros((2, 9, 8, 10), dtype=np.uint8)
    block(m, slice(1, 7), slice(1, 7), slice(0, 8), region=0)
    block(m, slice(2, 5), slice(2, 5), slice(1, 7), region=1)  # a sub-region inside it
    probs = np.array([0.9, 0.1, 0.5, 0.29, 0.3, 0.8, 0.0, 0.7, 0.1, 0.05])
    out, report = postprocess_masks(m, probs, gate_threshold=0.3, voxel_ml=VOXEL_ML)
    under = probs < 0.3  # 0.3 itself is not under the gate
    assert np.flatnonzero(under).tolist() == [1, 3, 6, 8, 9]
    assert not out[..., under].any()
    assert np.array_equal(out[..., ~under], m[..., ~under])  # the rest bit for bit
    # Slices 8 and 9 were empty already: only 1, 3 and 6 were zeroed.
    assert report.slices_zeroed == 3 and report.components_removed == 0
    assert report.voxels_removed == 3 * (36 + 9)
    want, zeroed, _ = reference(m, probs, gate=0.3, voxel_ml=VOXEL_ML, slice_gate=True, min_ml=0)
    assert np.array_equal(out, want) and zeroed == 3
    off, off_report = postprocess_masks(
        m, probs, gate_threshold=0.3, voxel_ml=VOXEL_ML, slice_gate=False
    )
    assert np.array_equal(off, m) and off_report.slices_zeroed == 0


def test_the_gate_runs_first_so_fragments_it_cuts_off_are_removed() -> None:
    m = np.zeros((1, 7, 7, 12), dtype=np.uint8)
    block(m, slice(1, 6), slice(1, 6), slice(0, 12))  # 25 voxels = 0.0125 mL per slice
    probs = np.ones(12)
    probs[9] = 0.1
    out, report = postprocess_masks(
        m, probs, gate_threshold=0.3, voxel_ml=VOXEL_ML, min_component_ml=0.1
    )
    # z 0..8 (0.1125 mL) stays; z 10..11 (0.025 mL), cut off by the gate, goes.
    assert out[0, :, :, :9].sum() == 225 and not out[0, :, :, 9:].any()
    assert (report.slices_zeroed, report.components_removed, report.voxels_removed) == (1, 1, 75)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_masks_match_the_networkx_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    masks = (rng.random((2, 13, 11, 7)) < 0.22).astype(np.uint8)
    probs = rng.random(7)
    voxel_ml = 0.7 * 0.9 * 3.1 / 1000.0
    min_ml = 4.5 * voxel_ml  # components of 1..4 voxels go
    out, report = postprocess_masks(
        masks, probs, gate_threshold=0.4, voxel_ml=voxel_ml, min_component_ml=min_ml
    )
    want, zeroed, removed = reference(
        masks, probs, gate=0.4, voxel_ml=voxel_ml, slice_gate=True, min_ml=min_ml
    )
    assert removed > 0 and zeroed > 0  # the case exercises both steps
    assert np.array_equal(out, want)
    assert (report.slices_zeroed, report.components_removed) == (zeroed, removed)
    assert report.voxels_removed == int(masks.sum() - want.sum())
    kept = [len(c) for r in range(2) for c in components(out[r])]
    assert min(kept) >= 5


def test_degenerate_masks_and_switched_off_steps() -> None:
    empty = np.zeros((1, 5, 6, 4), dtype=np.uint8)
    out, report = postprocess_masks(
        empty, np.zeros(4), gate_threshold=0.5, voxel_ml=VOXEL_ML, min_component_ml=1.0
    )
    assert not out.any() and report.voxels_removed == report.slices_zeroed == 0
    m = np.zeros((1, 5, 6, 4), dtype=np.uint8)
    m[0, 2, 3, 1] = 1  # a single voxel
    kept = m.copy()
    same, r = postprocess_masks(
        m, np.zeros(4), gate_threshold=0.5, voxel_ml=VOXEL_ML, slice_gate=False
    )
    assert np.array_equal(same, m) and same is not m and r.components_removed == 0
    gone, r = postprocess_masks(
        m, np.ones(4), gate_threshold=0.5, voxel_ml=1e-3, min_component_ml=2e-3
    )
    assert not gone.any() and r.components_removed == 1
    assert np.array_equal(m, kept)  # the input is never modified
    as_bool, _ = postprocess_masks(
        m.astype(bool), np.ones(4), gate_threshold=0.5, voxel_ml=VOXEL_ML
    )
    assert as_bool.dtype == np.bool_ and np.array_equal(as_bool, m.astype(bool))


def test_min_component_voxels_rounds_up_and_tolerates_float_voxel_sizes() -> None:
    assert min_component_voxels(0.1, VOXEL_ML) == 200  # 0.1 / 0.0005, not 201
    assert min_component_voxels(0.1, 0.009) == 12  # 11.1 voxels: 12 needed
    assert min_component_voxels(0.0, 0.009) == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"masks": np.zeros((4, 4, 4), np.uint8)}, r"expected \(R, X, Y, Z\)"),
        ({"slice_probability": np.zeros(3)}, r"shape \(3,\) does not match the 4 axial"),
        ({"slice_probability": np.full(4, np.nan)}, r"probabilities in \[0, 1\]"),
        ({"gate_threshold": 1.5}, r"gate_threshold: 1\.5 is not a probability"),
        ({"voxel_ml": 0.0}, r"voxel_ml: 0\.0 is not a positive"),
        ({"min_component_ml": -0.1}, r"min_component_ml: -0\.1 is not a volume"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {
        "masks": np.zeros((1, 4, 4, 4), np.uint8),
        "slice_probability": np.ones(4),
        "gate_threshold": 0.3,
        "voxel_ml": 1e-3,
        "min_component_ml": 0.1,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        postprocess_masks(**args)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- predict_volume


def head(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A bright ellipsoid 'head' with a brighter off-centre blob on a dark noisy background."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    r2 = sum(g**2 for g in grid)
    blob = sum((g - 0.3) ** 2 for g in grid)
    x = np.where(r2 < 0.7, 100.0, 0.0) + np.where(blob < 0.08, 120.0, 0.0)
    return (x + rng.uniform(0, 5, size=shape)).astype(np.float32)


AFFINE = np.diag([-2.0, 1.5, 3.0, 1.0])  # stored L-A-S, 9 mm³ voxels
AFFINE_VOXEL_ML = 2.0 * 1.5 * 3.0 / 1000.0


def by_z(probabilities: dict[int, float], depth: int) -> np.ndarray:
    out = np.zeros(depth)
    for z, p in probabilities.items():
        out[z] = p
    return out


def test_predict_volume_masks_are_the_ungated_output_post_processed() -> None:
    p = Predictor.from_config(tiny_config(), seed=3)
    volume = head((30, 26, 14))
    raw = p.predict_volume(
        volume, affine=AFFINE, gate_threshold=0.0, slice_gate=False, min_component_ml=0.0
    )
    assert raw.masks_ungated.any() and np.array_equal(raw.masks, raw.masks_ungated)
    assert raw.postprocess is not None and raw.postprocess.voxels_removed == 0
    # A gate at the median probability of the slices with tumour zeroes some of them; a
    # size limit between the smallest and the largest remaining component removes some.
    depth = raw.masks.shape[3]
    probs = by_z(raw.slice_probabilities, depth)
    with_tumour = np.flatnonzero(raw.masks_ungated[0].any(axis=(0, 1)))
    gate = float(np.median(probs[with_tumour]))
    after_gate = raw.masks_ungated.copy()
    after_gate[..., probs < gate] = 0
    sizes = sorted(len(c) for c in components(after_gate[0]))
    assert sizes, "the untrained model predicts no tumour above the gate"
    min_ml = (sizes[0] + 0.5) * AFFINE_VOXEL_ML if len(sizes) > 1 else 0.5 * AFFINE_VOXEL_ML

    r = p.predict_volume(
        volume, affine=AFFINE, gate_threshold=gate, slice_gate=True, min_component_ml=min_ml
    )
    assert not r.gated and r.gate_threshold == gate
    assert np.array_equal(r.masks_ungated, raw.masks_ungated)  # raw output, untouched
    want, zeroed, removed = reference(
        r.masks_ungated, probs, gate=gate, voxel_ml=AFFINE_VOXEL_ML, slice_gate=True, min_ml=min_ml
    )
    assert np.array_equal(r.masks, want)
    assert zeroed > 0 and removed == sum(s * AFFINE_VOXEL_ML < min_ml for s in sizes)
    assert removed > 0 or len(sizes) == 1
    assert r.postprocess == PostprocessReport(
        slice_gate=True,
        gate_threshold=gate,
        min_component_ml=min_ml,
        slices_zeroed=zeroed,
        components_removed=removed,
        voxels_removed=int(r.masks_ungated.sum() - want.sum()),
    )
    assert r.volumes_ml["WT"] == pytest.approx(int(want.sum()) * AFFINE_VOXEL_ML)
    doc = json.loads(json.dumps(r.to_json(), allow_nan=False))
    assert doc["postprocess"] == {
        "slice_gate": True,
        "gate_threshold": gate,
        "min_component_ml": min_ml,
        "connectivity": 26,
        "slices_zeroed": zeroed,
        "components_removed": removed,
        "voxels_removed": int(r.masks_ungated.sum() - want.sum()),
    }


def test_post_processing_settings_come_from_the_run_and_survive_a_reload(
    tmp_path: Path,
) -> None:
    default = Predictor.from_config(tiny_config(), seed=3)
    assert (default.slice_gate, default.min_component_ml) == (True, 0.1)
    cfg = tiny_config("calibration.slice_gate=false", "calibration.min_component_ml=0.5")
    p = Predictor.from_config(cfg, seed=3)
    assert (p.slice_gate, p.min_component_ml) == (False, 0.5)
    stored = json.loads((p.save(tmp_path / "run") / "manifest.json").read_text())
    assert stored["calibration"]["slice_gate"] is False
    assert stored["calibration"]["min_component_ml"] == 0.5
    again = Predictor.from_run(tmp_path / "run")
    assert (again.slice_gate, again.min_component_ml) == (False, 0.5)
    r = again.predict_volume(head((30, 26, 14)), affine=AFFINE, gate_threshold=0.0)
    assert r.postprocess is not None
    assert (r.postprocess.slice_gate, r.postprocess.min_component_ml) == (False, 0.5)
    override = Predictor.from_config(cfg, calibration={"min_component_ml": 0.2}, seed=3)
    assert override.min_component_ml == 0.2 and override.slice_gate is False
    with pytest.raises(ValueError, match=r"min_component_ml: -1\.0 is not a volume"):
        p.predict_volume(head((30, 26, 14)), affine=AFFINE, min_component_ml=-1.0)


def test_a_segmentation_only_model_gets_the_same_post_processing() -> None:
    p = Predictor.from_config(tiny_config("model.heads=[]"), seed=3)
    r = p.predict_volume(head((30, 26, 14)), affine=AFFINE, gate_threshold=0.3)
    assert r.postprocess is not None and not r.gated
    assert (r.postprocess.slice_gate, r.postprocess.min_component_ml) == (True, 0.1)
    probs = by_z(r.slice_probabilities, r.masks.shape[3])
    want, zeroed, removed = reference(
        r.masks_ungated, probs, gate=0.3, voxel_ml=AFFINE_VOXEL_ML, slice_gate=True, min_ml=0.1
    )
    assert np.array_equal(r.masks, want)
    assert (r.postprocess.slices_zeroed, r.postprocess.components_removed) == (zeroed, removed)


@pytest.mark.parametrize(
    ("seed", "min_voxels", "slab"), [(0, 3, 2), (1, 5, 3), (2, 12, 4), (3, 2, 1)]
)
def test_slabbed_removal_equals_whole_volume_labelling(
    monkeypatch: pytest.MonkeyPatch, seed: int, min_voxels: int, slab: int
) -> None:
    # Slabs of a few slices with min_voxels of margin give the same result as labelling the
    # whole box at once (scipy's labeller with the 26-neighbourhood as the reference).
    from scipy import ndimage

    from tumorscope.inference import postprocess

    rng = np.random.default_rng(seed)
    mask = (rng.random((14, 13, 40)) < 0.25).astype(np.uint8)
    mask[3:6, 3:6, 2:38] = 1  # a long component across every slab
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    small = sizes < min_voxels
    small[0] = False
    expected = np.where(small[labels], 0, mask).astype(np.uint8)
    monkeypatch.setattr(postprocess, "_WHOLE_VOXELS", 0)
    monkeypatch.setattr(postprocess, "_SLAB", slab)
    got = mask.copy()
    removed = postprocess._remove_small(got, min_voxels)
    np.testing.assert_array_equal(got, expected)
    assert removed == int(small.sum()) > 0
