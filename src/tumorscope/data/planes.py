"""Training slices beyond the axial cut: coronal and sagittal planes, other contrasts.

A one-channel model meets uploads of any plane and contrast, so its training volumes are
also cut along the other two planes (their masks come free) and, where a case has them,
in the other MRI contrasts (``data.train_contrasts``), normalised inside the same brain
mask. Every plane is shown the way 2D image datasets are: axial rows anterior→posterior,
columns patient right→left (radiological); coronal rows superior→inferior, columns
right→left; sagittal rows superior→inferior, columns anterior→posterior. Pixels are made
square from the voxel spacing before the square crop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tumorscope.data.intensity import apply_stats, intensity_stats
from tumorscope.data.spec import PreprocessSpec
from tumorscope.data.transforms import (
    VolumeParts,
    crop_square,
    resize,
    select_slices,
    square_box,
    to_display,
)

PLANES = ("axial", "coronal", "sagittal")
# In-plane axes (rows-to-be, columns-to-be) and normal of a canonical RAS (X, Y, Z) volume,
# ordered so that :func:`~tumorscope.data.transforms.to_display` gives each plane's view.
PLANE_AXES = {"axial": (0, 1, 2), "coronal": (0, 2, 1), "sagittal": (1, 2, 0)}


def plane_view(a: np.ndarray, plane: str) -> np.ndarray:
    """``(..., X, Y, Z)`` → ``(..., A, B, N)``: in-plane axes first, the plane's normal last."""
    lead = a.ndim - 3
    return np.transpose(a, (*range(lead), *(lead + i for i in PLANE_AXES[plane])))


@dataclass(frozen=True)
class PlaneCut:
    """Which slices of one plane are cut, and how.

    Attributes:
        plane: ``axial``, ``coronal`` or ``sagittal``.
        index: ``(N,)`` int64 slice indices along the plane's normal.
        box: Square crop ``(r0, c0, side)`` in square-pixel coordinates of the plane.
        zoom: In-plane factors that make pixels square (``(1, 1)`` for isotropic voxels).
    """

    plane: str
    index: np.ndarray
    box: tuple[int, int, int]
    zoom: tuple[float, float]


@dataclass(frozen=True)
class PlaneSlices:
    """Slices of one plane: ``images (N, C, S, S)``, ``masks (N, R, S, S)`` or None,
    ``tumour (N,)`` or None, ``alternates (N, K, S, S)`` or None, and their :class:`PlaneCut`."""

    cut: PlaneCut
    images: np.ndarray
    masks: np.ndarray | None
    tumour: np.ndarray | None
    alternates: np.ndarray | None


def square_zoom(spacing: Sequence[float], plane: str) -> tuple[float, float]:
    """In-plane resize factors that make a plane's pixels square (the finer spacing kept)."""
    a, b, _ = PLANE_AXES[plane]
    sa, sb = float(spacing[a]), float(spacing[b])
    s = min(sa, sb)
    return (sa / s, sb / s) if s > 0 else (1.0, 1.0)


def _square_pixels(a: np.ndarray, zoom: tuple[float, float]) -> np.ndarray:
    """Resize ``(K, A, B)`` by ``zoom`` (bilinear); unchanged for square pixels."""
    if abs(zoom[0] - 1.0) < 1e-3 and abs(zoom[1] - 1.0) < 1e-3:
        return a
    h, w = max(1, round(a.shape[-2] * zoom[0])), max(1, round(a.shape[-1] * zoom[1]))
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]
    return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0].numpy()


def plan_plane(
    parts: VolumeParts, spec: PreprocessSpec, plane: str, n: int, spacing: Sequence[float]
) -> PlaneCut:
    """Choose ``n`` slices of ``plane`` (tumour-balanced as axial ones) and their crop."""
    fgv = plane_view(parts.fg, plane)
    A, B, N = fgv.shape
    fraction = fgv.reshape(A * B, N).mean(axis=0)
    tumour = None
    if parts.t_mask is not None:
        tumour = np.asarray(plane_view(parts.t_mask, plane).any(axis=(0, 1)))
    index = select_slices(fraction, tumour, dataclasses.replace(spec, slices_per_patient=n))
    zoom = square_zoom(spacing, plane)
    flat = np.asarray(fgv.any(axis=2), dtype=np.float32)[None]
    projection = np.asarray(_square_pixels(flat, zoom)[0] >= 0.5)
    return PlaneCut(plane, index, square_box(projection, spec.crop_margin), zoom)


def cut_slices(
    values: np.ndarray,
    cut: PlaneCut,
    size: int,
    *,
    use: np.ndarray | None = None,
    stats: Sequence[tuple[float, float, float, float] | None] | None = None,
) -> np.ndarray:
    """Cut ``values (K, X, Y, Z)`` along ``cut``: ``(N, K, size, size)`` float32.

    With ``stats``, each slice is clipped and z-scored inside ``use`` first (intensities);
    without, the values are resized as they are (masks: threshold the result at 0.5).
    """
    view = plane_view(values, cut.plane)
    use_view = None if use is None else plane_view(use, cut.plane)
    out = np.zeros((cut.index.size, values.shape[0], size, size), dtype=np.float32)
    for i, k in enumerate(cut.index):  # one slice at a time keeps peak memory at one volume
        s = np.asarray(view[..., int(k)], dtype=np.float32)
        if stats is not None and use_view is not None:
            s = apply_stats(s, use_view[..., int(k)], stats)
        s = crop_square(_square_pixels(s, cut.zoom), cut.box)
        out[i] = to_display(resize(s[None], size)[0])
    return out


def cut_plane(
    image: np.ndarray,
    parts: VolumeParts,
    cut: PlaneCut,
    spec: PreprocessSpec,
    *,
    extra: tuple[np.ndarray, Sequence[bool]] | None = None,
) -> PlaneSlices:
    """Images, masks, slice labels and other contrasts of one plane's slices.

    Args:
        image: ``(C, X, Y, Z)`` the model's channels.
        parts: The volume's :func:`~tumorscope.data.transforms.volume_parts`.
        cut: From :func:`plan_plane` (or the axial cut of the volume).
        spec: Preprocessing parameters.
        extra: ``(K, X, Y, Z)`` other contrasts and which of them the case has; each is
            normalised inside the same brain mask with its own statistics.
    """
    S = spec.image_size
    images = cut_slices(image, cut, S, use=parts.use, stats=parts.stats)
    masks: np.ndarray | None = None
    tumour: np.ndarray | None = None
    if parts.regions is not None and parts.t_mask is not None:
        masks = (cut_slices(parts.regions.astype(np.float32), cut, S) >= 0.5).astype(np.uint8)
        if spec.tumour_region in spec.regions:
            tumour = np.asarray(masks[:, spec.regions.index(spec.tumour_region)].any(axis=(1, 2)))
        else:
            t = cut_slices(parts.t_mask[None].astype(np.float32), cut, S)[:, 0]
            tumour = np.asarray((t >= 0.5).any(axis=(1, 2)))
    alternates = None
    if extra is not None:
        values, present = extra
        stats = intensity_stats(values, parts.use, present, spec.clip_percentiles)
        alternates = cut_slices(values, cut, S, use=parts.use, stats=stats)
    return PlaneSlices(cut, images, masks, tumour, alternates)
