"""Domain check, heuristic part: warnings when an input looks unlike what the model was
trained on, from its intensities, spacing and extent. They inform; the measured flag that
marks a prediction out of domain (a score, a threshold set on validation data) is
:mod:`tumorscope.inference.ood`."""

from __future__ import annotations

import numpy as np

from tumorscope.data.spec import IMAGE_CHANNEL, PreprocessSpec
from tumorscope.data.transforms import VolumeSlices
from tumorscope.data.types import LoadedCase

# The manifest holds no training-cohort intensity/spacing statistics, so "far from training"
# is judged against what the spec implies (channels, profile, crop, input size) and ranges
# any scan of the profile falls in. In-plane spacing (mm) per profile:
PLAUSIBLE_SPACING_MM: dict[str, tuple[float, float]] = {
    "brain-mri": (0.3, 6.0),
    "petct": (0.3, 8.0),
}
# In-plane extent (mm) of the brain/body foreground: a brain is ~120–200 mm across.
PLAUSIBLE_EXTENT_MM: dict[str, tuple[float, float]] = {
    "brain-mri": (80.0, 280.0),
    "petct": (40.0, 700.0),
}
MAX_SLICE_THICKNESS_MM = 10.0
MAX_UPSAMPLING = 4.0
MIN_DISTINCT_VALUES = 8
MAX_NEGATIVE_FRACTION = 0.05
_MRI_CHANNELS = frozenset({"flair", "t1", "t1ce", "t2"})


def _sample(x: np.ndarray, n: int = 200_000) -> np.ndarray:
    flat = np.asarray(x).reshape(-1)
    return flat[:: max(1, flat.size // n)]


def channel_warnings(name: str, values: np.ndarray) -> list[str]:
    """Intensity checks of one channel's raw values against its modality.

    Args:
        name: Canonical channel name (``flair``, ``ct``, ``pet``, ...).
        values: The channel's intensities, any shape.

    Returns:
        Human-readable warnings (empty when nothing is off).
    """
    v = _sample(values).astype(np.float64)
    lo, hi = float(v.min()), float(v.max())
    if hi == lo:
        return [f"channel {name} is constant ({lo:g}): nothing to see"]
    out = []
    distinct = np.unique(v).size
    if distinct <= MIN_DISTINCT_VALUES:
        out.append(
            f"channel {name} has only {distinct} distinct values: a label mask, not an image?"
        )
    negative = float((v < 0).mean())
    if name in _MRI_CHANNELS and negative > MAX_NEGATIVE_FRACTION:
        out.append(
            f"channel {name}: {negative:.0%} of values are negative; MRI magnitudes are not "
            "(already normalised, or not MRI?)"
        )
    if name == "ct" and (lo > -100.0 or hi < 100.0):
        out.append(f"channel ct spans [{lo:g}, {hi:g}]: does not look like Hounsfield units")
    if name == "pet" and negative > MAX_NEGATIVE_FRACTION:
        out.append(f"channel pet: {negative:.0%} of values are negative; SUV/activity are not")
    return out


def image_warnings(data: np.ndarray, side: int, spec: PreprocessSpec) -> list[str]:
    """Domain check of one 2D input (``(H, W)`` or ``(C, H, W)``; ``side`` of its square crop)."""
    if data.ndim == 2 or (data.shape[0] != len(spec.channels)):
        grey = data if data.ndim == 2 else data.mean(axis=0)
        out = channel_warnings(IMAGE_CHANNEL, grey)
        absent = [c for c in spec.channels if c != IMAGE_CHANNEL]
        if absent:
            out.append(f"greyscale image: channels {absent} zero-filled")
    else:
        out = [w for c, name in enumerate(spec.channels) for w in channel_warnings(name, data[c])]
    if side * MAX_UPSAMPLING < spec.image_size:
        out.append(
            f"foreground is {side} px across, upsampled more than {MAX_UPSAMPLING:g}× "
            f"to the model's {spec.image_size} px input"
        )
    return out


def volume_warnings(loaded: LoadedCase, slices: VolumeSlices, spec: PreprocessSpec) -> list[str]:
    """Domain check of a volume: spacing, foreground extent, channels, intensities, slices."""
    out = []
    sx, sy, sz = (float(s) for s in loaded.meta.spacing[:3])
    lo, hi = PLAUSIBLE_SPACING_MM.get(spec.profile, (0.1, 10.0))
    if not (lo <= sx <= hi and lo <= sy <= hi):
        out.append(f"in-plane spacing ({sx:.3g}, {sy:.3g}) mm is outside {lo:g}–{hi:g} mm")
    if sz > MAX_SLICE_THICKNESS_MM:
        out.append(f"slice spacing {sz:.3g} mm is above {MAX_SLICE_THICKNESS_MM:g} mm")
    if slices.slice_index.size:
        extent = slices.restore.box[2] / (1.0 + spec.crop_margin) * (sx + sy) / 2.0
        lo, hi = PLAUSIBLE_EXTENT_MM.get(spec.profile, (0.0, np.inf))
        if not lo <= extent <= hi:
            out.append(
                f"foreground is {extent:.0f} mm across, outside the {lo:g}–{hi:g} mm of a "
                f"{spec.profile} scan (wrong spacing in the header, or another body part?)"
            )
    present = loaded.channel_present or (True,) * len(spec.channels)
    for c, name in enumerate(spec.channels):
        if present[c]:
            out.extend(channel_warnings(name, loaded.image[c]))
        else:
            out.append(f"channel {name} is absent and zero-filled")
    if slices.slice_index.size < 3:
        out.append(f"only {slices.slice_index.size} slice(s) inside the brain/body mask")
    return out
