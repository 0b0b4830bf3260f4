"""Evaluation plots as PNG files (matplotlib's Agg backend, no display needed).

Each function draws one figure into ``path`` and returns it; a plot whose data is
missing is drawn as a titled panel that states why (so a report's file set is stable).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from tumorscope.evaluation.collect import Overlay
from tumorscope.fileio import atomic_save_figure
from tumorscope.metrics.calibration import ece, reliability_curve
from tumorscope.metrics.selective import review_rate, risk_coverage, uncertainty_auroc
from tumorscope.metrics.survival import kaplan_meier

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100


def _plt() -> Any:
    import matplotlib  # deferred: heavy, and only needed once a plot is drawn

    matplotlib.use("Agg")  # inside the function: no global side effect at import
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Figure, path: Path) -> Path:
    try:
        return atomic_save_figure(fig, path, dpi=DPI, bbox_inches="tight")
    finally:
        _plt().close(fig)


def unavailable(path: Path, title: str, reason: str) -> Path:
    """A titled panel saying why the plot could not be drawn."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.set_title(title)
    ax.text(0.5, 0.5, f"not available:\n{reason}", ha="center", va="center", wrap=True)
    ax.set_axis_off()
    return _save(fig, path)


def _two_classes(label: np.ndarray) -> bool:
    return label.size > 0 and 0 < int(label.sum()) < label.size


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """ROC curves, one per named ``(score (N,), label (N,))`` pair, with the chance line."""
    usable = {k: v for k, v in curves.items() if _two_classes(np.asarray(v[1]))}
    if not usable:
        return unavailable(path, "ROC curve", "labels hold one class only")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (score, label) in usable.items():
        fpr, tpr, _ = roc_curve(label, score)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(label, score):.3f}, n={len(label)})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set(xlabel="false positive rate (1 − specificity)", ylabel="true positive rate")
    ax.set(title="ROC curve", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_pr(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """Precision–recall curves with each set's prevalence as the no-skill line."""
    usable = {k: v for k, v in curves.items() if np.asarray(v[1]).sum() > 0}
    if not usable:
        return unavailable(path, "Precision–recall curve", "no positive sample")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (score, label) in usable.items():
        prec, rec, _ = precision_recall_curve(label, score)
        ap = average_precision_score(label, score)
        (line,) = ax.step(rec, prec, where="post", label=f"{name} (AP {ap:.3f})")
        ax.axhline(float(np.mean(label)), linestyle=":", color=line.get_color())
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="Precision–recall curve")
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def plot_reliability(
    sets: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: Path,
    n_bins: int = 10,
    strategy: str = "quantile",
) -> Path:
    """Reliability diagram: observed tumour frequency against mean predicted probability.

    Args:
        sets: Name → ``(probability (N,), label (N,))``, e.g. before and after temperature,
            and after it per source.
        path: Output PNG.
        n_bins: Bins (``tumorscope.metrics.calibration``).
        strategy: ``quantile`` (equal mass, as the ECE of ``metrics.json``) or ``uniform``.
    """
    usable = {k: v for k, v in sets.items() if np.asarray(v[1]).size > 0}
    if not usable:
        return unavailable(path, "Reliability diagram", "no classification sample")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    for name, (prob, label) in usable.items():
        c = reliability_curve(prob, label, n_bins, strategy)
        ok = c["count"] > 0
        ax.plot(
            c["confidence"][ok],
            c["accuracy"][ok],
            marker="o",
            label=f"{name} (ECE {ece(prob, label, n_bins, strategy):.3f})",
        )
    ax.set(xlabel="mean predicted probability", ylabel="observed frequency of tumour")
    binning = "equal-mass" if strategy == "quantile" else "equal-width"
    ax.set(title=f"Reliability diagram ({n_bins} {binning} bins)", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_risk_coverage(
    sets: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: Path,
    coverage: float = 0.9,
    review_confidence: float | None = None,
) -> Path:
    """Risk–coverage curves: error rate of the most confident decisions against coverage.

    Args:
        sets: Name → ``(confidence (N,), wrong (N,))`` (``tumorscope.metrics.selective``).
        path: Output PNG.
        coverage: Coverage marked by a vertical line (the ``error_at_90`` of ``metrics.json``).
        review_confidence: The run's review cut-off: each curve marks the coverage it keeps.
    """
    usable = {k: v for k, v in sets.items() if np.asarray(v[0]).size > 0}
    title = "Risk–coverage (selective prediction)"
    if not usable:
        return unavailable(path, title, "no classification decision")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (conf, wrong) in usable.items():
        cov, risk = risk_coverage(conf, np.asarray(wrong, dtype=float))
        auroc = uncertainty_auroc(conf, wrong)
        auc = "n/a" if not np.isfinite(auroc) else f"{auroc:.3f}"
        (line,) = ax.plot(
            np.r_[0.0, cov],
            np.r_[risk[0], risk],
            label=f"{name} (n={cov.size}, error {risk[-1]:.3f}, uncertainty AUROC {auc})",
        )
        if review_confidence is not None:
            kept = 1.0 - review_rate(conf, review_confidence)
            if kept > 0:
                k = max(1, round(kept * cov.size))
                ax.plot(kept, risk[k - 1], "o", color=line.get_color())
    ax.axvline(coverage, linestyle=":", color="grey", label=f"{100 * coverage:g} % coverage")
    note = "" if review_confidence is None else f"\n(dots: review cut-off {review_confidence:.3f})"
    ax.set(xlabel="coverage (fraction of decisions accepted, most confident first)")
    ax.set(ylabel="error rate of the accepted decisions", xlim=(0, 1.01))
    ax.set_ylim(bottom=0)
    ax.set_title(title + note)
    ax.legend(loc="upper left", fontsize=7)
    return _save(fig, path)


def plot_km(
    time: np.ndarray, event: np.ndarray, group: np.ndarray, p_value: float | None, path: Path
) -> Path:
    """Kaplan–Meier curves per predicted risk group, with the log-rank p-value in the title."""
    title = "Kaplan–Meier by predicted risk group"
    if np.asarray(time).size == 0:
        return unavailable(path, title, "no patient with an outcome and a risk")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for g in sorted(set(np.asarray(group).tolist())):
        sel = np.asarray(group) == g
        t, s = kaplan_meier(time[sel], event[sel])
        ax.step(np.r_[0.0, t], np.r_[1.0, s], where="post", label=f"{g} risk (n={int(sel.sum())})")
        cens = sel & ~np.asarray(event, dtype=bool)
        if cens.any():
            ax.plot(time[cens], np.interp(time[cens], t, s), "|", color="black", markersize=8)
    p = "n/a" if p_value is None or not np.isfinite(p_value) else f"{p_value:.3g}"
    ax.set(xlabel="time (days)", ylabel="survival probability", ylim=(0, 1.05))
    ax.set_title(f"{title}\nlog-rank p = {p}")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_dice(dice_by_region: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Histogram of per-patient 3D Dice, one series per region."""
    title = "Dice distribution (per patient, 3D)"
    if not any(len(v) for v in dice_by_region.values()):
        return unavailable(path, title, "no case with a ground-truth mask")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0.0, 1.0, 21)
    for name, values in dice_by_region.items():
        v = np.asarray(values, dtype=float)
        ax.hist(v, bins=bins, alpha=0.6, label=f"{name} (mean {v.mean():.3f}, n={v.size})")
    from matplotlib.ticker import MaxNLocator  # deferred with matplotlib (see _plt)

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="Dice", ylabel="patients", title=title, xlim=(0, 1))
    ax.legend(fontsize=8)
    return _save(fig, path)


def overlay_selection(
    overlays: Sequence[Overlay], n_worst: int = 4, n_total: int = 8
) -> list[tuple[Overlay, str]]:
    """The ``n_worst`` lowest-Dice overlays (tag ``worst``), then the best ones up to ``n_total``."""
    order = sorted(overlays, key=lambda o: o.dice)
    worst = order[:n_worst]
    best = order[n_worst:][::-1][: max(0, n_total - len(worst))]
    return [(o, "worst") for o in worst] + [(o, "best") for o in best]


def plot_overlays(
    overlays: Sequence[Overlay], path: Path, n_worst: int = 4, n_total: int = 8
) -> Path:
    """Grid of (image, truth, prediction) rows, worst cases first (:func:`overlay_selection`).

    Args:
        overlays: One record per case.
        path: Output PNG.
        n_worst: Worst cases shown (lowest Dice).
        n_total: Rows at most; the rest are the best cases.
    """
    title = "Overlays: image, truth, prediction"
    if not overlays:
        return unavailable(path, title, "no case with a ground-truth mask")
    rows = overlay_selection(overlays, n_worst, n_total)
    plt = _plt()
    from matplotlib.colors import ListedColormap  # deferred with matplotlib (see _plt)

    fig, axes = plt.subplots(
        len(rows), 3, figsize=(7.5, 2.5 * len(rows)), squeeze=False, layout="constrained"
    )
    for row, (o, tag) in enumerate(rows):
        img = np.rot90(o.image)  # canonical RAS (x, y) → radiological display orientation
        for col, (name, mask, colour) in enumerate(
            (("image", None, "none"), ("truth", o.truth, "lime"), ("prediction", o.pred, "red"))
        ):
            ax = axes[row, col]
            ax.imshow(img, cmap="gray")
            if mask is not None:
                m = np.rot90(mask).astype(float)
                cmap = ListedColormap([colour])
                ax.imshow(np.ma.masked_where(m == 0, m), cmap=cmap, alpha=0.5, vmin=0, vmax=1)
            ax.set_axis_off()
            ax.set_title(
                f"{o.patient_id} z={o.slice_index} ({tag}, Dice {o.dice:.2f})"
                if col == 0
                else name,
                fontsize=7,
            )
    fig.suptitle(title)
    return _save(fig, path)
