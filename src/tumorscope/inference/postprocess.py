"""Post-processing of a predicted volume's masks: the slice gate and small-component removal.

Two steps, in this order, on the thresholded network output ``(R, X, Y, Z)``:

1. **Slice gate** (``slice_gate``): every axial slice whose calibrated tumour probability
   is under ``gate_threshold`` is zeroed. Only a model with a tumour head has an
   independent per-slice opinion; a segmentation-only model's slice probability is its
   largest pixel probability, so there the gate removes only faint slices.
2. **Small components** (``min_component_ml``): 3D connected components (26-connectivity,
   :data:`CONNECTIVITY`) smaller than ``min_component_ml`` millilitres are removed, region
   by region, measured with the volume's real voxel size.

Gating first means the returned mask never holds a component under the size limit, not
even one that the gate cut off from a larger one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

# Full (face, edge and corner) 3D neighbourhood, as nnU-Net v2's component post-processing
# (skimage ``label`` with ``connectivity=None``) and MONAI's ``KeepLargestConnectedComponent``
# default; a tumour touching itself only diagonally across slices of a thick-sliced scan
# is still one tumour.
CONNECTIVITY = 26
_STRUCTURE = ndimage.generate_binary_structure(3, 3)  # the 3×3×3 cube: 26 neighbours
# A component of exactly ``min_component_ml`` is kept despite the rounding of voxel sizes.
_SIZE_RTOL = 1e-9
# Axial slices zeroed at a time by the small-component removal (bounds its transient).
_CHUNK = 16
# Bounding boxes up to this many voxels are labelled whole; larger ones in axial slabs of
# _SLAB slices (plus margins), which bounds the label map's memory.
_WHOLE_VOXELS = 2**24
_SLAB = 64


@dataclass(frozen=True)
class PostprocessReport:
    """What :func:`postprocess_masks` did to one volume's masks.

    Attributes:
        slice_gate: Whether the slice gate was applied.
        gate_threshold: Slice probability under which a slice was zeroed.
        min_component_ml: Size (mL) under which a 3D component was removed (0: none).
        connectivity: Voxel neighbourhood of the components (:data:`CONNECTIVITY`).
        slices_zeroed: Axial slices holding mask voxels (any region) that the gate zeroed.
        components_removed: 3D components removed, summed over regions.
        voxels_removed: Mask voxels removed by both steps, summed over regions.
    """

    slice_gate: bool
    gate_threshold: float
    min_component_ml: float
    connectivity: int = CONNECTIVITY
    slices_zeroed: int = 0
    components_removed: int = 0
    voxels_removed: int = 0

    def to_json(self) -> dict[str, Any]:
        """JSON-able mapping."""
        return {
            "slice_gate": self.slice_gate,
            "gate_threshold": self.gate_threshold,
            "min_component_ml": self.min_component_ml,
            "connectivity": self.connectivity,
            "slices_zeroed": self.slices_zeroed,
            "components_removed": self.components_removed,
            "voxels_removed": self.voxels_removed,
        }


def min_component_voxels(min_component_ml: float, voxel_ml: float) -> int:
    """The fewest voxels a kept component has: ``ceil(min_component_ml / voxel_ml)``
    (MONAI ``RemoveSmallObjects(by_measure=True)``'s rule), tolerant of float rounding."""
    if min_component_ml <= 0:
        return 0
    return math.ceil(min_component_ml / voxel_ml * (1.0 - _SIZE_RTOL))


def postprocess_masks(
    masks: np.ndarray,
    slice_probability: np.ndarray,
    *,
    gate_threshold: float,
    voxel_ml: float,
    slice_gate: bool = True,
    min_component_ml: float = 0.0,
) -> tuple[np.ndarray, PostprocessReport]:
    """Apply the slice gate, then remove 3D components under ``min_component_ml``.

    Args:
        masks: ``(R, X, Y, Z)`` binary masks (uint8 or bool; non-zero = foreground), the
            last axis axial. Not modified.
        slice_probability: ``(Z,)`` calibrated tumour probability of each axial slice.
        gate_threshold: Slices with probability strictly under it are zeroed (when
            ``slice_gate``); in [0, 1].
        voxel_ml: Volume of one voxel in mL (``|det(affine[:3, :3])| / 1000``).
        slice_gate: Apply the slice gate.
        min_component_ml: Components (per region, 26-connected) with a volume under this
            many mL are removed; 0 removes none.

    Returns:
        ``(masks, report)``: a new array of the input's shape and dtype, equal to the input
        except where a step removed voxels, and the :class:`PostprocessReport`.

    Raises:
        ValueError: Masks not 4D, a probability vector that does not match their depth or
            is not in [0, 1], or a gate, voxel size or size limit out of range.
    """
    if masks.ndim != 4:
        raise ValueError(f"masks: expected (R, X, Y, Z), got shape {masks.shape}")
    probs = np.asarray(slice_probability, dtype=np.float64)
    if probs.shape != (masks.shape[3],):
        raise ValueError(
            f"slice_probability: shape {probs.shape} does not match the {masks.shape[3]} "
            f"axial slices of masks {masks.shape}"
        )
    if not np.all((probs >= 0.0) & (probs <= 1.0)):  # also refuses NaN
        raise ValueError("slice_probability: values must be probabilities in [0, 1]")
    if not 0.0 <= gate_threshold <= 1.0:
        raise ValueError(f"gate_threshold: {gate_threshold} is not a probability in [0, 1]")
    if not (math.isfinite(voxel_ml) and voxel_ml > 0):
        raise ValueError(f"voxel_ml: {voxel_ml} is not a positive voxel volume")
    if not (math.isfinite(min_component_ml) and min_component_ml >= 0):
        raise ValueError(f"min_component_ml: {min_component_ml} is not a volume >= 0 mL")
    out = masks.copy()
    before = int(np.count_nonzero(masks))
    slices_zeroed = 0
    if slice_gate:
        under = probs < gate_threshold
        slices_zeroed = int((out.any(axis=(0, 1, 2)) & under).sum())
        out[..., under] = 0
    removed = 0
    min_voxels = min_component_voxels(min_component_ml, voxel_ml)
    if min_voxels > 1:
        for region in out:
            removed += _remove_small(region, min_voxels)
    report = PostprocessReport(
        slice_gate=bool(slice_gate),
        gate_threshold=float(gate_threshold),
        min_component_ml=float(min_component_ml),
        slices_zeroed=slices_zeroed,
        components_removed=removed,
        voxels_removed=before - int(np.count_nonzero(out)),
    )
    return out, report


def _label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected labels of ``mask``: uint16 when the components fit (a quarter of the
    memory of scipy's default), else int32."""
    out = np.empty(mask.shape, dtype=np.uint16)
    try:
        n = ndimage.label(mask, structure=_STRUCTURE, output=out)
    except RuntimeError:  # more components than uint16 holds
        del out
        return ndimage.label(mask, structure=_STRUCTURE)
    return out, int(n)


def _remove_small(region: np.ndarray, min_voxels: int) -> int:
    """Zero, in place, the 26-connected components of ``region`` (X, Y, Z) with fewer than
    ``min_voxels`` voxels; return how many were removed.

    Memory stays near one uint16 label map of an axial slab of the mask's bounding box.
    A component of fewer than ``m = min_voxels`` voxels spans fewer than ``m`` slices, so
    slabs of :data:`_SLAB` slices are labelled with ``m`` slices of margin on each side: a
    component that touches neither cut face of its block lies wholly inside it (its size
    there is its size), and one that touches a cut face either spans ``m`` slices or more
    (not small) or lies wholly inside the neighbouring slab's block, which decides it.
    """
    # The bounding box of the foreground from axis projections (no volume-sized temporary).
    box = []
    for axis in range(3):
        hit = np.flatnonzero(np.any(region, axis=tuple(a for a in range(3) if a != axis)))
        if hit.size == 0:
            return 0
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    crop = region[tuple(box)]  # a view: zeroing it zeroes region
    depth = crop.shape[2]
    slab = depth if crop.size <= _WHOLE_VOXELS else _SLAB
    removed = 0
    for z0 in range(0, depth, slab):
        lo, hi = max(0, z0 - min_voxels), min(depth, z0 + slab + min_voxels)
        block = crop[:, :, lo:hi]
        labels, n = _label(block)
        if n == 0:
            continue
        small = np.bincount(labels.ravel(), minlength=n + 1) < min_voxels
        small[0] = False
        for face, cut in ((0, lo > 0), (-1, hi < depth)):
            if cut:  # decided by the neighbouring slab's block
                small[np.unique(labels[:, :, face])] = False
        if small.any():
            for k in range(0, block.shape[2], _CHUNK):
                block[:, :, k : k + _CHUNK][small[labels[:, :, k : k + _CHUNK]]] = 0
            removed += int(small.sum())
    return removed
