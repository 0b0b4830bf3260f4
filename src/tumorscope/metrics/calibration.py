"""Calibration: expected calibration error, Brier score, reliability curves, temperature
scaling.

Binning (``strategy``): ``uniform`` — ``n_bins`` equal-width bins on [0, 1], bin ``b`` holds
``b/n <= p < (b+1)/n`` and the last bin also holds ``p = 1``; ``quantile`` — equal-mass
bins whose edges are the ``0, 1/n, …, 1`` quantiles of the probabilities, a sample going
to the bin ``searchsorted(inner edges, p)`` (scikit-learn's ``calibration_curve`` rule),
so every bin holds about ``N / n`` samples even when the probabilities crowd near 0 and 1. For binary problems the calibrated quantity is the
probability of the positive class (``conf_b`` = mean predicted probability, ``acc_b`` =
fraction of positives in the bin), not the top-label confidence; for ``(N, C)``
probabilities it is the top-label confidence against top-label accuracy (Guo et al. 2017).
``ECE = Σ_b (n_b / N)·|acc_b − conf_b|`` over non-empty bins.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage, optimize, special

from tumorscope.metrics.arrays import to_numpy
from tumorscope.metrics.segmentation import spacing_tuple


def _confidence_correct(
    prob: ArrayLike, label: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Return (probability being calibrated, observed outcome) per sample, both ``(N,)``."""
    p = to_numpy(prob).astype(np.float64)
    y = to_numpy(label)
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("prob: probabilities must be finite and in [0, 1]")
    if p.ndim == 1:
        if y.shape != p.shape:
            raise ValueError(f"label: shape {y.shape} does not match prob shape {p.shape}")
        if not np.isin(y, (0, 1)).all():
            raise ValueError("label: binary labels must be 0/1")
        return p, y.astype(np.float64)
    if p.ndim == 2:
        if y.shape != (p.shape[0],):
            raise ValueError(f"label: shape {y.shape}, expected ({p.shape[0]},) class indices")
        if not np.isin(y, np.arange(p.shape[1])).all():
            raise ValueError(f"label: class indices must be in [0, {p.shape[1]})")
        pred = p.argmax(axis=1)
        return p.max(axis=1), (pred == y).astype(np.float64)
    raise ValueError(f"prob: expected (N,) or (N, C), got shape {p.shape}")


def reliability_curve(
    prob: ArrayLike, label: ArrayLike, n_bins: int = 10, strategy: str = "uniform"
) -> dict[str, NDArray[np.float64]]:
    """Per-bin data of a reliability diagram.

    Args:
        prob: Positive-class probabilities ``(N,)`` with 0/1 labels, or ``(N, C)`` class
            probabilities with class-index labels.
        label: Labels ``(N,)``.
        n_bins: Number of bins.
        strategy: ``uniform`` (equal width) or ``quantile`` (equal mass); module docstring.

    Returns:
        ``edges (n_bins+1,)``, ``confidence``, ``accuracy`` (NaN for empty bins) and ``count``,
        each ``(n_bins,)``.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins: must be >= 1, got {n_bins}")
    conf, correct = _confidence_correct(prob, label)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        idx = np.clip(np.floor(conf * n_bins).astype(np.int64), 0, n_bins - 1)
    elif strategy == "quantile":
        edges = (
            np.quantile(conf, np.linspace(0.0, 1.0, n_bins + 1))
            if conf.size
            else np.linspace(0.0, 1.0, n_bins + 1)
        )
        idx = np.searchsorted(edges[1:-1], conf).astype(np.int64)
    else:
        raise ValueError(f"strategy: {strategy!r} is not 'uniform' or 'quantile'")
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    sum_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    sum_acc = np.bincount(idx, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.where(count > 0, sum_conf / count, np.nan)
        accuracy = np.where(count > 0, sum_acc / count, np.nan)
    return {"edges": edges, "confidence": confidence, "accuracy": accuracy, "count": count}


def ece(prob: ArrayLike, label: ArrayLike, n_bins: int = 10, strategy: str = "uniform") -> float:
    """Expected calibration error: bins weighted by their count (module docstring).

    Returns:
        ECE in [0, 1]; NaN for an empty input.
    """
    curve = reliability_curve(prob, label, n_bins, strategy)
    count = curve["count"]
    if count.sum() == 0:
        return float("nan")
    ok = count > 0
    gap = np.abs(curve["accuracy"][ok] - curve["confidence"][ok])
    return float(np.sum(count[ok] / count.sum() * gap))


def brier(prob: ArrayLike, label: ArrayLike) -> float:
    """Brier score ``mean((p − y)²)`` of binary probabilities; NaN for an empty input."""
    p, y = _confidence_correct(prob, label)
    if to_numpy(prob).ndim != 1:
        raise ValueError("prob: the Brier score here takes binary (N,) probabilities")
    return float(np.mean((p - y) ** 2)) if p.size else float("nan")


def boundary_band(
    mask: ArrayLike, band_mm: float, spacing: float | Sequence[float] | None = None
) -> NDArray[np.bool_]:
    """Voxels within ``band_mm`` of the tumour boundary, inside or outside.

    A voxel is in the band when its Euclidean distance (mm) to the nearest voxel of the
    opposite class is at most ``band_mm`` (distance transforms of the mask and of its
    complement); the far background and the deep tumour core are left out.

    Args:
        mask: Binary tumour mask ``(H, W)`` or ``(X, Y, Z)``.
        band_mm: Half-width of the band in mm.
        spacing: Voxel size in mm per axis (default 1.0).

    Returns:
        Boolean band of the mask's shape (all False for an empty or full mask).
    """
    m = to_numpy(mask)
    if m.ndim not in (2, 3) or not np.isin(m, (0, 1)).all():
        raise ValueError(f"mask: expected a binary 2D/3D mask, got shape {m.shape}")
    m = m.astype(bool)
    if band_mm < 0:
        raise ValueError(f"band_mm: must be >= 0, got {band_mm}")
    sp = spacing_tuple(spacing, m.ndim)
    if not m.any() or m.all():
        return np.zeros(m.shape, dtype=bool)
    inside = ndimage.distance_transform_edt(m, sampling=sp)  # distance to background
    outside = ndimage.distance_transform_edt(~m, sampling=sp)  # distance to tumour
    return np.asarray((m & (inside <= band_mm)) | (~m & (outside <= band_mm)), dtype=bool)


def segmentation_ece(
    prob_map: ArrayLike,
    mask: ArrayLike,
    band_mm: float = 5.0,
    spacing: float | Sequence[float] | None = None,
    n_bins: int = 10,
) -> float:
    """Voxel-wise ECE restricted to a band of ``band_mm`` around the true tumour boundary.

    The whole background would swamp the score with easy, confident voxels, so only voxels
    of :func:`boundary_band` count.

    Args:
        prob_map: Foreground probabilities of the mask's shape.
        mask: Binary ground-truth mask ``(H, W)`` or ``(X, Y, Z)``.
        band_mm: Half-width of the band in mm.
        spacing: Voxel size in mm per axis.
        n_bins: Number of equal-width bins.

    Returns:
        ECE over the band; NaN when the band is empty (empty or full mask).
    """
    p = to_numpy(prob_map).astype(np.float64)
    m = to_numpy(mask)
    if p.shape != m.shape:
        raise ValueError(f"prob_map: shape {p.shape} does not match mask shape {m.shape}")
    band = boundary_band(m, band_mm, spacing)
    if not band.any():
        return float("nan")
    return ece(p[band], m[band].astype(np.int64), n_bins)


def _nll(log_t: float, logits: NDArray[np.float64], labels: NDArray[np.int64]) -> float:
    t = float(np.exp(log_t))
    if logits.ndim == 1:
        z = logits / t
        # mean binary cross-entropy from logits, numerically stable
        return float(np.mean(np.logaddexp(0.0, z) - labels * z))
    z = logits / t
    logp = z - special.logsumexp(z, axis=1, keepdims=True)
    return float(-np.mean(logp[np.arange(labels.size), labels]))


def fit_temperature(logits: ArrayLike, labels: ArrayLike) -> float:
    """Temperature ``T`` minimising the NLL of ``softmax(logits / T)`` (Guo et al. 2017).

    Minimises over ``log T`` in [log 0.01, log 100] with a bounded scalar search (the NLL is
    smooth and unimodal in ``log T`` for practical data).

    Args:
        logits: Binary logits ``(N,)`` (sigmoid) or multi-class logits ``(N, C)``.
        labels: ``(N,)`` labels: 0/1 for binary, class indices for multi-class.

    Returns:
        The fitted temperature ``T > 0``; calibrated probabilities are ``σ(logit / T)``.
    """
    z = to_numpy(logits).astype(np.float64)
    y = to_numpy(labels)
    if not np.isfinite(z).all():
        raise ValueError("logits: NaN/Inf values")
    if z.ndim not in (1, 2) or y.shape != (z.shape[0],):
        raise ValueError(f"logits: shape {z.shape} and labels {y.shape} do not match")
    allowed = np.arange(2) if z.ndim == 1 else np.arange(z.shape[1])
    if not np.isin(y, allowed).all():
        raise ValueError(f"labels: values must be in {allowed.tolist()}")
    if z.shape[0] == 0:
        raise ValueError("logits: empty input")
    res = optimize.minimize_scalar(
        _nll,
        bounds=(np.log(0.01), np.log(100.0)),
        args=(z, y.astype(np.int64)),
        method="bounded",
        options={"xatol": 1e-8},
    )
    return float(np.exp(res.x))


def apply_temperature(logits: ArrayLike, temperature: float) -> NDArray[np.float64]:
    """Calibrated probabilities: ``σ(logits/T)`` for ``(N,)``, ``softmax(logits/T)`` for ``(N, C)``."""
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    z = to_numpy(logits).astype(np.float64) / temperature
    if z.ndim == 1:
        return np.asarray(special.expit(z), dtype=np.float64)
    return np.asarray(special.softmax(z, axis=-1), dtype=np.float64)
