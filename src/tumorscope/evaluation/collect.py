"""Held-out predictions of a run through the Predictor: the raw material of every figure.

This measures exactly what users get: volumes go through ``Predictor.predict_volume``
(every slice inside the brain/body mask, masks restored to the input grid, the
conditional-mask gate applied), images through ``Predictor.predict_batch``.
:func:`collect_units` gathers per-patient Dice (gated and ungated, per region), HD95,
BraTS 2023 lesion-wise Dice and HD95 (gated, per region),
per-slice and per-image tumour logits/probabilities/labels, per-patient risks with their
outcomes, one overlay slice per case, every volume's and image's out-of-domain verdict
(:mod:`~tumorscope.inference.ood`), and each image's strata where its folder has a
``strata.csv`` (:mod:`~tumorscope.evaluation.strata`), for the units
:func:`~tumorscope.evaluation.seen.select_held_out` chose; :func:`collect_held_out` chooses
them by name instead (for callers that hold patient sets). :func:`classification_units` and
:func:`survival_arrays` turn them into the row-aligned arrays the figures are computed on.

Geometry: the predicted masks and the true masks are both in the input's canonical (RAS)
grid at the input's own resolution, i.e. the original voxels up to an axis permutation/flip,
so Dice, HD95 and the lesion-wise scores (with the per-axis spacing permuted alike) equal
their values in the file's original geometry; no resampling is involved.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tumorscope.data.layout import discover, load_case, region_masks
from tumorscope.data.types import DatasetIndex, LoadedCase
from tumorscope.evaluation.seen import Selection
from tumorscope.evaluation.strata import folder_strata
from tumorscope.inference.predictor import Predictor
from tumorscope.inference.results import VolumeResult
from tumorscope.metrics.lesionwise import lesion_wise
from tumorscope.metrics.segmentation import dice, segmentation_metrics
from tumorscope.runs import RunManifest

log = logging.getLogger(__name__)

IMAGE_CHUNK = 64
# Per-case extras of ``segmentation_metrics`` (mean over regions; volume error in mL).
CASE_EXTRA = ("iou", "boundary_f1", "abs_volume_error")
# Probabilities are clipped before inverting the sigmoid: float64 rounds σ(z) to 1 for z > ~36.
_P_EPS = 1e-12


@dataclass
class Overlay:
    """One axial slice of a case for the overlay grid.

    Attributes:
        patient_id: Case identifier.
        slice_index: Axial index ``z`` in the canonical grid.
        image: ``(X, Y)`` float32, first channel.
        truth: ``(X, Y)`` uint8 true mask of the first region.
        pred: ``(X, Y)`` uint8 returned (gated) mask of the first region.
        dice: 3D Dice of the case (mean over regions, gated).
    """

    patient_id: str
    slice_index: int
    image: np.ndarray
    truth: np.ndarray
    pred: np.ndarray
    dice: float


@dataclass
class HeldOut:
    """Per-patient, per-slice and per-image outputs on held-out data.

    Slice rows come from volume cases with a mask (label = true tumour on that slice);
    ``slice_boundary`` marks slices at the tumour's axial edge (label differs from an axial
    neighbour), where a few voxels decide the label. ``case_extra`` holds per-case IoU,
    boundary F1 (2 mm) and absolute volume error (mL), gated masks. ``lesion_dice`` and
    ``lesion_hd95`` (mm) are the BraTS 2023 lesion-wise scores
    (:func:`~tumorscope.metrics.lesionwise.lesion_wise`, glioma parameters) of the gated
    masks, mean over regions. Logits are the raw model outputs, before the run's
    temperature; probabilities are calibrated (what users get). ``image_strata`` is an
    image's ``{contrast, plane, skull, offset}`` (None without a ``strata.csv`` row);
    ``held_out`` the account of the units left out as seen
    (:attr:`~tumorscope.evaluation.seen.Selection.summary`); ``strata_files`` and
    ``strata_warnings`` the ``strata.csv`` files read and what did not match in them.
    ``risk`` is the run's patient risk (its survival model's where it has one),
    ``deep_risk`` the survival head's, ``features`` the tumour features of the predicted
    masks the survival model read. ``volume_domain_ids`` are every predicted volume (with
    a mask or an outcome), ``volume_in_domain`` / ``volume_domain_score`` its out-of-domain
    verdict and score, ``image_in_domain`` / ``image_domain_score`` each image's (aligned
    with ``image_ids``; None where not checked); ``domain_model`` the run's thresholds and
    quantile (None: the run has no domain model).
    """

    regions: list[str] = field(default_factory=list)
    temperature: float = 1.0
    threshold: float = 0.5
    case_ids: list[str] = field(default_factory=list)
    case_source: list[str] = field(default_factory=list)
    dice: list[float] = field(default_factory=list)
    dice_ungated: list[float] = field(default_factory=list)
    hd95: list[float] = field(default_factory=list)
    dice_by_region: dict[str, list[float]] = field(default_factory=dict)
    hd95_by_region: dict[str, list[float]] = field(default_factory=dict)
    lesion_dice: list[float] = field(default_factory=list)
    lesion_hd95: list[float] = field(default_factory=list)
    lesion_dice_by_region: dict[str, list[float]] = field(default_factory=dict)
    lesion_hd95_by_region: dict[str, list[float]] = field(default_factory=dict)
    volume_error_by_region: dict[str, list[float]] = field(default_factory=dict)
    case_extra: dict[str, list[float]] = field(default_factory=dict)
    gated: list[bool] = field(default_factory=list)
    slice_prob: list[float] = field(default_factory=list)
    slice_logit: list[float] = field(default_factory=list)
    slice_label: list[int] = field(default_factory=list)
    slice_patient: list[str] = field(default_factory=list)
    slice_index: list[int] = field(default_factory=list)
    slice_source: list[str] = field(default_factory=list)
    slice_boundary: list[bool] = field(default_factory=list)
    image_prob: list[float] = field(default_factory=list)
    image_logit: list[float] = field(default_factory=list)
    image_label: list[int] = field(default_factory=list)
    image_ids: list[str] = field(default_factory=list)
    image_source: list[str] = field(default_factory=list)
    image_strata: list[dict[str, str] | None] = field(default_factory=list)
    held_out: dict[str, Any] = field(default_factory=dict)
    strata_files: list[str] = field(default_factory=list)
    strata_warnings: list[str] = field(default_factory=list)
    risk: dict[str, float] = field(default_factory=dict)
    deep_risk: dict[str, float] = field(default_factory=dict)
    features: dict[str, dict[str, float]] = field(default_factory=dict)
    outcomes: dict[str, tuple[float, bool]] = field(default_factory=dict)
    true_risk: dict[str, float] = field(default_factory=dict)
    overlays: list[Overlay] = field(default_factory=list)
    volume_domain_ids: list[str] = field(default_factory=list)
    volume_in_domain: list[bool | None] = field(default_factory=list)
    volume_domain_score: list[float | None] = field(default_factory=list)
    image_in_domain: list[bool | None] = field(default_factory=list)
    image_domain_score: list[float | None] = field(default_factory=list)
    domain_model: dict[str, float] | None = None


def held_out_patients(manifest: RunManifest, split: str) -> set[str]:
    """Patients of ``split`` in the run's own splits."""
    return set((manifest.splits or {}).get(split, []))


def seen_patients(manifest: RunManifest) -> set[str]:
    """Patients in any of the run's splits."""
    return {p for ids in (manifest.splits or {}).values() for p in ids}


def logit_from_probability(prob: np.ndarray | float, temperature: float) -> np.ndarray:
    """Raw logit ``T·log(p/(1−p))`` of a temperature-scaled probability ``p = σ(z/T)``."""
    p = np.clip(np.asarray(prob, dtype=np.float64), _P_EPS, 1.0 - _P_EPS)
    return np.asarray(temperature * np.log(p / (1.0 - p)), dtype=np.float64)


def _boundary(labels: np.ndarray) -> np.ndarray:
    """Slices whose label differs from an axial neighbour's, ``(Z,)`` bool."""
    edge = np.zeros(labels.shape, dtype=bool)
    change = labels[1:] != labels[:-1]
    edge[1:] |= change
    edge[:-1] |= change
    return edge


def _overlay(pid: str, image: np.ndarray, truth: np.ndarray, pred: np.ndarray, d: float) -> Overlay:
    area = truth.sum(axis=(0, 1))
    if area.max() == 0:
        area = pred.sum(axis=(0, 1))
    z = int(area.argmax()) if area.max() > 0 else truth.shape[2] // 2
    return Overlay(
        patient_id=pid,
        slice_index=z,
        image=np.asarray(image[:, :, z], dtype=np.float32),
        truth=np.asarray(truth[:, :, z], dtype=np.uint8),
        pred=np.asarray(pred[:, :, z], dtype=np.uint8),
        dice=d,
    )


def _add_case(
    out: HeldOut, pid: str, source: str, loaded: LoadedCase, mask: np.ndarray, result: VolumeResult
) -> None:
    """Append one volume case: ``mask`` is ``loaded.mask`` (raw labels ``(X, Y, Z)``)."""
    regions = out.regions
    truth = region_masks(mask, loaded.labels or source, regions).astype(bool)
    spacing = tuple(float(s) for s in loaded.meta.spacing[:3])
    per_region = [
        segmentation_metrics(result.masks[i].astype(bool), truth[i], spacing)
        for i in range(len(regions))
    ]
    lesions = [
        lesion_wise(result.masks[i].astype(bool), truth[i], spacing) for i in range(len(regions))
    ]
    d = [m["dice"] for m in per_region]
    h = [m["hd95"] for m in per_region]
    out.case_ids.append(pid)
    out.case_source.append(source)
    out.dice.append(float(np.mean(d)))
    out.dice_ungated.append(
        float(np.mean([dice(result.masks_ungated[i], truth[i]) for i in range(len(regions))]))
    )
    out.hd95.append(float(np.mean(h)))
    out.lesion_dice.append(float(np.mean([lw.dice for lw in lesions])))
    out.lesion_hd95.append(float(np.mean([lw.hd95 for lw in lesions])))
    out.gated.append(bool(result.gated))
    for key in CASE_EXTRA:
        values = [m[key] / (1000.0 if key == "abs_volume_error" else 1.0) for m in per_region]
        out.case_extra.setdefault(key, []).append(float(np.mean(values)))
    for i, r in enumerate(regions):
        out.dice_by_region.setdefault(r, []).append(float(d[i]))
        out.hd95_by_region.setdefault(r, []).append(float(h[i]))
        out.lesion_dice_by_region.setdefault(r, []).append(lesions[i].dice)
        out.lesion_hd95_by_region.setdefault(r, []).append(lesions[i].hd95)
        volume_error = per_region[i]["abs_volume_error"] / 1000.0  # mm³ -> mL
        out.volume_error_by_region.setdefault(r, []).append(float(volume_error))
    tumour_z = np.asarray(truth.reshape(-1, truth.shape[-1]).any(axis=0), dtype=bool)  # (Z,)
    edge = _boundary(tumour_z)
    zs = sorted(result.slice_probabilities)
    probs = np.asarray([result.slice_probabilities[z] for z in zs])
    logits = logit_from_probability(probs, out.temperature)
    for z, p, lg in zip(zs, probs, logits, strict=True):
        out.slice_prob.append(float(p))
        out.slice_logit.append(float(lg))
        out.slice_label.append(int(tumour_z[z]))
        out.slice_patient.append(pid)
        out.slice_index.append(int(z))
        out.slice_source.append(source)
        out.slice_boundary.append(bool(edge[z]))
    out.overlays.append(_overlay(pid, loaded.image[0], truth[0], result.masks[0], out.dice[-1]))


def collect_held_out(
    predictor: Predictor, data: Sequence[str | Path], patients: set[str], seen: set[str]
) -> HeldOut:
    """Predict held-out cases and images chosen by name: ``patients`` plus unseen ones.

    Args:
        predictor: The model, as users get it.
        data: Data folders (every layout under them is read).
        patients: Patients of the evaluated split.
        seen: Patients in any split (others are always evaluated).

    Returns:
        The collected :class:`HeldOut` outputs.
    """
    index = discover(data)

    def wanted(pid: str) -> bool:
        return pid in patients or pid not in seen

    chosen = Selection(
        cases=[c for c in index.cases if wanted(c.patient_id)],
        images=[it for it in index.images if wanted(it.patient_id)],
    )
    return collect_units(predictor, index, chosen)


def collect_units(predictor: Predictor, index: DatasetIndex, chosen: Selection) -> HeldOut:
    """Predict the chosen cases and images of ``index`` (cases with neither a mask nor an
    outcome are skipped).

    Args:
        predictor: The model, as users get it.
        index: The discovered data (its outcomes, true risks and image folders).
        chosen: The units to predict and the account of the others.

    Returns:
        The collected :class:`HeldOut` outputs.

    Raises:
        DataError: A ``strata.csv`` of an image folder is malformed (checked first).
    """
    strata = folder_strata(index)
    out = HeldOut(
        regions=list(predictor.regions),
        temperature=float(predictor.temperature),
        threshold=float(predictor.threshold),
        held_out=dict(chosen.summary),
        strata_files=[str(f) for f in strata.files],
        strata_warnings=list(strata.warnings),
    )
    stats = predictor.domain.stats
    if stats is not None:
        out.domain_model = {
            "image_threshold": stats.image_threshold,
            "volume_threshold": stats.volume_threshold,
            "quantile": stats.quantile,
        }
    clinical_columns = predictor.clinical_covariates
    for case in chosen.cases:
        pid = case.patient_id
        outcome = index.outcomes.get(pid)
        if case.mask is None and outcome is None:
            continue
        loaded = load_case(case, predictor.spec.channels, missing=predictor.spec.missing_channels)
        clinical = None
        if outcome is not None and clinical_columns:
            clinical = {c: outcome.clinical.get(c) for c in clinical_columns}
        result = predictor.predict_volume(loaded, source=case.source, clinical=clinical)
        out.volume_domain_ids.append(pid)
        out.volume_in_domain.append(result.domain.in_domain)
        out.volume_domain_score.append(result.domain.score)
        if loaded.mask is not None:
            _add_case(out, pid, case.source, loaded, loaded.mask, result)
        if outcome is not None and result.risk is not None:
            out.risk[pid] = float(result.risk.log_hazard)
            if result.risk.deep_log_hazard is not None:
                out.deep_risk[pid] = float(result.risk.deep_log_hazard)
            if result.risk.features:
                out.features[pid] = dict(result.risk.features)
            out.outcomes[pid] = (float(outcome.time), bool(outcome.event))
            if pid in index.true_risk:
                out.true_risk[pid] = float(index.true_risk[pid])
    items = chosen.images
    for start in range(0, len(items), IMAGE_CHUNK):
        chunk = items[start : start + IMAGE_CHUNK]
        results = predictor.predict_batch(
            [it.path for it in chunk], names=[it.patient_id for it in chunk]
        )
        for it, r in zip(chunk, results, strict=True):
            out.image_prob.append(float(r.tumour_probability))
            out.image_logit.append(
                float(logit_from_probability(r.tumour_probability, out.temperature))
            )
            out.image_label.append(int(it.tumour))
            out.image_ids.append(it.patient_id)
            out.image_source.append(it.source)
            out.image_strata.append(strata.of(it))
            out.image_in_domain.append(r.domain.in_domain)
            out.image_domain_score.append(r.domain.score)
    log.info(
        "held out: %d volumes, %d slices, %d images, %d survival patients",
        len(out.dice),
        len(out.slice_prob),
        len(out.image_prob),
        len(out.risk),
    )
    return out


@dataclass
class Units:
    """Classification units (slices of volume cases and 2D images), row-aligned ``(N,)``."""

    ids: np.ndarray
    patient: np.ndarray
    source: np.ndarray
    kind: np.ndarray
    logit: np.ndarray
    prob: np.ndarray
    label: np.ndarray
    boundary: np.ndarray


def classification_units(held: HeldOut) -> Units:
    """Slices and images as one table; an image is its own patient (``source:id``)."""
    slice_ids = [f"{p}:z{z}" for p, z in zip(held.slice_patient, held.slice_index, strict=True)]
    image_ids = [f"{s}:{i}" for s, i in zip(held.image_source, held.image_ids, strict=True)]
    n_s, n_i = len(slice_ids), len(image_ids)
    return Units(
        ids=np.asarray(slice_ids + image_ids, dtype=object),
        patient=np.asarray(list(held.slice_patient) + image_ids, dtype=object),
        source=np.asarray(list(held.slice_source) + list(held.image_source), dtype=object),
        kind=np.asarray(["slice"] * n_s + ["image"] * n_i, dtype=object),
        logit=np.asarray(held.slice_logit + held.image_logit, dtype=np.float64),
        prob=np.asarray(held.slice_prob + held.image_prob, dtype=np.float64),
        label=np.asarray(held.slice_label + held.image_label, dtype=np.int64),
        boundary=np.asarray(held.slice_boundary + [False] * n_i, dtype=bool),
    )


def survival_arrays(held: HeldOut) -> dict[str, np.ndarray]:
    """Per-patient ``patient``, ``risk``, ``time``, ``event`` (and ``true_risk``, NaN if absent)."""
    pids = sorted(held.risk)
    return {
        "patient": np.asarray(pids, dtype=object),
        "risk": np.asarray([held.risk[p] for p in pids], dtype=np.float64),
        "time": np.asarray([held.outcomes[p][0] for p in pids], dtype=np.float64),
        "event": np.asarray([held.outcomes[p][1] for p in pids], dtype=bool),
        "true_risk": np.asarray([held.true_risk.get(p, np.nan) for p in pids], dtype=np.float64),
    }
