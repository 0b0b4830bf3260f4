"""Render a synthetic BraTS patient: four contrasts and a label volume.

Intensities are relative to white matter (= 1) until the last step: tissue means per
contrast weighted by the warped tissue probabilities (partial volume), lesions blended in
by their fractional memberships, a multiplicative bias field, optional motion ghosting,
Rician noise, skull stripping (zero background) and a per-patient gain into int16.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from tumorscope.data.types import BRAIN_CHANNELS
from tumorscope.synthetic.anatomy import (
    BRAIN_FOV_MM,
    BRAIN_SHAPE,
    Atlas,
    elastic_field,
    lesion_centre,
    load_atlas,
    output_position_mm,
    sample_maps,
    template_coords_grid,
)
from tumorscope.synthetic.lesions import LesionShape, make_shape, mass_effect, memberships
from tumorscope.synthetic.params import LesionParams, PatientParams

logger = logging.getLogger(__name__)

#: Tissue means relative to white matter; rows follow BRAIN_CHANNELS, columns CSF, GM, WM.
TISSUE = np.array(
    [
        [0.22, 1.18, 1.0],  # flair: CSF suppressed, GM brighter than WM
        [0.3, 0.72, 1.0],  # t1
        [0.32, 0.75, 1.0],  # t1ce
        [2.3, 1.35, 1.0],  # t2: CSF bright
    ],
    dtype=np.float32,
)
#: Lesion compartment means relative to white matter, per contrast (flair, t1, t1ce, t2).
LESION = {
    "oedema": (1.95, 0.7, 0.72, 1.9),
    "enhancing": (1.5, 0.72, 2.2, 1.45),
    "non_enhancing": (1.85, 0.68, 0.74, 1.75),
    "necrosis": (1.1, 0.42, 0.48, 2.1),
    "mimic": (1.75, 0.85, 0.88, 1.6),
}
#: Minimum whole-tumour volume every rendered patient has (BraTS cases all have a tumour).
MIN_TUMOUR_ML = 0.1


@dataclass(frozen=True)
class BrainVolume:
    """A rendered patient in RAS voxel order.

    Attributes:
        images: Channel name → ``(X, Y, Z)`` int16 (zero background).
        seg: ``(X, Y, Z)`` uint8 BraTS labels 0, 1, 2, 4.
        spacing: Voxel size, mm.
    """

    images: dict[str, np.ndarray]
    seg: np.ndarray
    spacing: tuple[float, float, float]


def grid_axes(
    shape: tuple[int, int, int], fov_mm: tuple[float, float, float]
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], tuple[float, float, float]]:
    """Voxel-centre positions per axis (mm from the FOV centre) and the spacing (mm)."""
    sx, sy, sz = (f / n for f, n in zip(fov_mm, shape, strict=True))

    def axis(n: int, s: float) -> np.ndarray:
        return ((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32)

    return (axis(shape[0], sx), axis(shape[1], sy), axis(shape[2], sz)), (sx, sy, sz)


def _box(centre_mm: np.ndarray, half_mm: float, axes: tuple[np.ndarray, ...]) -> tuple[slice, ...]:
    out = []
    for a in range(3):
        lo = int(np.searchsorted(axes[a], centre_mm[a] - half_mm))
        hi = int(np.searchsorted(axes[a], centre_mm[a] + half_mm, side="right"))
        out.append(slice(max(lo, 0), max(min(hi, len(axes[a])), 0)))
    return tuple(out)


def _lerp(img: np.ndarray, value: float, m: np.ndarray) -> None:
    img += m * (np.float32(value) - img)


def lesion_shapes(params: PatientParams, atlas: Atlas) -> list[tuple[LesionParams, LesionShape]]:
    """Shapes of the patient's tumours then mimics, centred on deep white-matter sites."""
    out = []
    for les in (*params.lesions, *params.mimics):
        centre = lesion_centre(atlas, les.site) + np.asarray(les.offset_mm)
        out.append((les, make_shape(les, centre)))
    return out


def shade(
    params: PatientParams,
    maps: dict[str, np.ndarray],
    q: np.ndarray,
    items: list[tuple[LesionParams, LesionShape, np.ndarray | None]],
    width_mm: float,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Relative intensities of the four contrasts and the labels at ``N`` template points.

    Args:
        params: The patient.
        maps: Tissue probabilities at the (mass-effect-displaced) points, each ``(N,)``.
        q: ``(3, N)`` template coordinates before mass effect (lesions live there).
        items: Lesions with their shapes and the indices of the points each can touch
            (None = all points).
        width_mm: Partial-volume width (about one voxel), mm.

    Returns:
        ``(images, seg, tumour)``: four float32 ``(N,)`` arrays relative to white matter,
        uint8 BraTS labels ``(N,)``, and the float32 solid-tumour membership ``(N,)``.
    """
    jitter = np.asarray(params.anatomy.contrast_jitter, dtype=np.float32).reshape(4, 3)
    tissue = TISSUE * jitter
    images = [
        tissue[c, 0] * maps["csf"] + tissue[c, 1] * maps["gm"] + tissue[c, 2] * maps["wm"]
        for c in range(4)
    ]
    n = maps["brain"].shape[0]
    seg = np.zeros(n, dtype=np.uint8)
    tumour = np.zeros(n, dtype=np.float32)
    inside = maps["brain"] > 0.5
    for les, shape, sel in items:
        idx = np.arange(n) if sel is None else sel
        if idx.size == 0:
            continue
        m = memberships(shape, les, q[:, idx], maps["wm"][idx], width_mm)
        keep = inside[idx]
        cons = les.conspicuity
        kinds = (
            ("mimic",)
            if les.kind == "mimic"
            else ("oedema", "enhancing" if les.enhancing else "non_enhancing", "necrosis")
        )
        weights = (m["solid"],) if les.kind == "mimic" else (m["oedema"], m["solid"], m["core"])
        for c in range(4):
            view = images[c][idx]
            for kind, w in zip(kinds, weights, strict=True):
                _lerp(view, 1.0 + cons * (LESION[kind][c] - 1.0), w * keep)
            images[c][idx] = view
        if les.kind == "mimic":
            continue
        labels = seg[idx]
        solid = (m["solid"] > 0.5) & keep
        labels[(m["oedema"] > 0.5) & keep & (labels == 0)] = 2
        labels[solid] = 4 if les.enhancing else 1
        labels[solid & (m["core"] > 0.5)] = 1
        seg[idx] = labels
        tumour[idx] = np.maximum(tumour[idx], m["solid"] * keep)
    return images, seg, tumour


def ensure_min_tumour(
    seg: np.ndarray, tumour: np.ndarray, enhancing: bool, voxel_ml: float
) -> None:
    """Label the most tumour-like voxels until the whole tumour reaches :data:`MIN_TUMOUR_ML`.

    At coarse test resolutions a sub-centimetre lesion may cover no voxel centre; BraTS
    never ships an empty case, so the generator does not either.
    """
    need = math.ceil(MIN_TUMOUR_ML / voxel_ml)
    have = int(np.count_nonzero(seg))
    if have >= need:
        return
    order = np.argsort(-tumour, axis=None, kind="stable")[: need * 4]
    flat = seg.reshape(-1)
    for i in order:
        if have >= need:
            break
        if flat[i] == 0 and tumour.reshape(-1)[i] > 0:
            flat[i] = 4 if enhancing else 1
            have += 1


def bias_field(
    rng: np.random.Generator, axes: tuple[np.ndarray, ...], strength: float, fov: tuple[float, ...]
) -> list[np.ndarray]:
    """Smooth multiplicative bias ``exp(f_x(x) + f_y(y) + f_z(z))``, returned as the three log-terms.

    Args:
        rng: Render generator.
        axes: Voxel-centre positions per axis, mm.
        strength: Standard deviation of each cosine coefficient (log-amplitude).
        fov: Field of view per axis, mm (sets the lowest frequency).

    Returns:
        One float32 1D array per axis; the field at voxel ``(i, j, k)`` is
        ``exp(f[0][i] + f[1][j] + f[2][k])``.
    """
    out = []
    for a in range(len(axes)):
        x = axes[a] / np.float32(fov[a])
        coef = rng.normal(0.0, strength, 2)
        phase = rng.uniform(0.0, 2.0 * np.pi, 2)
        out.append(
            (
                coef[0] * np.cos(np.pi * x + phase[0]) + coef[1] * np.cos(2 * np.pi * x + phase[1])
            ).astype(np.float32)
        )
    return out


def _brain_points(atlas: Atlas, q: np.ndarray) -> np.ndarray:
    """Boolean ``(X, Y, Z)`` of grid points within two voxels of the brain (coarse test)."""
    coarse = ndi.map_coordinates(
        atlas.brain, q[:, ::2, ::2, ::2], order=0, mode="constant", prefilter=False
    )
    coarse = ndi.binary_dilation(coarse > 0, iterations=1)
    near = coarse.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    return near[: q.shape[1], : q.shape[2], : q.shape[3]]


def render_brain(params: PatientParams, shape: tuple[int, int, int] | None = None) -> BrainVolume:
    """Render one BraTS patient on the BraTS field of view (240×240×155 mm).

    Only points near the brain are computed (a point list), about a third of the grid.

    Args:
        params: The patient (profile ``brain-mri``).
        shape: Output grid; default 240×240×155 (1 mm). Smaller shapes keep the field of
            view, so the voxels get larger.

    Returns:
        The four contrasts (int16) and labels (uint8) in RAS voxel order.
    """
    shape = shape or BRAIN_SHAPE
    atlas = load_atlas()
    anatomy = params.anatomy
    rng = np.random.default_rng(anatomy.render_seed)
    elastic = elastic_field(anatomy, BRAIN_FOV_MM, rng)
    axes, spacing = grid_axes(shape, BRAIN_FOV_MM)
    margin = 3.0 * anatomy.elastic_mm + 2.0 * max(spacing)
    corners = (
        np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        * atlas.half_extent
    )
    pos = np.array([output_position_mm(anatomy, atlas, atlas.centre + c) for c in corners])
    crop = tuple(
        slice(
            max(0, int(np.searchsorted(axes[a], pos[:, a].min() - margin))),
            min(
                len(axes[a]), int(np.searchsorted(axes[a], pos[:, a].max() + margin, side="right"))
            ),
        )
        for a in range(3)
    )
    caxes = (axes[0][crop[0]], axes[1][crop[1]], axes[2][crop[2]])
    grid_q = template_coords_grid(anatomy, atlas, caxes, elastic)
    near = _brain_points(atlas, grid_q)
    ijk = np.nonzero(near)
    q = grid_q[:, near]
    del grid_q
    items: list[tuple[LesionParams, LesionShape, np.ndarray | None]] = []
    scale = max(anatomy.scale)
    for les, lshape in lesion_shapes(params, atlas):
        half = lshape.extent_mm * max(les.oedema, 1.0) * 1.5 * scale + margin
        box = _box(output_position_mm(anatomy, atlas, lshape.centre), half, caxes)
        sel = np.ones(q.shape[1], dtype=bool)
        for a in range(3):
            sel &= (ijk[a] >= box[a].start) & (ijk[a] < box[a].stop)
        items.append((les, lshape, np.flatnonzero(sel)))
    q_tissue = q
    for les, lshape, idx in items:
        if les.kind == "tumour" and idx is not None and idx.size:
            if q_tissue is q:
                q_tissue = q.copy()
            q_tissue[:, idx] = mass_effect(lshape, les, q[:, idx])
    maps = sample_maps(atlas, q_tissue)
    images, seg_pts, tumour = shade(params, maps, q, items, width_mm=max(spacing))
    del q, q_tissue
    if params.lesions:
        ensure_min_tumour(seg_pts, tumour, params.lesions[0].enhancing, math.prod(spacing) / 1000.0)
    inside = maps["brain"] > 0.5
    crop_shape = near.shape
    seg = np.zeros(shape, dtype=np.uint8)
    sub = np.zeros(crop_shape, dtype=np.uint8)
    sub[ijk] = seg_pts * inside
    seg[crop] = sub
    out: dict[str, np.ndarray] = {}
    for c, name in enumerate(BRAIN_CHANNELS):
        f = bias_field(rng, caxes, anatomy.bias, BRAIN_FOV_MM)
        img = images[c] * np.exp(f[0][ijk[0]] + f[1][ijk[1]] + f[2][ijk[2]])
        if anatomy.ghosting > 0.0:
            dense = np.zeros(crop_shape, dtype=np.float32)
            dense[ijk] = img
            k = max(1, crop_shape[1] // 3)
            dense += np.float32(anatomy.ghosting / 2.0) * (
                np.roll(dense, k, axis=1) + np.roll(dense, -k, axis=1)
            )
            img = dense[ijk]
        vals = img[inside]
        sigma = np.float32(anatomy.noise)
        n1 = rng.standard_normal(vals.shape, dtype=np.float32) * sigma
        n2 = rng.standard_normal(vals.shape, dtype=np.float32) * sigma
        vals = np.sqrt((vals + n1) ** 2 + n2**2) * np.float32(anatomy.gains[c])
        pts = np.zeros(inside.shape, dtype=np.int16)
        pts[inside] = np.clip(np.rint(vals), 1, 32767).astype(np.int16)
        sub16 = np.zeros(crop_shape, dtype=np.int16)
        sub16[ijk] = pts
        vol = np.zeros(shape, dtype=np.int16)
        vol[crop] = sub16
        out[name] = vol
    return BrainVolume(images=out, seg=seg, spacing=spacing)
