"""Brain anatomy from nilearn's bundled MNI152 template, warped per patient.

The template (1 mm, 197×233×189) and its grey/white-matter probability maps ship inside
nilearn (no download). They are loaded once per process and cached. A patient's anatomy is
the template seen through an inverse map *output mm → template voxel*: anisotropic
scale, rotation, shift and a smooth elastic displacement defined on a coarse control grid
and interpolated with separable Gaussian weights (a tensor product of three small
matrices, about ten times faster than ``scipy.ndimage.zoom`` of the displacement field).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

from tumorscope.synthetic.params import AnatomyParams

logger = logging.getLogger(__name__)

#: BraTS field of view (mm) of the default 240×240×155 grid at 1 mm.
BRAIN_FOV_MM: tuple[float, float, float] = (240.0, 240.0, 155.0)
BRAIN_SHAPE: tuple[int, int, int] = (240, 240, 155)
#: Spacing (mm) of the elastic control grid.
CONTROL_SPACING_MM = 40.0


@dataclass(frozen=True)
class Atlas:
    """The MNI152 template as float32 arrays on its own 1 mm grid (RAS voxel axes).

    Attributes:
        gm: Grey-matter probability ``(197, 233, 189)``.
        wm: White-matter probability, same shape.
        brain: Brain mask as float32 (0/1), same shape.
        centre: Template voxel at the centre of the brain's bounding box.
        half_extent: Half size of the brain's bounding box, voxels (= mm).
        sites: ``(N, 3)`` template voxels of deep white matter (tumour and mimic sites).
    """

    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray
    centre: np.ndarray
    half_extent: np.ndarray
    sites: np.ndarray


@lru_cache(maxsize=1)
def load_atlas() -> Atlas:
    """Load (once per process) the MNI152 template maps that ship with nilearn."""
    from nilearn import datasets  # deferred: nilearn is slow to import, needed once

    def arr(img: object) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(img.dataobj, dtype=np.float32))  # type: ignore[attr-defined]

    brain = (arr(datasets.load_mni152_brain_mask()) > 0).astype(np.float32)
    gm = arr(datasets.load_mni152_gm_template()) * brain
    wm = arr(datasets.load_mni152_wm_template()) * brain
    idx = np.argwhere(brain > 0)
    lo, hi = idx.min(0), idx.max(0)
    # Sites: confident white matter at least 12 mm inside the brain surface (distance on a
    # 2 mm grid: eight times cheaper than at 1 mm, and precise enough for a site list).
    depth = ndi.distance_transform_edt(brain[::2, ::2, ::2] > 0, sampling=2.0)
    sites = (np.argwhere((wm[::2, ::2, ::2] > 0.9) & (depth > 12.0)) * 2).astype(np.float32)
    logger.debug("MNI152 atlas loaded: %d deep white-matter sites", len(sites))
    return Atlas(
        gm=gm,
        wm=wm,
        brain=brain,
        centre=((lo + hi) / 2.0).astype(np.float32),
        half_extent=((hi - lo) / 2.0).astype(np.float32),
        sites=sites,
    )


@lru_cache(maxsize=1)
def outside_distance_mm() -> np.ndarray:
    """Distance (mm) from the brain outwards, 0 inside, on a 2 mm grid (template voxel / 2).

    Used for the skull and scalp of Kaggle images; a 2 mm grid is eight times cheaper and
    the distance is smooth enough for linear interpolation.
    """
    atlas = load_atlas()
    return ndi.distance_transform_edt(atlas.brain[::2, ::2, ::2] == 0, sampling=2.0).astype(
        np.float32
    )


def rotation(angles: tuple[float, float, float]) -> np.ndarray:
    """3×3 rotation matrix ``Rz · Ry · Rx`` for Euler angles (rad)."""
    ax, ay, az = angles
    cx, sx, cy, sy, cz, sz = (
        math.cos(ax),
        math.sin(ax),
        math.cos(ay),
        math.sin(ay),
        math.cos(az),
        math.sin(az),
    )
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def forward_matrix(anatomy: AnatomyParams) -> np.ndarray:
    """3×3 map from template mm (relative to the brain centre) to output mm: ``R · S``."""
    return rotation(anatomy.angles) @ np.diag(anatomy.scale)


@dataclass(frozen=True)
class ElasticField:
    """Smooth displacement (mm) on a coarse control grid spanning the field of view.

    Attributes:
        nodes: Control-point positions per axis (mm, relative to the field-of-view centre).
        values: ``(3, nx, ny, nz)`` displacement at the control points, mm.
    """

    nodes: tuple[np.ndarray, np.ndarray, np.ndarray]
    values: np.ndarray

    def _weights(self, axis: int, x: np.ndarray) -> np.ndarray:
        nodes = self.nodes[axis]
        h = 0.6 * CONTROL_SPACING_MM
        w = np.exp(-0.5 * ((x.reshape(-1, 1) - nodes.reshape(1, -1)) / h) ** 2)
        return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)

    def on_grid(self, axes_mm: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """Displacement ``(3, X, Y, Z)`` on the grid spanned by three 1D axes (mm)."""
        wx, wy, wz = (self._weights(a, axes_mm[a]) for a in range(3))
        out = np.einsum("xa,cabz->cxbz", wx, self.values, optimize=True)
        out = np.einsum("yb,cxbz->cxyz", wy, out, optimize=True)
        return np.ascontiguousarray(out @ wz.T)

    def at(self, points_mm: np.ndarray) -> np.ndarray:
        """Displacement ``(3, N)`` at arbitrary points ``(3, N)`` (mm)."""
        wx, wy, wz = (self._weights(a, points_mm[a]) for a in range(3))
        k, na, nb, nc = self.values.shape
        t = (wz @ self.values.reshape(k * na * nb, nc).T).reshape(
            -1, k, na, nb
        )  # BLAS over z first
        t = (t * wy[:, None, None, :]).sum(axis=3)
        return (t * wx[:, None, :]).sum(axis=2).T


def elastic_field(
    anatomy: AnatomyParams, fov_mm: tuple[float, float, float], rng: np.random.Generator
) -> ElasticField:
    """Draw the patient's elastic field (first draws of the render generator)."""

    def axis(f: float) -> np.ndarray:
        n = max(2, math.ceil(f / CONTROL_SPACING_MM) + 1)
        return np.linspace(-f / 2.0, f / 2.0, n).astype(np.float32)

    nodes = (axis(fov_mm[0]), axis(fov_mm[1]), axis(fov_mm[2]))
    shape = (3, *(len(n) for n in nodes))
    values = (rng.standard_normal(shape) * anatomy.elastic_mm).astype(np.float32)
    return ElasticField(nodes=nodes, values=values)


def template_coords_grid(
    anatomy: AnatomyParams,
    atlas: Atlas,
    axes_mm: tuple[np.ndarray, np.ndarray, np.ndarray],
    elastic: ElasticField,
) -> np.ndarray:
    """Template voxel coordinates ``(3, X, Y, Z)`` float32 of an output grid.

    Args:
        anatomy: Patient anatomy.
        atlas: The template.
        axes_mm: Output voxel centres per axis, mm relative to the field-of-view centre.
        elastic: The patient's elastic field.
    """
    inv = np.linalg.inv(forward_matrix(anatomy)).astype(np.float32)
    shift = np.asarray(anatomy.shift_mm, dtype=np.float32)
    rel = [np.asarray(axes_mm[a], dtype=np.float32) - shift[a] for a in range(3)]
    out = elastic.on_grid(axes_mm)
    for i in range(3):
        out[i] += (
            inv[i, 0] * rel[0][:, None, None]
            + inv[i, 1] * rel[1][None, :, None]
            + inv[i, 2] * rel[2][None, None, :]
            + atlas.centre[i]
        )
    return out


def template_coords_points(
    anatomy: AnatomyParams, atlas: Atlas, points_mm: np.ndarray, elastic: ElasticField
) -> np.ndarray:
    """Template voxel coordinates ``(3, N)`` of output points ``(3, N)`` (mm from the FOV centre)."""
    inv = np.linalg.inv(forward_matrix(anatomy)).astype(np.float32)
    shift = np.asarray(anatomy.shift_mm, dtype=np.float32).reshape(3, 1)
    q = inv @ (points_mm.astype(np.float32) - shift) + atlas.centre.reshape(3, 1)
    return (q + elastic.at(points_mm)).astype(np.float32)


def output_position_mm(
    anatomy: AnatomyParams, atlas: Atlas, template_vox: np.ndarray
) -> np.ndarray:
    """Approximate output position (mm from the FOV centre) of a template voxel (no elastic term)."""
    return forward_matrix(anatomy) @ (
        np.asarray(template_vox, dtype=float) - atlas.centre
    ) + np.asarray(anatomy.shift_mm)


def sample_maps(atlas: Atlas, coords: np.ndarray, *, skull: bool = False) -> dict[str, np.ndarray]:
    """Tissue probabilities at template coordinates ``(3, *S)`` (linear interpolation).

    Returns:
        ``{"gm", "wm", "csf", "brain"}`` float32 arrays of shape ``S`` (plus ``"outside"``,
        distance outside the brain in mm, when ``skull``).
    """

    def at(vol: np.ndarray, cval: float = 0.0) -> np.ndarray:
        return ndi.map_coordinates(
            vol, coords, order=1, mode="constant", cval=cval, prefilter=False
        )

    brain = at(atlas.brain)
    gm = at(atlas.gm)
    wm = at(atlas.wm)
    out = {"gm": gm, "wm": wm, "csf": np.clip(brain - gm - wm, 0.0, 1.0), "brain": brain}
    if skull:
        out["outside"] = ndi.map_coordinates(
            outside_distance_mm(),
            coords / np.float32(2.0),
            order=1,
            mode="nearest",
            prefilter=False,
        )
    return out


def lesion_centre(atlas: Atlas, site: float) -> np.ndarray:
    """Template voxel of the deep white-matter site at position ``site`` ∈ [0, 1)."""
    n = len(atlas.sites)
    return atlas.sites[min(int(site * n), n - 1)].astype(np.float64)
