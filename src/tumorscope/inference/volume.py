"""Volume prediction: a whole volume slice by slice inside the brain/body mask, through a
``tumorscope.inference.predictor.Predictor`` (whose ``predict_volume`` resolves the
per-call overrides and documents the result)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from tumorscope.data.spec import PreprocessSpec
from tumorscope.data.transforms import preprocess_volume, restore_volume
from tumorscope.data.types import DataError
from tumorscope.inference.domain import volume_warnings
from tumorscope.inference.inputs import VolumeInput, load_volume
from tumorscope.inference.ood import NO_SLICES, DomainCheck
from tumorscope.inference.postprocess import postprocess_masks
from tumorscope.inference.results import RiskResult, VolumeResult
from tumorscope.inference.review import review_decision
from tumorscope.inference.risk import measured_risk, survival_slices
from tumorscope.runs import Backend, Calibration, RunManifest
from tumorscope.survival.model import PET_CHANNEL, SurvivalModel

log = logging.getLogger(__name__)

NO_SEGMENTATION = "the model has no segmentation head"


class VolumePredictor(Protocol):
    """What :func:`predict_volume` asks of a ``tumorscope.inference.predictor.Predictor``."""

    backend: Backend
    manifest: RunManifest
    calibration: Calibration
    spec: PreprocessSpec
    regions: list[str]
    threshold: float
    min_component_ml: float
    domain: DomainCheck
    survival: SurvivalModel | None

    @property
    def clinical_covariates(self) -> list[str]: ...

    def forward_slices(
        self, images: np.ndarray, tasks: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]: ...

    def slice_probability(self, out: Mapping[str, np.ndarray]) -> np.ndarray: ...

    def risk(
        self, embedding: np.ndarray, clinical: Mapping[str, float | None] | None = None
    ) -> RiskResult: ...


def head_clinical(
    predictor: VolumePredictor, clinical: Mapping[str, float | None] | None
) -> dict[str, float | None] | None:
    """The covariates of ``clinical`` the survival head takes (the survival model may read
    more); an unknown name is kept, for the head to refuse it."""
    if clinical is None:
        return None
    known = set(predictor.clinical_covariates)
    head = set(predictor.manifest.clinical_columns)
    return {c: v for c, v in clinical.items() if c in head or c not in known}


def predict_volume(
    predictor: VolumePredictor,
    case: VolumeInput,
    *,
    source: str | None,
    clinical: Mapping[str, float | None] | None,
    gate: float,
    affine: np.ndarray | None,
    slice_gate: bool,
    min_component_ml: float,
) -> VolumeResult:
    """``Predictor.predict_volume`` with its overrides resolved: ``gate`` the gate
    threshold, ``slice_gate`` and ``min_component_ml`` the post-processing of this call.

    Raises:
        DataError: Unreadable input, or one holding NaN or Inf.
    """
    loaded, src, name, warnings = load_volume(case, predictor.spec, source=source, affine=affine)
    if not np.isfinite(loaded.image).all():
        raise DataError(loaded.meta.path, "volume holds NaN or Inf values")
    # A mask that came with a LoadedCase must not steer the slice choice: prediction is blind.
    blind = dataclasses.replace(loaded, mask=None)
    slices = preprocess_volume(blind, predictor.spec, source=src, all_slices=True)
    shape = tuple(int(s) for s in loaded.image.shape[1:])
    warnings = warnings + volume_warnings(loaded, slices, predictor.spec)
    ungated = np.zeros((len(predictor.regions), *shape), dtype=np.uint8)
    p, probs, risk, reason = 0.0, np.zeros(0), None, "no slice inside the brain/body mask"
    tasks, domain = predictor.backend.tasks, predictor.domain.unscored(NO_SLICES)
    if slices.slice_index.size:
        out = predictor.forward_slices(slices.images)
        domain = predictor.domain.volume(out, slices.slice_index)
        probs = predictor.slice_probability(out)
        p = float(probs.max())
        reason = f"patient tumour probability {p:.3f} is under the gate threshold {gate:.2f}"
        if "seg_prob" in out:
            ungated = restore_volume(out["seg_prob"], slices, shape, threshold=0.5)
        if "embedding" in out:
            used = survival_slices(slices, probs >= predictor.threshold, shape[2], predictor.spec)
            risk = predictor.risk(out["embedding"][used], head_clinical(predictor, clinical))
            risk.slices_used = [int(z) for z in slices.slice_index[used]]
    gated = p < gate or slices.slice_index.size == 0
    log.debug("%s: %d slices, p=%.3f, gated=%s", name, slices.slice_index.size, p, gated)
    meta = loaded.meta
    pet = None
    if predictor.survival is not None and PET_CHANNEL in predictor.spec.channels:
        pet = loaded.image[list(predictor.spec.channels).index(PET_CHANNEL)].copy()
    del loaded, blind  # the image (the largest array) is no longer needed: free it first
    voxel_ml = abs(float(np.linalg.det(meta.affine[:3, :3]))) / 1000.0
    by_z = np.zeros(shape[2], dtype=np.float64)
    by_z[slices.slice_index] = probs
    processed, report = postprocess_masks(
        ungated,
        by_z,
        gate_threshold=gate,
        voxel_ml=voxel_ml,
        slice_gate=slice_gate,
        min_component_ml=min_component_ml,
    )
    masks = np.zeros_like(ungated) if gated else processed
    if predictor.survival is not None:
        risk = measured_risk(
            predictor.survival,
            masks,
            predictor.regions,
            meta.spacing[:3],
            min_component_ml=predictor.min_component_ml,
            clinical=clinical,
            deep=risk,
            pet=pet,
        )
    return VolumeResult(
        name=name,
        tumour_probability=p,
        tumour=p >= predictor.threshold,
        threshold=predictor.threshold,
        masks=masks,
        masks_ungated=ungated,
        gated=gated,
        mask_reason=reason if gated else (None if "segmentation" in tasks else NO_SEGMENTATION),
        regions=predictor.regions,
        volumes_ml={r: float(masks[i].sum()) * voxel_ml for i, r in enumerate(predictor.regions)},
        risk=risk,
        slice_probabilities={
            int(z): float(q) for z, q in zip(slices.slice_index, probs, strict=True)
        },
        warnings=warnings,
        meta=meta,
        gate_threshold=gate,
        postprocess=report,
        domain=domain,
        review=review_decision(
            p, predictor.threshold, predictor.calibration, what="patient tumour"
        ),
    )
