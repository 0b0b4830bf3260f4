"""The six-panel explanation figure and the uncertainty / Grad-CAM PNGs (matplotlib, Agg).

Panels: input, ground truth (when given), prediction, uncertainty, Grad-CAM, and the
patient's risk against the training cohort. Every figure carries the research-use notice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tumorscope.data.limits import check_image_size
from tumorscope.fileio import atomic_save_figure

log = logging.getLogger(__name__)

NOTICE = "Research use only — not a diagnostic device"


def _figure(rows: int, cols: int, size: tuple[float, float]) -> tuple[Any, Any]:
    import matplotlib  # deferred: heavy, and only needed once a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    return fig, axes


def _notice(fig: Any) -> None:
    fig.text(0.5, 0.008, NOTICE, ha="center", va="bottom", fontsize=10, color="firebrick")


def _save(fig: Any, path: str | Path) -> Path:
    import matplotlib.pyplot as plt  # deferred with matplotlib (see _figure)

    try:
        return atomic_save_figure(fig, Path(path), dpi=100)
    finally:
        plt.close(fig)


def _show(ax: Any, image: np.ndarray, title: str) -> None:
    lo, hi = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
    ax.set_title(title, fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])


def _overlay_mask(ax: Any, mask: np.ndarray | None, colour: str) -> None:
    if mask is not None and mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=1.5)


def _colourbar(fig: Any, ax: Any, im: Any, label: str) -> None:
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label(label, fontsize=9)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (both empty → 1, the BraTS convention)."""
    a, b = a.astype(bool), b.astype(bool)
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def _risk_panel(ax: Any, risk: Any | None, quantiles: Mapping[str, Sequence[float]] | None) -> None:
    ax.set_title("Patient risk vs training cohort", fontsize=11)
    if risk is None or not quantiles:
        ax.text(0.5, 0.5, "no survival prediction\n(model or run has none)", ha="center",
                va="center", transform=ax.transAxes, fontsize=10)  # fmt: skip
        ax.set_xticks([])
        ax.set_yticks([])
        return
    value = np.asarray(quantiles["value"], dtype=float)
    q = np.asarray(quantiles["q"], dtype=float) * 100
    ax.plot(value, q, color="0.3", lw=2, label="cohort (quantiles)")
    ax.fill_between(value, 0, q, color="0.85")
    ax.axvline(risk.log_hazard, color="crimson", lw=2, label="this patient")
    pct = "" if risk.percentile is None else f"\n{risk.percentile:.0f}th percentile"
    ax.text(0.03, 0.97, f"log-hazard {risk.log_hazard:+.2f}{pct}", transform=ax.transAxes,
            va="top", fontsize=9, color="crimson")  # fmt: skip
    ax.set_xlabel("Cox log-hazard (higher = worse)", fontsize=9)
    ax.set_ylabel("cohort percentile", fontsize=9)
    ax.set_ylim(0, 100)
    ax.legend(loc="lower right", fontsize=8)
    if risk.survival_times and risk.survival:
        inset = ax.inset_axes((0.1, 0.42, 0.4, 0.3))
        inset.step(risk.survival_times, risk.survival, where="post", color="crimson", lw=1.5)
        inset.set_ylim(0, 1.02)
        inset.set_title("predicted S(t)", fontsize=8)
        inset.set_xlabel("days", fontsize=7)
        inset.tick_params(labelsize=6)


def six_panel_figure(
    *,
    image: np.ndarray,
    probability: np.ndarray,
    uncertainty: np.ndarray,
    gradcam: np.ndarray | None,
    truth: np.ndarray | None = None,
    risk: Any | None = None,
    risk_quantiles: Mapping[str, Sequence[float]] | None = None,
    title: str = "",
    uncertainty_label: str = "mutual information (nats)",
    mask: np.ndarray | None = None,
) -> Any:
    """Build the six-panel explanation figure (see :func:`six_panel`).

    All maps share the display grid ``(H, W)`` of ``image``.

    Args:
        image: ``(H, W)`` input intensities (first channel).
        probability: ``(H, W)`` mean tumour probability in ``[0, 1]``.
        uncertainty: ``(H, W)`` uncertainty map (non-negative).
        gradcam: ``(H, W)`` Grad-CAM in ``[0, 1]`` or None.
        truth: ``(H, W)`` ground-truth mask, or None.
        risk: A ``RiskResult`` (``log_hazard``, ``percentile``, ``survival_times``,
            ``survival``) or None.
        risk_quantiles: The run's cohort risk quantiles ``{"q": [...], "value": [...]}``.
        title: Figure title (name, probability, review flag).
        uncertainty_label: Colour-bar label of the uncertainty map.
        mask: ``(H, W)`` returned mask (None when gated: shown as the ungated probability).

    Returns:
        The matplotlib ``Figure`` (with the research-use notice).
    """
    check_image_size("figure", *np.shape(image)[-2:])  # before anything is allocated for it
    fig, axes = _figure(2, 3, (14.0, 9.0))
    (a_in, a_gt, a_pred), (a_unc, a_cam, a_risk) = axes
    _show(a_in, image, "Input")
    _show(a_gt, image, "Ground truth" if truth is not None else "Ground truth (not given)")
    if truth is not None:
        _overlay_mask(a_gt, truth, "lime")
    _show(a_pred, image, "Prediction")
    shown = probability >= 0.5 if mask is None else mask.astype(bool)
    im = a_pred.imshow(
        np.ma.masked_less(probability, 0.2), cmap="autumn", alpha=0.55, vmin=0, vmax=1
    )
    _overlay_mask(a_pred, shown, "red")
    if truth is not None:
        _overlay_mask(a_pred, truth, "lime")
        a_pred.set_title(f"Prediction (Dice {dice(shown, truth):.2f} vs truth, green)", fontsize=11)
    _colourbar(fig, a_pred, im, "tumour probability")
    # The map alone (no image underneath): small values stay readable.
    im = a_unc.imshow(uncertainty, cmap="magma", vmin=0, vmax=max(float(uncertainty.max()), 1e-6))
    a_unc.set_title("Uncertainty (MC dropout; red: prediction)", fontsize=11)
    a_unc.set_xticks([])
    a_unc.set_yticks([])
    _overlay_mask(a_unc, shown, "red")
    _colourbar(fig, a_unc, im, uncertainty_label)
    _show(
        a_cam,
        image,
        "Grad-CAM (HiResCAM, tumour logit)" if gradcam is not None else "Grad-CAM (not computed)",
    )
    if gradcam is not None:
        im = a_cam.imshow(gradcam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        _colourbar(fig, a_cam, im, "relative importance")
    _risk_panel(a_risk, risk, risk_quantiles)
    fig.suptitle(title, fontsize=13)
    fig.tight_layout(rect=(0, 0.03, 1, 0.96))
    _notice(fig)
    return fig


def six_panel(path: str | Path, **panels: Any) -> Path:
    """Write the six-panel explanation PNG: input, ground truth, prediction, uncertainty,
    Grad-CAM and the patient's risk against the cohort.

    Args:
        path: Output ``.png``.
        **panels: Keyword arguments of :func:`six_panel_figure`.

    Returns:
        ``path``.
    """
    return _save(six_panel_figure(**panels), path)


def map_panels(
    path: str | Path,
    image: np.ndarray,
    maps: Mapping[str, np.ndarray],
    *,
    title: str = "",
    overlay: bool = False,
    labels: Mapping[str, str] | None = None,
) -> Path:
    """The input and one panel per map: ``maps`` name → ``(H, W)``.

    Args:
        path: Output ``.png``.
        image: ``(H, W)`` input intensities.
        maps: Panel title → non-negative map on the grid of ``image``.
        title: Figure title.
        overlay: Draw maps over the image (jet, fixed range ``[0, 1]``, for Grad-CAM);
            otherwise alone (magma, scaled to each map's maximum, for uncertainty).
        labels: Panel title → colour-bar label (units).

    Returns:
        ``path``.
    """
    check_image_size(path, *np.shape(image)[-2:])  # before anything is allocated for it
    fig, axes = _figure(1, len(maps) + 1, (3.9 * (len(maps) + 1), 4.3))
    _show(axes[0][0], image, "Input")
    for ax, (name, m) in zip(axes[0][1:], maps.items(), strict=True):
        if overlay:
            _show(ax, image, name)
            im = ax.imshow(m, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        else:
            im = ax.imshow(m, cmap="magma", vmin=0, vmax=max(float(np.max(m)), 1e-6))
            ax.set_title(name, fontsize=11)
            ax.set_xticks([])
            ax.set_yticks([])
        _colourbar(fig, ax, im, (labels or {}).get(name, ""))
    fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0.05, 1, 0.93))
    _notice(fig)
    return _save(fig, path)
