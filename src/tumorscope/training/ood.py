"""The run's out-of-domain model, fitted at the end of training (``runs.load.DomainStats``).

- **Features:** the spatial average of the pre-normalisation map of every encoder stage
  (``EncoderStage.pre``; what prediction catches from the same modules during its own
  forward pass, :mod:`tumorscope.inference.ood`, which gives the measurements behind
  this choice). Every depth, not only the tumour head's readout.
- **Statistics** from the training split's slices — volume slices and 2D images, as
  prediction cuts them (unaugmented, axial volume slices; the 2D images bring their own
  planes and contrasts), at most :data:`MAX_FIT_SLICES` spread evenly: the mean, and the
  Ledoit-Wolf shrunk covariance (scikit-learn) of the features standardised per dimension
  (shrinkage towards a multiple of the identity needs comparable scales), whose inverse
  is folded back to the raw features. Augmented draws of the training slices widen the
  fitted distribution and ranked out-of-domain inputs worse (AUROC 0.952 against 0.976
  on the same run).
- **Thresholds** on the validation split (unaugmented, as prediction cuts inputs), one
  per kind of input — 2D images, volume slices (and volumes) — each the
  ``calibration.domain_quantile`` quantile of that kind's scores, taken as the larger of
  the empirical quantile and a log-normal prediction bound at the same level
  (:func:`domain_thresholds`), so that about ``1 − domain_quantile`` of each kind's
  in-domain inputs are flagged. The 2D images of a training set are few and varied and
  score higher than volume slices; one threshold for both would let a volume unlike
  training pass.
- **Validation volume slices** are the cached ones (``data.slices_per_patient``), not every
  slice prediction scores: a cached slice scores as the same slice cut by prediction (to
  1e-3), and on 7 small runs (8-10 validation and test patients each) scoring every
  slice moved the volume threshold by −7 % to +4 % and the held-out slices' flagged share
  by at most a point. That share varied from 0 % to 9.5 % between runs (no test volume
  flagged): the slices above a threshold come in runs of neighbouring slices of a few
  patients, so ~8 validation patients set a slice quantile loosely, and patient-level
  bounds (random effects, a leave-one-patient-out level) did not narrow it either.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats as scipy_stats
from sklearn.covariance import LedoitWolf

from tumorscope.data.dataset import SliceDataset, collate
from tumorscope.models.multitask import MultiTaskNet, pad_to_multiple
from tumorscope.runs.files import DOMAIN_FILE, write_checkpoint
from tumorscope.runs.load import DomainStats
from tumorscope.training.data import StageData

log = logging.getLogger(__name__)

# Training slices the statistics are fitted on at most (spread evenly over the split).
MAX_FIT_SLICES = 4000
# Fewer training slices than this fit no domain model: a covariance needs samples.
MIN_FIT_SLICES = 8
FEATURE_BATCH = 32


def domain_features(model: MultiTaskNet, images: torch.Tensor) -> torch.Tensor:
    """``(B, Σ c_i)`` fp32 domain features of ``(B, C, H, W)`` slices: the spatial mean of
    every encoder stage's pre-normalisation map (the encoder alone runs; H and W padded
    with zeros to the network's size multiple, as the backend pads)."""
    _, pre_norm = model.encoder.encode(pad_to_multiple(images, model.size_multiple)[0])
    return torch.cat([m.float().mean(dim=(2, 3)) for m in pre_norm], dim=1)


@torch.no_grad()
def dataset_features(
    model: MultiTaskNet, ds: SliceDataset, indices: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(N, F)`` float64 features of the dataset's slices ``indices`` and ``(N,)`` bool:
    the slice is a 2D image (not a volume slice)."""
    model.eval()
    feats, is_image = [], []
    for start in range(0, indices.size, FEATURE_BATCH):
        batch = collate([ds.get(int(i)) for i in indices[start : start + FEATURE_BATCH]])
        feats.append(domain_features(model, batch.image).double().numpy())
        is_image.append(batch.slice_index.numpy() < 0)
    if not feats:
        return np.zeros((0, 0)), np.zeros(0, dtype=bool)
    return np.concatenate(feats), np.concatenate(is_image)


def fit_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mean (F,), precision (F, F))`` of ``(N, F)`` training features: Ledoit-Wolf on
    the per-dimension standardised features, mapped back to the raw ones."""
    x = np.asarray(features, dtype=np.float64)
    centre, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-12 * max(float(scale.max()), 1e-300), scale, 1.0)
    lw = LedoitWolf().fit((x - centre) / scale)
    mean = centre + scale * lw.location_
    precision = lw.precision_ / scale[:, None] / scale[None, :]
    return mean, (precision + precision.T) / 2.0


def domain_thresholds(
    scores: np.ndarray, is_image: np.ndarray, quantile: float
) -> tuple[float, float]:
    """``(image, volume)`` ``quantile`` thresholds of in-domain ``scores`` ``(N,)`` of two
    kinds of input (``is_image``: 2D images, else volume slices); a kind without scores
    takes the other's.

    A kind's threshold is the larger of its empirical quantile and the one-sided
    ``quantile`` prediction bound of a log-normal, ``exp(m_k + t_{q, N−K} · s · √(1 + 1/n_k))``:
    ``m_k`` the mean log-score of the kind's ``n_k`` scores, ``s`` the standard deviation of
    the log-scores around their kind's mean pooled over the ``K`` kinds present, ``t``
    Student's. The empirical quantile of a few dozen scores is about their maximum, which
    a new in-domain input exceeds ``1 / (n + 1)`` of the time, not ``1 − q``; the bound is
    exceeded ``1 − q`` of the time when log-scores are normal, the pooled spread keeps it
    finite for a kind of a handful of inputs, and the empirical quantile keeps a heavier
    tail covered. With fewer than ``K + 2`` scores: their maximum, for both kinds.

    Raises:
        ValueError: no scores, or ``quantile`` outside (0, 1].
    """
    s = np.asarray(scores, dtype=np.float64)
    kinds = np.asarray(is_image, dtype=bool)
    if s.size == 0:
        raise ValueError("domain threshold: no in-domain scores")
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"domain threshold: quantile {quantile} is not in (0, 1]")
    groups = {k: s[kinds == k] for k in (True, False) if (kinds == k).any()}
    dof = s.size - len(groups)
    if dof < 2 or quantile >= 1.0:
        return float(s.max()), float(s.max())
    logs = {k: np.log(np.maximum(g, 1e-12)) for k, g in groups.items()}
    spread = float(np.sqrt(sum(((x - x.mean()) ** 2).sum() for x in logs.values()) / dof))
    t = float(scipy_stats.t.ppf(quantile, dof))
    found = {
        k: max(
            float(np.quantile(g, quantile)),
            float(np.exp(logs[k].mean() + t * spread * np.sqrt(1 + 1 / g.size))),
        )
        for k, g in groups.items()
    }
    return found.get(True, found.get(False, 0.0)), found.get(False, found.get(True, 0.0))


def fit_domain(
    train: np.ndarray,
    train_is_image: np.ndarray,
    val: np.ndarray,
    val_is_image: np.ndarray,
    *,
    quantile: float,
) -> DomainStats:
    """Fit :class:`DomainStats` on training features and set its thresholds on validation ones.

    Args:
        train: ``(N, F)`` training features.
        train_is_image: ``(N,)`` the training input is a 2D image.
        val: ``(M, F)`` validation features (``M = 0``: the training scores set the
            thresholds, which then flag more than they should; logged).
        val_is_image: ``(M,)`` the validation input is a 2D image.
        quantile: The thresholds' level, ``calibration.domain_quantile``.
    """
    mean, precision = fit_statistics(train)
    # Round to the stored float32 first, so that the threshold is set on the scores
    # prediction will compute.
    stats = DomainStats(
        mean=mean.astype(np.float32).astype(np.float64),
        precision=precision.astype(np.float32).astype(np.float64),
        image_threshold=0.0,
        volume_threshold=0.0,
        quantile=quantile,
        n_train=int(train.shape[0]),
    )
    if val.shape[0]:
        image, volume = domain_thresholds(stats.score(val), val_is_image, quantile)
    else:
        log.warning("no validation slices: the domain thresholds are set on training slices")
        image, volume = domain_thresholds(stats.score(train), train_is_image, quantile)
    return DomainStats(
        mean=stats.mean,
        precision=stats.precision,
        image_threshold=image,
        volume_threshold=volume,
        quantile=quantile,
        n_train=stats.n_train,
    )


def fit_run_domain(
    model: MultiTaskNet, stage_data: StageData, *, quantile: float
) -> DomainStats | None:
    """The run's domain model from its training and validation splits, its thresholds at
    level ``quantile`` (``calibration.domain_quantile``); None, logged, when the training
    split has fewer than :data:`MIN_FIT_SLICES` slices."""
    train = SliceDataset(stage_data.prepared, "train", train=False)
    if len(train) < MIN_FIT_SLICES:
        log.warning("%d training slices: no domain model fitted", len(train))
        return None
    n = min(len(train), MAX_FIT_SLICES)
    picked = np.unique(np.linspace(0, len(train) - 1, n).round().astype(np.int64))
    x_train, train_is_image = dataset_features(model, train, picked)
    val = SliceDataset(stage_data.prepared, "val", train=False)
    x_val, val_is_image = dataset_features(model, val, np.arange(len(val)))
    stats = fit_domain(x_train, train_is_image, x_val, val_is_image, quantile=quantile)
    log.info(
        "domain model: %d features from %d training slices, thresholds %.2f (2D), %.2f (volumes)",
        stats.feature_dim,
        stats.n_train,
        stats.image_threshold,
        stats.volume_threshold,
    )
    return stats


def save_with_domain(
    folder: Path, model: MultiTaskNet, manifest: Mapping[str, Any], domain: DomainStats | None
) -> None:
    """Write the final run checkpoint: weights, manifest and, when fitted, :data:`DOMAIN_FILE`."""
    files = None if domain is None else {DOMAIN_FILE: domain.to_tensors()}
    write_checkpoint(folder, model_state=model.state_dict(), manifest=manifest, tensor_files=files)
