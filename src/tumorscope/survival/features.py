"""Per-patient tumour features of 3D region masks, in the input geometry, for a Cox model.

One call measures every region of one patient (predicted or ground-truth masks, any names:
``"WT"``, ``"TC"``, ``"ET"``, ``"GTVp"``, ``"GTVn"``, ...) on the grid they were given in,
with ``spacing`` in mm; the keys are :func:`feature_names`, region names lower-cased (``r``):

- ``{r}_ml``: volume, voxel count × voxel volume, in mL.
- ``log_{r}_ml``: ``log(1 + {r}_ml)``; a Cox model on burden works on a log scale.
- ``{r}_components``: 26-connected components of at least ``min_component_ml`` mL
  (smaller ones still count in the volume).
- ``{r}_sphericity``: ``π^(1/3)·(6V)^(2/3) / A`` of the marching-cubes mesh (level 0.5) of
  the mask padded by one zero voxel, ``A`` its area and ``V`` the volume it encloses, both
  in mm units (IBSI / pyradiomics "mesh" sphericity: ≤ 1, 1 only for a sphere).
- ``{r}_midline_mm``: ``|x_centroid − (X − 1)/2| × sx``, the distance of the centroid from
  the plane through the centre of axis 0 (the mid-sagittal plane of a canonical RAS volume,
  axis 0 being left–right), in mm.
- ``tc_fraction`` = TC / WT and ``et_fraction`` = ET / WT volumes, only when both regions are
  given.
- With ``pet`` (SUV values, same grid), inside ``pet_region``: ``suvmax``, ``suvmean``,
  ``mtv_ml`` (volume of the voxels with SUV ≥ ``suv_threshold``, mL) and ``tlg`` (their mean
  SUV × ``mtv_ml``).

An empty region (a patient with no predicted tumour) gets 0 for each of its features, and
fractions over an empty WT are 0: every value is a finite Python float, never NaN.

Memory stays bounded at the readers' voxel cap (512³): components and the mesh are computed
on the region's bounding box, and a box over :data:`MAX_LABEL_VOXELS` (components) or
:data:`MAX_MESH_VOXELS` (sphericity) is measured on a ``k``-fold max-pooled copy of it, with
``k`` the smallest factor that fits. No tumour at 1 mm is that large (a 100 mm box holds 10⁶
voxels), so only a pathological mask (e.g. speckle over a whole head) is approximated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from skimage import measure

FEATURE_VERSION = 1
"""Version of the feature definitions; bump it when one changes (older fits are then stale)."""

PET_FEATURES = ("suvmax", "suvmean", "mtv_ml", "tlg")
"""The PET feature keys, in :func:`feature_names` order."""

#: Bounding boxes up to this many voxels are labelled at full resolution (int32 labels: 64 MiB).
MAX_LABEL_VOXELS = 2**24
#: Bounding boxes up to this many voxels are meshed at full resolution.
MAX_MESH_VOXELS = 2**20
_FACE_CHUNK = 2**20  # triangles per step of the area/volume sums (bounds their temporaries)

_FRACTIONS = ("tc", "et")  # sub-regions whose share of WT is a feature
_CONNECTIVITY = ndimage.generate_binary_structure(3, 3)  # 3×3×3: 26-connectivity


def _region_keys(r: str) -> tuple[str, ...]:
    return (f"{r}_ml", f"log_{r}_ml", f"{r}_components", f"{r}_sphericity", f"{r}_midline_mm")


def _lowered(regions: Sequence[str]) -> list[str]:
    if isinstance(regions, str):
        raise ValueError(f"regions {regions!r}: expected a sequence of region names, not a str")
    lowered = [str(r).lower() for r in regions]
    if not lowered:
        raise ValueError("no regions: expected at least one region mask")
    dupes = sorted({r for r in lowered if lowered.count(r) > 1})
    if dupes:
        raise ValueError(f"regions {list(regions)}: names {dupes} repeat once lower-cased")
    return lowered


def feature_names(regions: Sequence[str], *, pet: bool = False) -> tuple[str, ...]:
    """The keys :func:`tumour_features` returns for these regions, in its fixed order.

    Args:
        regions: Region names, in the order of the masks (e.g. ``["WT", "TC", "ET"]``).
        pet: Whether PET features are measured.

    Returns:
        Each region's five features in region order, then ``tc_fraction`` and
        ``et_fraction`` (those whose regions are given with ``"WT"``), then
        :data:`PET_FEATURES` when ``pet``.

    Raises:
        ValueError: No regions, names equal once lower-cased, or two keys that collide.
    """
    lowered = _lowered(regions)
    names = [key for r in lowered for key in _region_keys(r)]
    if "wt" in lowered:
        names += [f"{sub}_fraction" for sub in _FRACTIONS if sub in lowered]
    if pet:
        names += PET_FEATURES
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ValueError(f"regions {list(regions)}: feature keys {clashes} collide")
    return tuple(names)


def _spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    message = f"spacing {spacing!r}: expected 3 positive finite numbers (mm)"
    try:
        values = tuple(float(v) for v in spacing)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(message)
    return values[0], values[1], values[2]


def _binary_masks(masks: Mapping[str, Any]) -> dict[str, NDArray[np.bool_]]:
    out: dict[str, NDArray[np.bool_]] = {}
    first: tuple[str, tuple[int, ...]] | None = None
    for name, mask in masks.items():
        a = np.asarray(mask)
        if a.ndim != 3:
            raise ValueError(f"mask {name!r}: expected a 3D (X, Y, Z) array, got shape {a.shape}")
        if first is None:
            first = (name, a.shape)
        elif a.shape != first[1]:
            raise ValueError(
                f"mask {name!r} has shape {a.shape} but mask {first[0]!r} has {first[1]}: "
                "all masks must have the same shape"
            )
        if a.dtype != np.bool_:
            binary = a.dtype == np.uint8 and (a.size == 0 or int(a.max()) <= 1)
            if binary:
                a = a.view(np.bool_)  # no copy: a predicted uint8 mask at the voxel cap is 128 MiB
            elif not bool(np.all((a == 0) | (a == 1))):
                raise ValueError(f"mask {name!r}: expected bool or 0/1 values (dtype {a.dtype})")
            else:
                a = a != 0
        out[name.lower()] = a
    return out


def _box(m: NDArray[np.bool_], limit: int) -> tuple[NDArray[np.bool_], int]:
    """The mask's bounding box, max-pooled by the smallest factor ``k`` that brings it to at
    most ``limit`` voxels, and ``k`` (the mask must not be empty)."""
    crop = m[ndimage.find_objects(m.view(np.uint8))[0]]
    k = 1
    while crop.size > limit * k**3:
        k += 1
    if k == 1:
        return crop, 1
    pad = [(0, -n % k) for n in crop.shape]
    full = np.pad(crop, pad)
    x, y, z = (n // k for n in full.shape)
    return np.asarray(full.reshape(x, k, y, k, z, k).any(axis=(1, 3, 5))), k


def _components(m: NDArray[np.bool_], voxel_mm3: float, min_ml: float) -> int:
    if not m.any():
        return 0
    crop, k = _box(m, MAX_LABEL_VOXELS)
    labels, n = ndimage.label(crop, structure=_CONNECTIVITY)
    if n == 0:
        return 0
    sizes = np.bincount(labels.ravel())[1:]
    return int(np.count_nonzero(sizes * voxel_mm3 * k**3 / 1000.0 >= min_ml))


def _sphericity(m: NDArray[np.bool_], spacing: tuple[float, float, float]) -> float:
    if not m.any():
        return 0.0
    crop, k = _box(m, MAX_MESH_VOXELS)  # crop: same mesh, translated, less work
    padded = np.pad(crop, 1).astype(np.float32)
    step = tuple(s * k for s in spacing)
    verts, faces, _, _ = measure.marching_cubes(padded, level=0.5, spacing=step)
    del padded
    area = volume = 0.0
    # skimage has no mesh volume: the divergence theorem over the closed mesh's triangles,
    # summed with the area in chunks so that a large mesh needs no large temporaries.
    for start in range(0, len(faces), _FACE_CHUNK):
        tri = verts[faces[start : start + _FACE_CHUNK]].astype(np.float64)
        area += 0.5 * float(
            np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
        )
        volume += float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum())
    # ``volume`` sums 6 × each tetrahedron's signed volume: |volume| is 6 V.
    return math.cbrt(math.pi) * abs(volume) ** (2.0 / 3.0) / area


def _midline_mm(m: NDArray[np.bool_], count: int, sx: float) -> float:
    if count == 0:
        return 0.0
    per_x = m.sum(axis=(1, 2), dtype=np.int64)
    x_centroid = float(per_x @ np.arange(m.shape[0])) / count
    return abs(x_centroid - (m.shape[0] - 1) / 2.0) * sx


def _pet(
    pet: Any, shape: tuple[int, ...], region: NDArray[np.bool_], voxel_mm3: float, threshold: float
) -> dict[str, float]:
    suv = np.asarray(pet)
    if suv.shape != shape:
        raise ValueError(f"pet has shape {suv.shape} but the masks have {shape}")
    if not np.isfinite(suv).all():
        raise ValueError(f"pet: {int(np.count_nonzero(~np.isfinite(suv)))} non-finite SUV values")
    values = suv[region].astype(np.float64)  # only the region's voxels in float64
    if values.size == 0:
        return dict.fromkeys(PET_FEATURES, 0.0)
    hot = values[values >= threshold]
    mtv_ml = hot.size * voxel_mm3 / 1000.0
    return {
        "suvmax": float(values.max()),
        "suvmean": float(values.mean()),
        "mtv_ml": mtv_ml,
        "tlg": float(hot.mean()) * mtv_ml if hot.size else 0.0,
    }


def tumour_features(
    masks: Mapping[str, np.ndarray],
    spacing: Sequence[float],
    *,
    min_component_ml: float = 0.1,
    pet: np.ndarray | None = None,
    pet_region: str | None = None,
    suv_threshold: float = 2.5,
) -> dict[str, float]:
    """Measure one patient's tumour features (module docstring) on its region masks.

    Args:
        masks: Region name → ``(X, Y, Z)`` bool or 0/1 mask, all the same shape, in canonical
            RAS voxel order (axis 0 left–right) for ``{r}_midline_mm``.
        spacing: Voxel size ``(sx, sy, sz)`` in mm.
        min_component_ml: Smallest component counted by ``{r}_components``, in mL.
        pet: ``(X, Y, Z)`` SUV values on the same grid, or None for no PET features.
        pet_region: Region the PET features are measured in (matched ignoring case);
            default the first region of ``masks``.
        suv_threshold: SUV at or above which a voxel is in the metabolic tumour volume.

    Returns:
        Feature name → finite float, keys in :func:`feature_names` order.

    Raises:
        ValueError: No regions, a mask that is not 3D, not binary, or of another shape than
            the others, a bad spacing, ``min_component_ml`` or ``suv_threshold``, a PET
            volume of another shape or with non-finite values, or an unknown ``pet_region``.
    """
    keys = feature_names(list(masks), pet=pet is not None)
    sx, sy, sz = voxel = _spacing(spacing)
    if not (math.isfinite(min_component_ml) and min_component_ml >= 0):
        raise ValueError(f"min_component_ml {min_component_ml!r}: expected a finite value >= 0")
    if not math.isfinite(suv_threshold):
        raise ValueError(f"suv_threshold {suv_threshold!r}: expected a finite SUV")
    arrays = _binary_masks(masks)
    region_for_pet = next(iter(arrays)) if pet_region is None else pet_region.lower()
    if region_for_pet not in arrays:
        raise ValueError(f"pet_region {pet_region!r}: expected one of {list(masks)}")
    voxel_mm3 = sx * sy * sz

    out: dict[str, float] = {}
    counts: dict[str, int] = {}
    for r, m in arrays.items():
        counts[r] = count = int(np.count_nonzero(m))
        ml = count * voxel_mm3 / 1000.0
        out[f"{r}_ml"] = ml
        out[f"log_{r}_ml"] = math.log1p(ml)
        out[f"{r}_components"] = float(_components(m, voxel_mm3, min_component_ml))
        out[f"{r}_sphericity"] = _sphericity(m, voxel)
        out[f"{r}_midline_mm"] = _midline_mm(m, count, sx)
    if "wt" in counts:
        for sub in _FRACTIONS:
            if sub in counts:
                # Same grid, so the volume ratio is the voxel-count ratio (exact for exact ones).
                out[f"{sub}_fraction"] = counts[sub] / counts["wt"] if counts["wt"] else 0.0
    if pet is not None:
        shape = next(iter(arrays.values())).shape
        out.update(_pet(pet, shape, arrays[region_for_pet], voxel_mm3, suv_threshold))
    return {k: float(out[k]) for k in keys}
