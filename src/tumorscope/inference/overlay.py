"""PNG overlays of a predicted mask on its 2D input (matplotlib, Agg canvas, no pyplot)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tumorscope import DISCLAIMER
from tumorscope.data.limits import check_image_size
from tumorscope.fileio import atomic_save_figure

# One contour colour per region (Okabe–Ito palette, colour-blind safe).
REGION_COLOURS = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00")


def save_overlay(
    image: np.ndarray,
    mask: np.ndarray | None,
    path: str | Path,
    *,
    regions: Sequence[str],
    title: str,
) -> Path:
    """Write a PNG of ``image`` in grey with the outline of each region of ``mask``.

    Args:
        image: ``(H, W)`` intensities (windowed to their 1st–99th percentiles).
        mask: ``(R, H, W)`` binary masks, or None (gated: image only).
        path: Output ``.png`` file.
        regions: Region names, one per mask channel (legend).
        title: Figure title (e.g. name and probability).

    Returns:
        The written path.

    Raises:
        ValueError: ``mask`` does not match ``image`` in height and width.
    """
    # deferred: matplotlib is heavy and only needed once an overlay is drawn
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    check_image_size(path, *np.shape(image)[-2:])  # before anything is allocated for it
    img = np.asarray(image, dtype=np.float64)
    if mask is not None and tuple(mask.shape[-2:]) != tuple(img.shape):
        raise ValueError(f"mask shape {mask.shape} does not match image shape {img.shape}")
    lo, hi = np.percentile(img, (1, 99)) if img.size else (0.0, 1.0)
    h, w = img.shape
    fig = Figure(figsize=(5.0, 5.0 * h / max(w, 1) + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.08, 1.0, 0.84))
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
    handles = []
    if mask is not None:
        for i, name in enumerate(regions):
            colour = REGION_COLOURS[i % len(REGION_COLOURS)]
            if mask[i].any() and not mask[i].all():
                ax.contour(mask[i].astype(float), levels=[0.5], colors=[colour], linewidths=1.2)
            handles.append(Line2D([], [], color=colour, label=name))
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.6)
    ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.text(0.5, 0.02, DISCLAIMER, ha="center", fontsize=5, wrap=True)
    return atomic_save_figure(fig, Path(path))
