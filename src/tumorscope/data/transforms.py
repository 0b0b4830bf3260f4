"""Preprocessing of volumes and 2D images into model-ready square slices.

One :class:`PreprocessSpec` value describes every step; it is saved with the cache and
with every run, and prediction applies exactly the same steps from it. The steps:

1. foreground mask: per channel, voxels above ``min + foreground_threshold·(p99 − min)``,
   united over channels, largest connected component, holes filled per slice;
2. per-channel percentile clipping and z-scoring *inside* the foreground (nnU-Net's
   non-zero-mask normalisation); background set to 0 (both in :mod:`.intensity`);
3. volumes: choice of axial slices (tumour / non-tumour balance, minimum foreground);
4. square crop around the foreground bounding box (padded, ``crop_margin``), resized to
   ``image_size`` (bilinear with anti-aliasing for images, bilinear + 0.5 threshold for
   masks), in radiological display orientation (rows anterior→posterior, columns
   patient right→left), the orientation of 2D image datasets.

Everything needed to invert step 4 is recorded, so per-slice predictions map back onto
the canonical volume grid (:func:`restore_volume`) or the input image
(:func:`restore_image_mask`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tumorscope.data.intensity import apply_stats, foreground_mask, intensity_stats, normalise
from tumorscope.data.layout import region_masks
from tumorscope.data.spec import IMAGE_CHANNEL, PreprocessSpec
from tumorscope.data.types import DataError, LoadedCase


@dataclass(frozen=True)
class VolumeRestore:
    """How slices were cut from a canonical volume, to map predictions back.

    Attributes:
        shape: Canonical spatial shape ``(X, Y, Z)`` of the volume.
        box: Square crop ``(x0, y0, side)`` in voxels; may extend past the volume (padding).
        image_size: Side S of the output slices.
    """

    shape: tuple[int, int, int]
    box: tuple[int, int, int]
    image_size: int


@dataclass(frozen=True)
class VolumeSlices:
    """Preprocessed slices of one volume.

    Attributes:
        images: ``(N, C, S, S)`` float32.
        masks: ``(N, R, S, S)`` uint8 region masks, or None when the case has no mask.
        slice_index: ``(N,)`` int64 axial index z in the canonical volume.
        foreground: ``(N,)`` float32 fraction of the slice inside the foreground mask.
        tumour: ``(N,)`` bool, tumour region present in the slice; None without a mask.
        restore: The crop record that :func:`restore_volume` inverts.
    """

    images: np.ndarray
    masks: np.ndarray | None
    slice_index: np.ndarray
    foreground: np.ndarray
    tumour: np.ndarray | None
    restore: VolumeRestore


@dataclass(frozen=True)
class ImageRestore:
    """How a 2D image was cut: ``input_shape (H, W)`` and square ``box (r0, c0, side)``."""

    input_shape: tuple[int, int]
    box: tuple[int, int, int]
    image_size: int


@dataclass(frozen=True)
class PreparedImage:
    """A preprocessed 2D image: ``image (C, S, S)`` float32 and its restore record."""

    image: np.ndarray
    restore: ImageRestore


# --------------------------------------------------------------------------- helpers


def square_box(fg2d: np.ndarray, margin: float) -> tuple[int, int, int]:
    """Square ``(r0, c0, side)`` around the True pixels of a 2D mask (whole array if none)."""
    rows, cols = np.nonzero(fg2d)
    if rows.size == 0:
        r_lo, r_hi, c_lo, c_hi = 0, fg2d.shape[0], 0, fg2d.shape[1]
    else:
        r_lo, r_hi, c_lo, c_hi = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    side = max(1, round(max(r_hi - r_lo, c_hi - c_lo) * (1.0 + margin)))
    r0 = int(np.floor((r_lo + r_hi - side) / 2))
    c0 = int(np.floor((c_lo + c_hi - side) / 2))
    return r0, c0, side


def _overlap(start: int, side: int, length: int) -> tuple[int, int, int, int]:
    """Source ``[a, b)`` in ``[0, length)`` and destination offset range of a window."""
    a, b = max(0, start), min(length, start + side)
    return a, b, a - start, b - start


def crop_square(a: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    """Crop the last two axes of ``a`` to the square ``box``, zero-padding outside."""
    r0, c0, side = box
    out = np.zeros((*a.shape[:-2], side, side), dtype=a.dtype)
    ra, rb, da, db = _overlap(r0, side, a.shape[-2])
    ca, cb, ea, eb = _overlap(c0, side, a.shape[-1])
    if rb > ra and cb > ca:
        out[..., da:db, ea:eb] = a[..., ra:rb, ca:cb]
    return out


def resize(a: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of ``(N, C, H, W)`` float to ``(N, C, size, size)`` (anti-aliased when shrinking)."""
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    shrink = size < max(a.shape[-2], a.shape[-1])
    out = F.interpolate(
        t, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink
    )
    return out.numpy()


def to_display(a: np.ndarray) -> np.ndarray:
    """Canonical RAS ``(..., X, Y)`` slice → radiological view (rows A→P, columns R→L)."""
    return np.ascontiguousarray(np.swapaxes(a[..., ::-1, ::-1], -1, -2))


def from_display(a: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_display`."""
    return np.ascontiguousarray(np.swapaxes(a, -1, -2)[..., ::-1, ::-1])


def _evenly(candidates: np.ndarray, n: int) -> np.ndarray:
    """``n`` evenly spaced items of a sorted index array (deterministic, covers the range)."""
    if n <= 0 or candidates.size == 0:
        return candidates[:0]
    if n >= candidates.size:
        return candidates
    pos = np.round(np.linspace(0, candidates.size - 1, n)).astype(int)
    return candidates[np.unique(pos)]


def select_slices(
    fg_fraction: np.ndarray,
    tumour: np.ndarray | None,
    spec: PreprocessSpec,
    *,
    all_slices: bool = False,
) -> np.ndarray:
    """Axial slices to keep, sorted.

    Args:
        fg_fraction: ``(Z,)`` foreground fraction per slice.
        tumour: ``(Z,)`` bool tumour presence, or None without a mask.
        spec: Slice-selection parameters.
        all_slices: Keep every slice with enough foreground (prediction).

    Returns:
        ``(N,)`` int64 slice indices.
    """
    enough = fg_fraction >= spec.min_foreground_fraction
    if all_slices:
        return np.nonzero(enough | (tumour if tumour is not None else False))[0].astype(np.int64)
    n = spec.slices_per_patient
    if tumour is None:
        return _evenly(np.nonzero(enough)[0], n).astype(np.int64)
    t_idx = np.nonzero(tumour)[0]
    nt_idx = np.nonzero(enough & ~tumour)[0]
    n_t = min(t_idx.size, round(n * spec.tumour_slice_fraction))
    n_nt = min(nt_idx.size, n - n_t)
    n_t = min(t_idx.size, n - n_nt)  # top up with tumour slices when non-tumour ones run out
    return np.sort(np.concatenate([_evenly(t_idx, n_t), _evenly(nt_idx, n_nt)])).astype(np.int64)


# --------------------------------------------------------------------------- volumes


@dataclass(frozen=True)
class VolumeParts:
    """What every cut of one canonical volume shares (axial slices, other planes, contrasts).

    Attributes:
        fg: ``(X, Y, Z)`` bool brain/body mask.
        use: Mask the intensity statistics come from (``fg``, or every voxel when empty).
        stats: Per-channel :func:`~tumorscope.data.intensity.intensity_stats` inside ``use``.
        regions: ``(R, X, Y, Z)`` bool region masks, or None without a mask.
        t_mask: ``(X, Y, Z)`` bool tumour region, or None without a mask.
    """

    fg: np.ndarray
    use: np.ndarray
    stats: list[tuple[float, float, float, float] | None]
    regions: np.ndarray | None
    t_mask: np.ndarray | None


def volume_parts(case: LoadedCase, spec: PreprocessSpec, *, source: str) -> VolumeParts:
    """Foreground, intensity statistics and region masks of a canonical volume.

    Raises:
        DataError: If the image is not 4D, has the wrong channel count or unknown labels.
    """
    img = case.image
    if img.ndim != 4 or img.shape[0] != len(spec.channels):
        raise DataError(
            case.meta.path, f"image shape {img.shape} is not (C={len(spec.channels)}, X, Y, Z)"
        )
    present = case.channel_present or (True,) * img.shape[0]
    fg = foreground_mask(img, present, spec.foreground_threshold)
    regions: np.ndarray | None = None
    t_mask: np.ndarray | None = None
    if case.mask is not None:
        labels = case.labels if case.labels is not None else source
        try:
            regions = region_masks(case.mask, labels, spec.regions).astype(bool)
            if spec.tumour_region in spec.regions:
                t_mask = regions[spec.regions.index(spec.tumour_region)]
            else:
                t_mask = region_masks(case.mask, labels, (spec.tumour_region,))[0].astype(bool)
        except ValueError as e:
            raise DataError(case.meta.path, str(e)) from None
    # Statistics over the whole foreground, applied to the kept slices only (fast).
    use = fg if fg.any() else np.ones_like(fg)
    stats = intensity_stats(img, use, present, spec.clip_percentiles)
    return VolumeParts(fg=fg, use=use, stats=stats, regions=regions, t_mask=t_mask)


def preprocess_volume(
    case: LoadedCase,
    spec: PreprocessSpec,
    *,
    source: str,
    all_slices: bool = False,
    parts: VolumeParts | None = None,
) -> VolumeSlices:
    """Cut a canonical volume into normalised, cropped, resized axial slices.

    Args:
        case: ``image (C, X, Y, Z)`` with channels in ``spec.channels`` order, optional mask.
        spec: Preprocessing parameters.
        source: Layout name (``brats``, ``hecktor``, ...); its label convention maps the
            mask onto regions when ``case.labels`` is None (a case built in memory).
        all_slices: Keep every slice with enough foreground instead of the balanced choice.
        parts: The case's :func:`volume_parts` when already computed.

    Returns:
        :class:`VolumeSlices` with ``images (N, C, S, S)``; N may be 0 for an empty volume.

    Raises:
        DataError: If the image is not 4D or has the wrong channel count.
    """
    parts = parts or volume_parts(case, spec, source=source)
    img, fg, regions, t_mask = case.image, parts.fg, parts.regions, parts.t_mask
    X, Y, Z = (int(s) for s in img.shape[1:])
    fg_fraction = fg.reshape(X * Y, Z).mean(axis=0).astype(np.float32)
    tumour = None if t_mask is None else np.asarray(t_mask.any(axis=(0, 1)))
    z = select_slices(fg_fraction, tumour, spec, all_slices=all_slices)
    r0, c0, side = square_box(np.asarray(fg.any(axis=2)), spec.crop_margin)
    restore = VolumeRestore(shape=(X, Y, Z), box=(r0, c0, side), image_size=spec.image_size)
    S = spec.image_size
    use, stats = parts.use, parts.stats
    images = np.zeros((z.size, img.shape[0], S, S), dtype=np.float32)
    masks = None if regions is None else np.zeros((z.size, len(spec.regions), S, S), dtype=np.uint8)
    # The slice label comes from the same resized, thresholded mask the model trains on: a
    # boundary slice whose tumour vanishes in the resize is a tumour-free slice.
    slice_labels = None if tumour is None else np.zeros(z.size, dtype=bool)
    t_index = spec.regions.index(spec.tumour_region) if spec.tumour_region in spec.regions else -1
    for i, zi in enumerate(z):  # one slice at a time keeps peak memory at one volume
        cut = crop_square(apply_stats(img[:, :, :, zi], use[:, :, zi], stats), restore.box)
        images[i] = to_display(resize(cut[None], S)[0])
        if masks is not None and regions is not None and slice_labels is not None:
            m = crop_square(regions[:, :, :, zi].astype(np.float32), restore.box)
            masks[i] = to_display(resize(m[None], S)[0] >= 0.5).astype(np.uint8)
            if t_index >= 0:
                slice_labels[i] = bool(masks[i, t_index].any())
            elif t_mask is not None:
                t = crop_square(t_mask[None, :, :, zi].astype(np.float32), restore.box)
                slice_labels[i] = bool((resize(t, S)[0] >= 0.5).any())
    return VolumeSlices(
        images=images,
        masks=masks,
        slice_index=z,
        foreground=fg_fraction[z],
        tumour=slice_labels,
        restore=restore,
    )


# Slices resized back at a time: bounds the transient to RESTORE_CHUNK full-size slices.
RESTORE_CHUNK = 16


def restore_volume(
    slice_probs: np.ndarray,
    slices: VolumeSlices,
    shape: Sequence[int],
    *,
    threshold: float | None = None,
) -> np.ndarray:
    """Map per-slice predictions back onto the canonical volume grid.

    Args:
        slice_probs: ``(N, R, S, S)`` per-slice maps (probabilities or masks), in the order
            of ``slices.slice_index``.
        slices: The :class:`VolumeSlices` the predictions were made on.
        shape: Canonical spatial shape ``(X, Y, Z)``.
        threshold: When given, return the binary masks ``map >= threshold`` as uint8
            (a quarter of the memory of the float maps, never held in full).

    Returns:
        ``(R, X, Y, Z)`` float32 (uint8 with ``threshold``); slices not predicted are 0.
    """
    X, Y, Z = (int(s) for s in shape)
    n, r = slice_probs.shape[:2]
    if n != slices.slice_index.size:
        raise ValueError(f"{n} slice maps for {slices.slice_index.size} slices")
    out = np.zeros((r, X, Y, Z), dtype=np.float32 if threshold is None else np.uint8)
    r0, c0, side = slices.restore.box
    ra, rb, da, db = _overlap(r0, side, X)
    ca, cb, ea, eb = _overlap(c0, side, Y)
    if n == 0 or rb <= ra or cb <= ca:
        return out
    for a in range(0, n, RESTORE_CHUNK):
        chunk = np.asarray(slice_probs[a : a + RESTORE_CHUNK], dtype=np.float32)
        canon = resize(from_display(chunk), side)[:, :, da:db, ea:eb]
        if threshold is not None:
            canon = canon >= threshold
        for i, zi in enumerate(slices.slice_index[a : a + RESTORE_CHUNK]):
            out[:, ra:rb, ca:cb, int(zi)] = canon[i]
    return out


# --------------------------------------------------------------------------- 2D images


def prepare_image(
    image: np.ndarray, spec: PreprocessSpec, *, path: str = "<image>"
) -> PreparedImage:
    """Preprocess a 2D image the way volume slices are, and record how to invert it.

    A greyscale image (``(H, W)``, or ``(1|3, H, W)`` averaged to grey) fills the FLAIR
    channel; other channels are zero (``missing_channels=zero_fill``). An image with
    ``len(spec.channels)`` channels is used as is.

    Args:
        image: ``(H, W)`` or ``(C, H, W)`` intensities, any range.
        spec: Preprocessing parameters.
        path: Named in errors.

    Returns:
        :class:`PreparedImage` with ``image (C, S, S)`` float32.

    Raises:
        DataError: Wrong dimensions, or a grey image for a multi-channel spec with
            ``missing_channels=error`` or without a FLAIR channel.
    """
    a = np.asarray(image, dtype=np.float32)
    n_ch = len(spec.channels)
    if a.ndim == 3 and a.shape[0] == n_ch:
        present = (True,) * n_ch
        full = a
    else:
        if a.ndim == 3 and a.shape[0] in (1, 3):
            a = a.mean(axis=0)
        if a.ndim != 2:
            raise DataError(path, f"image shape {image.shape} is not (H, W) or (C, H, W)")
        if IMAGE_CHANNEL not in spec.channels:
            raise DataError(
                path, f"a greyscale image has no place among channels {list(spec.channels)}"
            )
        if n_ch > 1 and spec.missing_channels == "error":
            raise DataError(
                path,
                f"greyscale image lacks channels {list(spec.channels)} (missing_channels=error)",
            )
        k = spec.channels.index(IMAGE_CHANNEL)
        full = np.zeros((n_ch, *a.shape), dtype=np.float32)
        full[k] = a
        present = tuple(i == k for i in range(n_ch))
    if not np.isfinite(full).all():
        raise DataError(path, "image holds NaN or Inf values")
    fg = foreground_mask(full, present, spec.foreground_threshold)
    norm = normalise(full, fg, present, spec.clip_percentiles)
    box = square_box(fg, spec.crop_margin)
    out = resize(crop_square(norm, box)[None], spec.image_size)[0]
    h, w = (int(s) for s in full.shape[1:])
    return PreparedImage(
        image=out, restore=ImageRestore(input_shape=(h, w), box=box, image_size=spec.image_size)
    )


def preprocess_image(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Preprocess a 2D image into ``(C, S, S)`` float32 (see :func:`prepare_image`)."""
    return prepare_image(image, spec).image


def restore_image_mask(probs: np.ndarray, restore: ImageRestore) -> np.ndarray:
    """Map ``(S, S)`` or ``(R, S, S)`` per-image maps back to the input size ``(…, H, W)``."""
    a = np.asarray(probs, dtype=np.float32)
    squeeze = a.ndim == 2
    a3 = a[None] if squeeze else a
    r0, c0, side = restore.box
    h, w = restore.input_shape
    out = np.zeros((a3.shape[0], h, w), dtype=np.float32)
    ra, rb, da, db = _overlap(r0, side, h)
    ca, cb, ea, eb = _overlap(c0, side, w)
    if rb > ra and cb > ca:
        big = resize(a3[None], side)[0]
        out[:, ra:rb, ca:cb] = big[:, da:db, ea:eb]
    return out[0] if squeeze else out
