"""Training augmentation of one slice, a pure function of its random generator.

``light`` (:func:`light`): flips and a small per-channel scale/shift inside the foreground.
``full`` (:func:`full`), for images from anywhere:

1. a contrast drawn from the slice's other contrasts (``data.train_contrasts``; the model's
   own channel in half the draws), for the tumour label only: the mask
   stays with the model's own contrast;
2. flips; rotation (±30°) and scaling (0.7–1.4), the same warp for image and mask;
3. volume slices *re-rendered as uploads* (one-channel models): back to raw-like
   intensities, a random crop margin, skull, scalp and CSF bands outside the brain, a
   smooth bias field, background noise, 8-bit quantisation or JPEG, then the very preprocessing an uploaded
   image gets (:func:`~tumorscope.data.transforms.prepare_image`: the 2D foreground rule,
   per-image normalisation, square crop) — so the network meets per-image statistics and
   whole-head crops as well as skull-stripped, whole-volume-normalised slices;
4. nnU-Net's intensity augmentation: brightness, contrast, gamma (also of the inverted
   image), Gaussian noise, Gaussian blur and simulated low resolution.

Hand-written on NumPy/SciPy rather than MONAI's per-sample transforms: one slice of 96²
costs well under a millisecond per step here, and each draw stays a pure function of the
``(seed, slice, draw)`` generator that resumed and distributed runs replay.
"""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
from PIL import Image
from scipy import ndimage

from tumorscope.data.spec import PreprocessSpec
from tumorscope.data.transforms import crop_square, prepare_image, resize

P_OWN_CONTRAST = 0.5
P_FLIP = 0.5
P_ROTATE, MAX_ROTATE_DEG = 0.3, 30.0
P_SCALE, SCALE = 0.3, (0.7, 1.4)
P_UPLOAD = 0.35
P_SKULL = 0.7
P_JPEG, JPEG_QUALITY = 0.5, (30, 95)
P_BIAS, BIAS_STRENGTH = 0.5, (0.1, 0.4)  # smooth multiplicative field: exp(±strength)
MARGIN = (0.0, 0.45)  # extra canvas per side, as a fraction of the slice side
P_BRIGHTNESS, BRIGHTNESS = 0.15, (0.75, 1.25)
P_CONTRAST, CONTRAST = 0.15, (0.75, 1.25)
P_GAMMA, GAMMA, P_INVERT = 0.3, (0.7, 1.5), 0.1
P_NOISE, NOISE_VARIANCE = 0.1, (0.0, 0.1)
P_BLUR, BLUR_SIGMA = 0.2, (0.5, 1.0)
P_LOWRES, LOWRES_ZOOM = 0.25, (0.5, 1.0)


def light(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Flips and a per-channel scale (0.9–1.1) and shift (±0.1) inside the foreground."""
    image, mask = flips(rng, image, mask)
    fg = image != 0
    scale = rng.uniform(0.9, 1.1, size=(image.shape[0], 1, 1)).astype(np.float32)
    shift = rng.uniform(-0.1, 0.1, size=(image.shape[0], 1, 1)).astype(np.float32)
    return np.where(fg, image * scale + shift, 0.0).astype(np.float32), mask


def flips(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Left-right and up-down flips, each with probability :data:`P_FLIP`."""
    for axis in (-1, -2):
        if rng.random() < P_FLIP:
            image, mask = np.flip(image, axis), np.flip(mask, axis)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def choose_contrast(
    rng: np.random.Generator, image: np.ndarray, alternates: np.ndarray | None, bits: int
) -> tuple[np.ndarray, bool]:
    """The slice in one of its contrasts: its own with probability :data:`P_OWN_CONTRAST`,
    else one of the present alternates at random; and whether it is its own."""
    if alternates is None or not bits:
        return image, True
    have = [k for k in range(alternates.shape[0]) if bits >> k & 1]
    if rng.random() < P_OWN_CONTRAST:
        return image, True
    return alternates[have[int(rng.integers(len(have)))]][None].astype(np.float32), False


def warp(
    image: np.ndarray, mask: np.ndarray, angle_deg: float, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate by ``angle_deg`` and scale by ``scale`` about the centre (content grows for
    ``scale > 1``); bilinear, zero outside; the mask thresholded at 0.5."""
    a = math.radians(angle_deg)
    c, s = math.cos(a) / scale, math.sin(a) / scale
    matrix = np.array([[c, -s], [s, c]])
    centre = (np.array(image.shape[-2:], dtype=np.float64) - 1) / 2
    offset = centre - matrix @ centre

    def one(x: np.ndarray) -> np.ndarray:
        return ndimage.affine_transform(x, matrix, offset=offset, order=1, cval=0.0)

    out_image = np.stack([one(x) for x in image.astype(np.float32)])
    out_mask = np.stack([one(m) >= 0.5 for m in mask.astype(np.float32)])
    return out_image.astype(np.float32), out_mask.astype(np.uint8)


def spatial(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and scaling, each with its probability, in one warp."""
    angle = rng.uniform(-MAX_ROTATE_DEG, MAX_ROTATE_DEG) if rng.random() < P_ROTATE else 0.0
    scale = rng.uniform(*SCALE) if rng.random() < P_SCALE else 1.0
    if angle == 0.0 and scale == 1.0:
        return image, mask
    return warp(image, mask, angle, scale)


def gamma(x: np.ndarray, g: float, *, invert: bool = False) -> np.ndarray:
    """nnU-Net's gamma: ``x`` rescaled to [0, 1], raised to ``g``, mapped back to its range,
    then shifted and scaled back to its own mean and standard deviation; ``invert`` applies
    it to ``-x`` (and negates the result)."""
    v = -x if invert else x
    mean, std = v.mean(), v.std()
    lo, span = v.min(), v.max() - v.min()
    y = np.power((v - lo) / max(span, 1e-7), g) * span + lo
    y = (y - y.mean()) / max(y.std(), 1e-7) * std + mean
    return np.asarray(-y if invert else y, dtype=np.float32)


def intensity(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Brightness, contrast, gamma, noise, blur and low resolution inside the foreground."""
    fg = image != 0
    out = image.astype(np.float32).copy()
    for c in range(out.shape[0]):
        m = fg[c]
        if m.sum() < 4:
            continue
        v = out[c][m]
        if rng.random() < P_BRIGHTNESS:
            v = v * rng.uniform(*BRIGHTNESS)
        if rng.random() < P_CONTRAST:
            mean, lo, hi = v.mean(), v.min(), v.max()
            v = np.clip((v - mean) * rng.uniform(*CONTRAST) + mean, lo, hi)
        if rng.random() < P_GAMMA:
            v = gamma(v, rng.uniform(*GAMMA), invert=bool(rng.random() < P_INVERT))
        if rng.random() < P_NOISE:
            v = v + rng.normal(0.0, math.sqrt(rng.uniform(*NOISE_VARIANCE)), v.shape)
        out[c][m] = v
        if rng.random() < P_BLUR:
            out[c] = np.where(m, ndimage.gaussian_filter(out[c], rng.uniform(*BLUR_SIGMA)), 0)
        if rng.random() < P_LOWRES:
            out[c] = np.where(m, low_resolution(out[c], rng.uniform(*LOWRES_ZOOM)), 0)
    return np.where(fg, out, 0.0).astype(np.float32)


def low_resolution(x: np.ndarray, zoom: float) -> np.ndarray:
    """nnU-Net's simulated low resolution: nearest down to ``zoom`` of the size, cubic up."""
    small = ndimage.zoom(x, zoom, order=0, grid_mode=True, mode="grid-constant")
    back = (x.shape[0] / small.shape[0], x.shape[1] / small.shape[1])
    return np.asarray(ndimage.zoom(small, back, order=3, grid_mode=True, mode="nearest"))


def head_bands(rng: np.random.Generator, fg: np.ndarray, level: float, unit: float) -> np.ndarray:
    """CSF, skull and scalp bands outside a brain mask, as intensities (0 elsewhere).

    ``level`` is the brain's typical intensity; ``unit`` pixels per 1/96 of the slice.
    Thicknesses and brightness are drawn per call; the distance to the brain is warped by
    smooth noise so the bands are not perfect offsets of the brain outline.
    """
    d = ndimage.distance_transform_edt(~fg)
    wobble = ndimage.gaussian_filter(rng.normal(0, 1, fg.shape), 4 * unit)
    d = d * (1 + 0.15 * wobble / max(float(np.abs(wobble).max()), 1e-7))
    g1 = rng.uniform(0.5, 2.5) * unit
    g2 = g1 + rng.uniform(1.5, 4.0) * unit
    g3 = g2 + rng.uniform(2.0, 6.0) * unit
    texture = 1 + 0.15 * ndimage.gaussian_filter(rng.normal(0, 1, fg.shape), unit)
    out = np.zeros(fg.shape, dtype=np.float32)
    out[(d > 0) & (d <= g1)] = rng.uniform(0.0, 1.2) * level
    out[(d > g1) & (d <= g2)] = rng.uniform(0.0, 0.15) * level
    scalp = (d > g2) & (d <= g3)
    out[scalp] = (rng.uniform(0.4, 1.5) * level * texture[scalp]).astype(np.float32)
    return out


def bias_field(rng: np.random.Generator, shape: tuple[int, ...], strength: float) -> np.ndarray:
    """A smooth multiplicative field ``exp(strength · f)``, ``f`` smooth noise in [-1, 1]
    varying over about a third of the image (an MRI receive-coil bias)."""
    f = ndimage.gaussian_filter(rng.normal(0, 1, shape), max(shape) / 6)
    f = f / max(float(np.abs(f).max()), 1e-7)
    return np.asarray(np.exp(strength * f), dtype=np.float32)


def render_upload(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, spec: PreprocessSpec
) -> tuple[np.ndarray, np.ndarray]:
    """A one-channel volume slice as a user's upload, preprocessed as uploads are.

    Args:
        image: ``(1, S, S)`` z-scored inside the brain, 0 outside.
        mask: ``(R, S, S)`` uint8.
        spec: The run's preprocessing (its 2D rule and image size).
    """
    x, fg = image[0], image[0] != 0
    if fg.sum() < 16:
        return image, mask
    S = x.shape[-1]
    raw = x - x[fg].min()
    raw = np.where(fg, 0.05 + raw / max(float(np.percentile(raw[fg], 99)), 1e-6), 0.0)
    pads = [round(rng.uniform(*MARGIN) * S) for _ in range(4)]
    (top, bottom, left, right) = pads
    canvas = np.pad(raw, ((top, bottom), (left, right)))
    big_mask = np.pad(mask, ((0, 0), (top, bottom), (left, right)))
    brain = np.pad(fg, ((top, bottom), (left, right)))
    if rng.random() < P_SKULL:
        canvas = canvas + head_bands(rng, brain, float(np.median(raw[fg])), S / 96.0)
    if rng.random() < P_BIAS:
        canvas = canvas * bias_field(rng, canvas.shape, rng.uniform(*BIAS_STRENGTH))
    canvas = canvas + rng.rayleigh(max(rng.uniform(0.0, 0.02), 1e-6), canvas.shape)
    canvas = np.clip(canvas / max(float(canvas.max()), 1e-6) * rng.uniform(150, 255), 0, 255)
    pixels = Image.fromarray(canvas.astype(np.uint8))
    if rng.random() < P_JPEG:
        buf = io.BytesIO()
        pixels.save(buf, format="JPEG", quality=int(rng.integers(*JPEG_QUALITY)))
        buf.seek(0)
        with Image.open(buf) as im:
            pixels = im.convert("L")
    upload = np.asarray(pixels, dtype=np.float32)
    one = dataclasses.replace(spec, channels=spec.channels[:1])
    prepared = prepare_image(upload, one)
    cut = crop_square(big_mask.astype(np.float32), prepared.restore.box)
    out_mask = (resize(cut[None], S)[0] >= 0.5).astype(np.uint8)
    return prepared.image.astype(np.float32), out_mask


def full(
    rng: np.random.Generator,
    image: np.ndarray,
    mask: np.ndarray,
    spec: PreprocessSpec,
    *,
    volume: bool,
    alternates: np.ndarray | None = None,
    bits: int = 0,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """The ``full`` augmentation of one slice (see the module docstring).

    Args:
        image: ``(C, S, S)`` float32.
        mask: ``(R, S, S)`` uint8 (zeros without a mask).
        spec: The run's preprocessing.
        volume: A volume slice (may be re-rendered as an upload); False for 2D images.
        alternates: ``(K, S, S)`` the slice in ``spec.train_contrasts``, or None.
        bits: Which alternates the slice has (bit k for contrast k).

    Returns:
        ``(image, mask, own)``: ``own`` is False when another contrast was drawn, whose
        mask the caller drops (a whole-tumour mask outlines oedema that T1 and T1ce do
        not show: segmentation trains on the model's own contrast, presence on all).
    """
    image, own = choose_contrast(rng, image, alternates, bits)
    image, mask = flips(rng, image, mask)
    image, mask = spatial(rng, image, mask)
    if volume and image.shape[0] == 1 and rng.random() < P_UPLOAD:
        image, mask = render_upload(rng, image, mask, spec)
    return np.ascontiguousarray(intensity(rng, image)), np.ascontiguousarray(mask), own
