"""Typed prediction results with ``to_json()``, and the map back to the input's geometry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from tumorscope import DISCLAIMER
from tumorscope.data.types import TUMOUR_TYPES, ImageMeta
from tumorscope.inference.postprocess import PostprocessReport
from tumorscope.inference.review import NO_CUTOFF, ReviewResult

PROBABILITY_AGGREGATION = (
    "max of the calibrated slice probabilities over the slices inside the brain/body mask"
)
NOT_CHECKED = "no domain check ran"


def to_stored(canonical: np.ndarray, meta: ImageMeta) -> np.ndarray:
    """Reorient a canonical (RAS+) array back to the file's stored axis order.

    Args:
        canonical: ``(..., X, Y, Z)`` array in the canonical grid of ``meta`` (leading axes,
            e.g. regions, are kept).
        meta: Geometry of the input as returned by the readers.

    Returns:
        ``(..., *meta.original_shape)`` contiguous array; the inverse of the readers'
        reorientation (``nibabel.orientations``), so voxel ``i`` sits at the same world point.
    """
    if meta.original_affine is None:
        return np.ascontiguousarray(canonical)
    back = ornt_transform(axcodes2ornt(("R", "A", "S")), io_orientation(meta.original_affine))
    lead = canonical.shape[:-3]
    flat = canonical.reshape(-1, *canonical.shape[-3:])
    out = np.stack([apply_orientation(a, back) for a in flat]) if flat.shape[0] else flat
    return np.ascontiguousarray(out.reshape(*lead, *out.shape[1:]))


def input_affine(meta: ImageMeta) -> np.ndarray:
    """The 4×4 voxel-to-world affine of the input as stored."""
    return np.asarray(meta.affine if meta.original_affine is None else meta.original_affine)


def _geometry_json(meta: ImageMeta | None) -> dict[str, Any] | None:
    if meta is None:
        return None
    shape = meta.original_shape if meta.original_shape is not None else meta.shape
    return {
        "shape": [int(s) for s in shape],
        "affine": np.round(input_affine(meta), 6).tolist(),
        "spacing_mm": [float(s) for s in meta.spacing],
    }


@dataclass(frozen=True)
class DomainResult:
    """Whether an input is like the data the model was trained on (the out-of-domain check
    of :mod:`tumorscope.inference.ood`).

    Attributes:
        score: Mahalanobis distance of the input's readout features to the training slices
            (unitless; a volume's is the median of its slices'); None when not checked.
        threshold: Score above which an input is out of domain; None when not checked.
        in_domain: ``score <= threshold``; None when not checked (a run without a domain
            model, a backend without readout features, a volume without slices).
        reason: One line saying what the check found, or why it did not run.
        slice_scores: Volumes: canonical axial index z → that slice's score.
    """

    score: float | None = None
    threshold: float | None = None
    in_domain: bool | None = None
    reason: str = NOT_CHECKED
    slice_scores: dict[int, float] = field(default_factory=dict)

    @property
    def out_of_domain(self) -> bool:
        """True only when the check ran and flagged the input."""
        return self.in_domain is False

    def to_json(self) -> dict[str, Any]:
        """JSON-able mapping (``slice_scores`` only for volumes)."""
        out: dict[str, Any] = {
            "score": self.score,
            "threshold": self.threshold,
            "in_domain": self.in_domain,
            "reason": self.reason,
        }
        if self.slice_scores:
            out["slices_out_of_domain"] = sum(
                self.threshold is not None and s > self.threshold
                for s in self.slice_scores.values()
            )
            out["slice_scores"] = {str(z): s for z, s in self.slice_scores.items()}
        return out


@dataclass
class RiskResult:
    """Patient-level survival risk.

    Attributes:
        log_hazard: Cox log-hazard (higher = worse), unitless.
        percentile: Position among the training cohort's risks, 0–100 (linear between the
            stored cohort quantiles, clamped at their ends); None when the run has none.
        survival_times: Days at which ``survival`` is given (Breslow baseline times).
        survival: ``S(t) = exp(−H0(t)·exp(log_hazard))`` at ``survival_times``; empty when
            the run has no baseline hazard.
        imputed: Clinical covariates filled with the training values.
        slices_used: Canonical axial indices of the slices the survival head pooled.
        model: ``penalised_cox`` (tumour features of the predicted masks and clinical
            covariates, :mod:`tumorscope.survival`) or ``deep`` (the survival head alone).
        features: The tumour features measured on the predicted masks (``penalised_cox``).
        deep_log_hazard: The survival head's log-hazard, when the network has one.
    """

    log_hazard: float
    percentile: float | None
    survival_times: list[float] = field(default_factory=list)
    survival: list[float] = field(default_factory=list)
    imputed: list[str] = field(default_factory=list)
    slices_used: list[int] = field(default_factory=list)
    model: str = "deep"
    features: dict[str, float] = field(default_factory=dict)
    deep_log_hazard: float | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-able mapping."""
        return {
            "log_hazard": self.log_hazard,
            "percentile": self.percentile,
            "survival_curve": {"time_days": self.survival_times, "survival": self.survival},
            "imputed_covariates": self.imputed,
            "slices_used": self.slices_used,
            "model": self.model,
            "features": self.features,
            "deep_log_hazard": self.deep_log_hazard,
        }


@dataclass
class SliceResult:
    """Prediction for one 2D image.

    Attributes:
        name: Input name (file stem, given name, or ``array``/``array_<i>``).
        tumour_probability: Calibrated (temperature-scaled) probability of a tumour.
        tumour: Decision at the calibrated threshold.
        threshold: Decision threshold (from the run's calibration).
        mask: ``(R, H, W)`` uint8 in the input's own grid, or None when gated.
        mask_reason: Why no mask was returned (None when it was).
        regions: Region names of ``mask``.
        tumour_type: Class name → probability, when the model has that head.
        warnings: Domain-check warnings.
        probabilities: ``(R, H, W)`` float32 ungated segmentation probabilities.
        gate_threshold: Probability under which the mask is withheld.
        image: ``(H, W)`` float32 first channel of the input as read (for overlays).
        meta: Geometry of a NIfTI or DICOM input (None for arrays and PNG/JPEG files).
        domain: The out-of-domain check: an input unlike the training data is marked, and
            its outputs are unreliable.
        review: The confidence-based review flag of the decision
            (:mod:`tumorscope.inference.review`).
    """

    name: str
    tumour_probability: float
    tumour: bool
    threshold: float
    mask: np.ndarray | None
    mask_reason: str | None
    regions: list[str]
    tumour_type: dict[str, float] | None = None
    warnings: list[str] = field(default_factory=list)
    probabilities: np.ndarray | None = None
    gate_threshold: float = 0.3
    image: np.ndarray | None = None
    meta: ImageMeta | None = None
    domain: DomainResult = field(default_factory=DomainResult)
    review: ReviewResult = field(default_factory=lambda: _unreviewed())

    @property
    def gated(self) -> bool:
        """True when the mask was withheld."""
        return self.mask is None

    def to_json(self) -> dict[str, Any]:
        """JSON-able mapping (no arrays; mask areas in pixels)."""
        area = (
            None
            if self.mask is None
            else {r: int(self.mask[i].sum()) for i, r in enumerate(self.regions)}
        )
        return {
            "name": self.name,
            "kind": "image",
            "tumour_probability": self.tumour_probability,
            "tumour": self.tumour,
            "threshold": self.threshold,
            "gate_threshold": self.gate_threshold,
            "mask_returned": self.mask is not None,
            "mask_reason": self.mask_reason,
            "regions": self.regions,
            "input_shape": None if self.image is None else [int(s) for s in self.image.shape],
            "mask_area_pixels": area,
            "tumour_type": self.tumour_type,
            "geometry": _geometry_json(self.meta),
            "domain": self.domain.to_json(),
            "review": self.review.to_json(),
            "warnings": self.warnings,
            "disclaimer": DISCLAIMER,
        }


@dataclass
class VolumeResult:
    """Prediction for one 3D case.

    Attributes:
        name: Case name.
        tumour_probability: Patient-level probability (:data:`PROBABILITY_AGGREGATION`).
        tumour: Decision at the calibrated threshold.
        threshold: Decision threshold.
        masks: ``(R, X, Y, Z)`` uint8 in the canonical (RAS+) grid: ``masks_ungated`` after
            the post-processing of ``postprocess`` (slice gate, then removal of small 3D
            components); all zero when gated. :meth:`masks_in_input_geometry` gives them in
            the input's stored grid.
        masks_ungated: The raw network output thresholded at 0.5: no patient gate, no slice
            gate, no component removal (what ``dice_ungated`` scores, so that the effect
            of the gate and the post-processing is measurable).
        gated: True when the mask was withheld (probability under the gate threshold).
        mask_reason: Why the mask was withheld.
        regions: Region names.
        volumes_ml: Region → volume in mL of the returned mask.
        risk: Patient survival risk, when the model has the survival head.
        slice_probabilities: Canonical axial index z → calibrated slice probability.
        warnings: Domain-check warnings.
        meta: Geometry of the input (shape, spacing, canonical and stored affines).
        gate_threshold: Probability under which the mask is withheld.
        postprocess: What the post-processing removed from ``masks_ungated`` (counted
            before the patient gate); None when none was run.
        domain: The out-of-domain check over the volume's slices.
        review: The confidence-based review flag of the patient decision (the cut-off is
            the one chosen on validation slice and image decisions).
    """

    name: str
    tumour_probability: float
    tumour: bool
    threshold: float
    masks: np.ndarray
    masks_ungated: np.ndarray
    gated: bool
    mask_reason: str | None
    regions: list[str]
    volumes_ml: dict[str, float]
    risk: RiskResult | None
    slice_probabilities: dict[int, float]
    warnings: list[str] = field(default_factory=list)
    meta: ImageMeta | None = None
    gate_threshold: float = 0.3
    postprocess: PostprocessReport | None = None
    domain: DomainResult = field(default_factory=DomainResult)
    review: ReviewResult = field(default_factory=lambda: _unreviewed())

    def masks_in_input_geometry(self) -> np.ndarray:
        """``(R, *stored_shape)`` uint8 masks in the input's stored voxel order.

        With :func:`input_affine` of ``meta`` they occupy exactly the input's grid.
        """
        return self.masks if self.meta is None else to_stored(self.masks, self.meta)

    def label_map(self) -> np.ndarray:
        """``(X, Y, Z)`` uint8 canonical label volume: region ``i`` → ``i + 1`` (later wins)."""
        labels = np.zeros(self.masks.shape[1:], dtype=np.uint8)
        for i in range(self.masks.shape[0]):
            labels[self.masks[i] > 0] = i + 1
        return labels

    def to_json(self) -> dict[str, Any]:
        """JSON-able mapping (no arrays)."""
        return {
            "name": self.name,
            "kind": "volume",
            "tumour_probability": self.tumour_probability,
            "probability_aggregation": PROBABILITY_AGGREGATION,
            "tumour": self.tumour,
            "threshold": self.threshold,
            "gate_threshold": self.gate_threshold,
            "mask_returned": not self.gated,
            "mask_reason": self.mask_reason,
            "regions": self.regions,
            "mask_labels": {r: i + 1 for i, r in enumerate(self.regions)},
            "volumes_ml": self.volumes_ml,
            "postprocess": None if self.postprocess is None else self.postprocess.to_json(),
            "risk": None if self.risk is None else self.risk.to_json(),
            "n_slices": len(self.slice_probabilities),
            "slice_probabilities": {str(z): p for z, p in self.slice_probabilities.items()},
            "geometry": _geometry_json(self.meta),
            "domain": self.domain.to_json(),
            "review": self.review.to_json(),
            "warnings": self.warnings,
            "disclaimer": DISCLAIMER,
        }


def _unreviewed() -> ReviewResult:
    """The flag of a result built without a calibration: not checked."""
    return ReviewResult(None, None, None, None, NO_CUTOFF)


def type_probabilities(out: Mapping[str, np.ndarray], i: int) -> dict[str, float] | None:
    """Softmax of image ``i``'s tumour-type logits by class name (None without that head)."""
    if "tumour_type_logits" not in out:
        return None
    z = out["tumour_type_logits"][i].astype(np.float64)
    e = np.exp(z - z.max())
    return {t: float(v) for t, v in zip(TUMOUR_TYPES, e / e.sum(), strict=True)}
