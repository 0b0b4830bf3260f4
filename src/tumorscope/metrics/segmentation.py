"""Segmentation metrics on binary masks, 2D ``(H, W)`` or 3D ``(X, Y, Z)``, distances in mm.

Every metric is a pure function of ``(pred, target)`` (plus ``spacing`` for distances and
volumes); :class:`SegmentationAccumulator` collects them per case and region and aggregates
over the dataset, as MONAI's ``update/compute/reset`` metrics do.

Empty masks follow the BraTS convention: both empty → Dice 1, IoU 1, HD95 0 mm, boundary
F1 1; exactly one empty → Dice 0, IoU 0, HD95 :data:`EMPTY_HD95_MM` (373.13 mm, the
diagonal of the BraTS volume), boundary F1 0.

HD95 follows MONAI's ``HausdorffDistanceMetric(percentile=95, directed=False)``: surfaces are
mask voxels removed by one binary erosion (face connectivity, outside the array counts as
background), the directed surface distances are the Euclidean distances in mm from each
surface voxel of one mask to the nearest surface voxel of the other, and HD95 is the
**maximum of the two directed 95th percentiles** (linear interpolation), not the percentile
of the pooled set.

The BraTS packages differ (``tests/metrics/test_lesionwise.py`` asserts each difference):
the BraTS 2023 code takes surfaces from DeepMind's ``surface_distance`` (surface elements
on the voxel-corner grid, weighted by area; HD95 within about a voxel of ours) and gives
374 mm for one empty mask; ``brats-evaluation`` 0.0.10 (``panoptica`` 2.1.7) has these
surfaces and this Dice, but its whole-volume HD95 is the 95th percentile of both directed
sets pooled, in voxels (it does not pass the spacing to its global metrics), infinite (373
in its parsers) whenever the masks do not overlap, and both metrics are NaN for two empty
masks. Lesion-wise scores: :mod:`tumorscope.metrics.lesionwise`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

EMPTY_HD95_MM = 373.13
"""HD95 (mm) when exactly one of prediction and target is empty (BraTS convention)."""


def _to_numpy(x: Any) -> NDArray[Any]:
    """Convert a numpy array, torch tensor or nested sequence to a numpy array."""
    if hasattr(x, "detach"):  # torch tensor, converted at the boundary
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def as_binary_mask(x: ArrayLike, name: str = "mask") -> NDArray[np.bool_]:
    """Validate a binary mask and return it as ``bool``.

    Args:
        x: Mask of shape ``(H, W)`` or ``(X, Y, Z)`` holding only 0/1 (or bool).
        name: Name used in error messages.

    Returns:
        The mask as a boolean array of the same shape.

    Raises:
        ValueError: If the mask is not 2D/3D or holds values other than 0 and 1.
    """
    arr = _to_numpy(x)
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"{name}: expected a 2D (H, W) or 3D (X, Y, Z) mask, got shape {arr.shape}"
        )
    if arr.dtype == np.bool_:
        return arr
    if not np.isin(arr, (0, 1)).all():
        bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5]
        raise ValueError(f"{name}: mask must be binary (0/1), found values {bad.tolist()}")
    return arr.astype(bool)


def _pair(pred: ArrayLike, target: ArrayLike) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    p = as_binary_mask(pred, "pred")
    t = as_binary_mask(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred: shape {p.shape} does not match target shape {t.shape}")
    return p, t


def spacing_tuple(spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    """Normalise ``spacing`` (None → 1.0 mm, scalar → isotropic) to ``ndim`` positive floats."""
    if spacing is None:
        return (1.0,) * ndim
    if isinstance(spacing, int | float | np.number):
        values: tuple[float, ...] = (float(spacing),) * ndim
    else:
        values = tuple(float(s) for s in spacing)
    if len(values) != ndim:
        raise ValueError(f"spacing: {len(values)} values given for a {ndim}D mask")
    if not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing: values must be positive and finite, got {values}")
    return values


def dice(pred: ArrayLike, target: ArrayLike) -> float:
    """Dice coefficient ``2|P∩T| / (|P|+|T|)``; both empty → 1.0 (BraTS).

    Args:
        pred: Binary prediction ``(H, W)`` or ``(X, Y, Z)``.
        target: Binary ground truth of the same shape.
    """
    # A count ratio with the BraTS empty-mask rule; MONAI's compute_dice wants one-hot batches.
    p, t = _pair(pred, target)
    denom = int(p.sum()) + int(t.sum())
    if denom == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, t).sum()) / denom


def iou(pred: ArrayLike, target: ArrayLike) -> float:
    """Intersection over union (Jaccard) ``|P∩T| / |P∪T|``; both empty → 1.0."""
    p, t = _pair(pred, target)
    union = int(np.logical_or(p, t).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(p, t).sum()) / union


def pixel_accuracy(pred: ArrayLike, target: ArrayLike) -> float:
    """Fraction of voxels (pixels) labelled correctly, background included."""
    p, t = _pair(pred, target)
    return float((p == t).mean())


def volume_mm3(mask: ArrayLike, spacing: float | Sequence[float] | None = None) -> float:
    """Volume of a mask in mm³ (area in mm² for a 2D mask): voxel count × voxel size."""
    m = as_binary_mask(mask)
    return float(m.sum()) * float(np.prod(spacing_tuple(spacing, m.ndim)))


def absolute_volume_error(
    pred: ArrayLike, target: ArrayLike, spacing: float | Sequence[float] | None = None
) -> float:
    """``|V_pred − V_target|`` in mm³ (mm² for 2D)."""
    p, t = _pair(pred, target)
    return abs(volume_mm3(p, spacing) - volume_mm3(t, spacing))


def relative_volume_error(
    pred: ArrayLike, target: ArrayLike, spacing: float | Sequence[float] | None = None
) -> float:
    """Signed ``(V_pred − V_target) / V_target``; both empty → 0.0, empty target only → NaN."""
    p, t = _pair(pred, target)
    vt = volume_mm3(t, spacing)
    vp = volume_mm3(p, spacing)
    if vt == 0.0:
        return 0.0 if vp == 0.0 else float("nan")
    return (vp - vt) / vt


def surface(mask: ArrayLike) -> NDArray[np.bool_]:
    """Surface voxels: the mask minus its binary erosion (face connectivity, as MONAI)."""
    m = as_binary_mask(mask)
    return m & ~ndimage.binary_erosion(m, border_value=0)


def surface_distances(
    pred: ArrayLike, target: ArrayLike, spacing: float | Sequence[float] | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Directed surface distances in mm between two non-empty masks.

    Args:
        pred: Binary prediction ``(H, W)`` or ``(X, Y, Z)``, not empty.
        target: Binary ground truth of the same shape, not empty.
        spacing: Voxel size in mm per axis (a scalar means isotropic; default 1.0).

    Returns:
        ``(pred_to_target, target_to_pred)``: for each surface voxel of one mask, the
        Euclidean distance (mm) to the nearest surface voxel of the other, shapes ``(Np,)``
        and ``(Nt,)``.

    Raises:
        ValueError: If either mask is empty (distances undefined).
    """
    # Own EDT in float64 (MONAI returns float32) shared by HD95, boundary F1 and ASSD.
    p, t = _pair(pred, target)
    if not p.any() or not t.any():
        raise ValueError("pred/target: surface distances need two non-empty masks")
    sp = spacing_tuple(spacing, p.ndim)
    # Crop to the union's bounding box with a one-voxel margin of background: distances between
    # surface voxels do not change and the erosion still treats the array border as background.
    union = np.argwhere(p | t)
    lo = union.min(axis=0)
    hi = union.max(axis=0) + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    p_c = np.pad(p[box], 1)
    t_c = np.pad(t[box], 1)
    sp_edge = surface(p_c)
    st_edge = surface(t_c)
    dist_to_t = ndimage.distance_transform_edt(~st_edge, sampling=sp)
    dist_to_p = ndimage.distance_transform_edt(~sp_edge, sampling=sp)
    return (
        np.asarray(dist_to_t[sp_edge], dtype=np.float64),
        np.asarray(dist_to_p[st_edge], dtype=np.float64),
    )


def hd95(
    pred: ArrayLike,
    target: ArrayLike,
    spacing: float | Sequence[float] | None = None,
    percentile: float = 95.0,
) -> float:
    """95th-percentile Hausdorff distance in mm (MONAI definition, see module docstring).

    Args:
        pred: Binary prediction ``(H, W)`` or ``(X, Y, Z)``.
        target: Binary ground truth of the same shape.
        spacing: Voxel size in mm per axis (default 1.0).
        percentile: Percentile of each directed distance set; 100 gives the Hausdorff distance.

    Returns:
        ``max(P95(d(pred→target)), P95(d(target→pred)))`` in mm; both empty → 0.0, one empty
        → :data:`EMPTY_HD95_MM`.
    """
    p, t = _pair(pred, target)
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile: must be in [0, 100], got {percentile}")
    if not p.any() and not t.any():
        return 0.0
    if not p.any() or not t.any():
        return EMPTY_HD95_MM
    d_pt, d_tp = surface_distances(p, t, spacing)
    return float(max(np.percentile(d_pt, percentile), np.percentile(d_tp, percentile)))


def hausdorff(
    pred: ArrayLike, target: ArrayLike, spacing: float | Sequence[float] | None = None
) -> float:
    """Hausdorff distance in mm (the 100th percentile); empty masks as :func:`hd95`."""
    return hd95(pred, target, spacing, percentile=100.0)


def assd(
    pred: ArrayLike, target: ArrayLike, spacing: float | Sequence[float] | None = None
) -> float:
    """Average symmetric surface distance in mm (mean over both directed sets pooled).

    Both empty → 0.0; exactly one empty → :data:`EMPTY_HD95_MM`.
    """
    p, t = _pair(pred, target)
    if not p.any() and not t.any():
        return 0.0
    if not p.any() or not t.any():
        return EMPTY_HD95_MM
    d_pt, d_tp = surface_distances(p, t, spacing)
    return float(np.concatenate([d_pt, d_tp]).mean())


def boundary_f1(
    pred: ArrayLike,
    target: ArrayLike,
    tol_mm: float,
    spacing: float | Sequence[float] | None = None,
) -> float:
    """Boundary F1 at a tolerance in mm.

    Precision is the fraction of predicted surface voxels within ``tol_mm`` (inclusive) of
    the target surface, recall the fraction of target surface voxels within ``tol_mm`` of
    the predicted surface; the score is their harmonic mean. Both empty → 1.0, one empty
    → 0.0.
    """
    p, t = _pair(pred, target)
    if tol_mm < 0 or not np.isfinite(tol_mm):
        raise ValueError(f"tol_mm: must be finite and >= 0, got {tol_mm}")
    if not p.any() and not t.any():
        return 1.0
    if not p.any() or not t.any():
        return 0.0
    d_pt, d_tp = surface_distances(p, t, spacing)
    precision = float((d_pt <= tol_mm).mean())
    recall = float((d_tp <= tol_mm).mean())
    if precision + recall == 0.0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def segmentation_metrics(
    pred: ArrayLike,
    target: ArrayLike,
    spacing: float | Sequence[float] | None = None,
    tol_mm: float = 2.0,
) -> dict[str, float]:
    """All per-case metrics of one binary mask pair (surface distances computed once).

    Returns:
        ``dice``, ``iou``, ``hd95`` (mm), ``boundary_f1`` (at ``tol_mm``), ``pixel_accuracy``,
        ``volume_pred``/``volume_target``/``abs_volume_error`` (mm³, mm² in 2D) and
        ``rel_volume_error``.
    """
    p, t = _pair(pred, target)
    out = {"dice": dice(p, t), "iou": iou(p, t)}
    if p.any() and t.any():
        d_pt, d_tp = surface_distances(p, t, spacing)
        out["hd95"] = float(max(np.percentile(d_pt, 95.0), np.percentile(d_tp, 95.0)))
        prec, rec = float((d_pt <= tol_mm).mean()), float((d_tp <= tol_mm).mean())
        out["boundary_f1"] = 0.0 if prec + rec == 0.0 else 2.0 * prec * rec / (prec + rec)
    else:
        out["hd95"] = hd95(p, t, spacing)
        out["boundary_f1"] = boundary_f1(p, t, tol_mm, spacing)
    out["pixel_accuracy"] = pixel_accuracy(p, t)
    out["volume_pred"] = volume_mm3(p, spacing)
    out["volume_target"] = volume_mm3(t, spacing)
    out["abs_volume_error"] = abs(out["volume_pred"] - out["volume_target"])
    out["rel_volume_error"] = relative_volume_error(p, t, spacing)
    return out


def aggregated_dice(preds: Sequence[ArrayLike], targets: Sequence[ArrayLike]) -> float:
    """HECKTOR aggregated Dice: ``2 Σ|P_i∩T_i| / Σ(|P_i|+|T_i|)`` over cases.

    Cases with empty masks add nothing instead of counting as 0 or 1; all empty → 1.0.
    """
    if len(preds) != len(targets):
        raise ValueError(f"preds: {len(preds)} cases but targets has {len(targets)}")
    inter = 0
    total = 0
    for pr, tg in zip(preds, targets, strict=True):
        p, t = _pair(pr, tg)
        inter += int(np.logical_and(p, t).sum())
        total += int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else 2.0 * inter / total


class SegmentationAccumulator:
    """Collects per-case, per-region metrics and aggregates them over the dataset.

    ``update(pred, target, spacing, region, case_id)`` stores :func:`segmentation_metrics` of
    one case; ``compute()`` returns, per region, the mean of each metric over cases (NaN
    entries ignored), the case count and the aggregated Dice (HECKTOR style).
    """

    def __init__(self, tol_mm: float = 2.0) -> None:
        self.tol_mm = tol_mm
        self.reset()

    def reset(self) -> None:
        """Forget all cases."""
        self._rows: dict[str, list[dict[str, float]]] = defaultdict(list)
        self._case_ids: dict[str, list[str]] = defaultdict(list)
        self._inter: dict[str, int] = defaultdict(int)
        self._total: dict[str, int] = defaultdict(int)

    def update(
        self,
        pred: ArrayLike | Mapping[str, ArrayLike],
        target: ArrayLike | Mapping[str, ArrayLike],
        spacing: float | Sequence[float] | None = None,
        region: str = "WT",
        case_id: str = "",
    ) -> None:
        """Add one case; ``pred``/``target`` may be dicts ``{region: mask}`` for all regions."""
        if isinstance(pred, Mapping) or isinstance(target, Mapping):
            if not (isinstance(pred, Mapping) and isinstance(target, Mapping)):
                raise ValueError("pred/target: give both as region dicts or both as masks")
            if set(pred) != set(target):
                raise ValueError(f"pred: regions {sorted(pred)} differ from {sorted(target)}")
            for name in pred:
                self.update(pred[name], target[name], spacing, name, case_id)
            return
        p, t = _pair(pred, target)
        self._rows[region].append(segmentation_metrics(p, t, spacing, self.tol_mm))
        self._case_ids[region].append(case_id)
        self._inter[region] += int(np.logical_and(p, t).sum())
        self._total[region] += int(p.sum()) + int(t.sum())

    def per_case(self, region: str) -> list[dict[str, float]]:
        """Stored per-case metric dicts of one region, in update order."""
        return list(self._rows[region])

    def compute(self) -> dict[str, dict[str, float]]:
        """Per region: mean of each metric over cases, ``n`` and ``aggregated_dice``."""
        out: dict[str, dict[str, float]] = {}
        for region, rows in self._rows.items():
            summary: dict[str, float] = {}
            for key in rows[0]:
                vals = np.array([r[key] for r in rows], dtype=float)
                finite = vals[~np.isnan(vals)]
                summary[key] = float(finite.mean()) if finite.size else float("nan")
            summary["n"] = float(len(rows))
            total = self._total[region]
            summary["aggregated_dice"] = 1.0 if total == 0 else 2.0 * self._inter[region] / total
            out[region] = summary
        return out
