"""Prediction results as the service's answers: PNGs in base64, areas, the fixed
recommendation template, the review flag."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

from tumorscope import DISCLAIMER
from tumorscope.inference.full import FullResult
from tumorscope.inference.results import DomainResult, SliceResult, VolumeResult
from tumorscope.serving import schemas

NOT_ADVICE = "This is a research model's output, not medical advice and not a diagnosis."


def png_base64(image: np.ndarray) -> str:
    """``(H, W)`` uint8 or ``(H, W, 3)`` uint8 as a base64 PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def label_map(mask: np.ndarray) -> np.ndarray:
    """``(R, H, W)`` binary masks → ``(H, W)`` uint8 labels, region ``i`` → ``i + 1``."""
    labels = np.zeros(mask.shape[1:], dtype=np.uint8)
    for i in range(mask.shape[0]):
        labels[mask[i] > 0] = i + 1
    return labels


def cam_overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8: the image in grey (1st–99th percentile window) with the
    ``[0, 1]`` heat map blended on it (matplotlib's ``inferno``)."""
    from matplotlib import colormaps  # deferred: only Grad-CAM requests draw

    img = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(img, (1, 99)) if img.size else (0.0, 1.0)
    grey = np.clip((img - lo) / (hi - lo if hi > lo else 1.0), 0, 1)[..., None]
    heat = colormaps["inferno"](np.clip(cam, 0, 1))[..., :3]
    alpha = 0.6 * np.clip(cam, 0, 1)[..., None]
    return np.asarray(np.round(255 * ((1 - alpha) * grey + alpha * heat)), dtype=np.uint8)


def classification(p: float, threshold: float) -> schemas.Classification:
    """The decision at the calibrated threshold, with the probability of the decided label."""
    tumour = p >= threshold
    return schemas.Classification(
        label="tumour" if tumour else "no tumour",
        tumour_probability=p,
        confidence=p if tumour else 1.0 - p,
        threshold=threshold,
    )


def domain(d: DomainResult) -> schemas.Domain:
    """The out-of-domain check's fields."""
    return schemas.Domain(
        score=d.score, threshold=d.threshold, in_domain=d.in_domain, reason=d.reason
    )


def recommendation(
    p: float, threshold: float, d: DomainResult, review: bool, found: str | None
) -> str:
    """The fixed template: what was found and whether review is flagged — never advice."""
    if d.out_of_domain:
        head = (
            f"The input is unlike the data this model was trained on (domain score "
            f"{d.score:.1f} over its threshold {d.threshold:.1f}); its outputs are unreliable."
        )
    elif p >= threshold:
        head = f"Tumour probability {p:.2f} (threshold {threshold:.2f}): a tumour was found."
        if found:
            head += f" {found}"
    else:
        head = (
            f"Tumour probability {p:.2f}, under the threshold {threshold:.2f}: no tumour detected."
        )
    flag = " Review by a qualified person is flagged." if review else ""
    return f"{head}{flag} {NOT_ADVICE}"


def slice_prediction(r: SliceResult, full: FullResult | None = None) -> schemas.SlicePrediction:
    """The answer for a 2D image (``full``: with uncertainty and Grad-CAM when asked)."""
    labels = {name: i + 1 for i, name in enumerate(r.regions)}
    shape = [int(s) for s in r.image.shape] if r.image is not None else []
    area = pct = mm2 = png = None
    if r.mask is not None:
        pixels = float(np.prod(r.mask.shape[1:]))
        area = {n: int(r.mask[i].sum()) for i, n in enumerate(r.regions)}
        pct = {n: 100.0 * a / pixels for n, a in area.items()}
        if r.meta is not None and len(r.meta.spacing) >= 2:
            px_mm2 = float(r.meta.spacing[0]) * float(r.meta.spacing[1])
            mm2 = {n: a * px_mm2 for n, a in area.items()}
        png = png_base64(label_map(r.mask))
    unc = cam = None
    review = r.domain.out_of_domain or bool(r.review.needs_review)
    if full is not None and full.mc is not None:
        u = full.uncertainty_json() or {}
        unc = schemas.Uncertainty.model_validate(
            {k: u[k] for k in schemas.Uncertainty.model_fields}
        )
        review = review or bool(full.needs_review)
    if full is not None and full.gradcam_tumour is not None and r.image is not None:
        heat = np.asarray(full.restore(full.gradcam_tumour[:, None]))[0]
        info = full.gradcam_json() or {}
        cam = schemas.GradCam(
            method=info.get("method", full.cam_method),
            target="tumour logit",
            png_base64=png_base64(cam_overlay(r.image, heat)),
        )
    found = None
    if area is not None and pct is not None:
        found = (
            "Outlined: "
            + ", ".join(f"{n} {a} px ({pct[n]:.1f} % of the image)" for n, a in area.items())
            + "."
        )
    return schemas.SlicePrediction(
        classification=classification(r.tumour_probability, r.threshold),
        segmentation=schemas.Segmentation(
            mask_available=r.mask is not None, gate_threshold=r.gate_threshold,
            mask_reason=r.mask_reason, regions=list(r.regions), mask_labels=labels,
            area_pixels=area, area_mm2=mm2, percentage=pct, mask_png_base64=png,
        ),
        uncertainty=unc,
        gradcam=cam,
        domain=domain(r.domain),
        review=schemas.Review(**r.review.to_json()),
        needs_review=review,
        recommendation=recommendation(r.tumour_probability, r.threshold, r.domain, review, found),
        warnings=list(r.warnings),
        input_shape=shape,
        disclaimer=DISCLAIMER,
    )  # fmt: skip


def multitask_prediction(p: schemas.SlicePrediction, r: SliceResult) -> schemas.MultitaskPrediction:
    """The brain prototype's fields (its clients keep working), with ours under ``tumorscope``."""
    c = p.classification
    union = None if r.mask is None else (r.mask.max(axis=0) > 0)
    area = 0 if union is None else int(union.sum())
    pct = 0.0 if union is None else 100.0 * area / float(union.size)
    return schemas.MultitaskPrediction(
        classification=schemas.LegacyClassification(
            predicted_class=int(c.label == "tumour"),
            predicted_label="Tumor" if c.label == "tumour" else "No Tumor",
            confidence=c.confidence,
            tumor_probability=c.tumour_probability,
        ),
        segmentation=schemas.LegacySegmentation(
            mask_available=union is not None,
            tumor_area_pixels=area,
            tumor_percentage=pct,
            mask_base64=None if union is None else png_base64(255 * union.astype(np.uint8)),
        ),
        gradcam_overlay=None if p.gradcam is None else p.gradcam.png_base64,
        recommendation=p.recommendation,
        disclaimer=DISCLAIMER,
        tumorscope=p,
    )


def volume_prediction(r: VolumeResult, mask_url: str | None) -> schemas.VolumePrediction:
    """The answer for a volume (``mask_url``: where its mask NIfTI can be fetched)."""
    j: dict[str, Any] = r.to_json()
    risk = None
    if r.risk is not None:
        rj = r.risk.to_json()
        risk = schemas.Survival(
            log_hazard=rj["log_hazard"],
            percentile=rj["percentile"],
            survival_curve=schemas.SurvivalCurve(**rj["survival_curve"]),
            imputed_covariates=rj["imputed_covariates"],
        )
    review = r.domain.out_of_domain or bool(r.review.needs_review)
    found = None
    if not r.gated:
        found = "Volumes: " + ", ".join(f"{n} {v:.1f} mL" for n, v in r.volumes_ml.items()) + "."
    return schemas.VolumePrediction(
        classification=classification(r.tumour_probability, r.threshold),
        probability_aggregation=j["probability_aggregation"],
        mask_available=not r.gated,
        mask_reason=r.mask_reason,
        gate_threshold=r.gate_threshold,
        regions=list(r.regions),
        mask_labels=j["mask_labels"],
        volumes_ml=dict(r.volumes_ml),
        mask_url=mask_url,
        slice_probabilities=j["slice_probabilities"],
        survival=risk,
        domain=domain(r.domain),
        review=schemas.Review(**r.review.to_json()),
        needs_review=review,
        recommendation=recommendation(r.tumour_probability, r.threshold, r.domain, review, found),
        geometry=j["geometry"],
        warnings=list(r.warnings),
        disclaimer=DISCLAIMER,
    )
