"""Task heads: segmentation (per pixel), classification (per slice), survival (per patient).

Every head returns logits (or a log-hazard), never probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tumorscope.models.blocks import LEAKY_SLOPE


class SegmentationHead(nn.Module):
    """1×1 convolution: ``(B, in_channels, H, W)`` → ``(B, n_regions, H, W)`` logits, one per region.

    With ``aux_channels`` it also holds one 1×1 convolution per coarser decoder scale for
    deep supervision (:meth:`aux`), used in training only.

    Args:
        in_channels: Channels of the full-resolution decoder output.
        n_regions: Regions (one sigmoid logit each).
        aux_channels: Channels of the coarser decoder outputs that get a head, fine → coarse.
    """

    def __init__(self, in_channels: int, n_regions: int, aux_channels: Sequence[int] = ()) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, n_regions, kernel_size=1)
        self.aux_convs = nn.ModuleList(nn.Conv2d(c, n_regions, kernel_size=1) for c in aux_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Region logits (sigmoid per region, nnU-Net's region-based style)."""
        return self.conv(x)

    def aux(self, coarse: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Logits of the coarser scales, fine → coarse (``coarse`` ordered the same way)."""
        return [conv(x) for conv, x in zip(self.aux_convs, coarse, strict=False)]


class ClassificationHead(nn.Module):
    """Slice decision: ``(B, in_features)`` readout (+ ``(B, E)`` evidence) → ``(B, n_classes)``.

    ``logits = linear(dropout(norm(readout))) + evidence_linear(evidence)``. The dropout is
    one of the model's MC-dropout layers (DESIGN "Inference"). ``norm`` is a layer norm
    over the readout's features (``normalise``): pre-normalisation features have no fixed
    scale, and a layer norm keeps each sample's pattern across channels and pooling types
    (average against max: how peaked a response is). The evidence features (the
    segmentation map's top-k mean and log-mean-exp, in logit units) enter linearly.

    Args:
        in_features: Size of the readout vector.
        n_classes: Logits out (1 for a binary head).
        dropout: MC-dropout probability on the readout.
        evidence_features: Size ``E`` of the evidence vector (0 = none).
        normalise: Layer-normalise the readout.
    """

    def __init__(
        self,
        in_features: int,
        n_classes: int,
        dropout: float = 0.0,
        *,
        evidence_features: int = 0,
        normalise: bool = False,
    ) -> None:
        super().__init__()
        self.norm: nn.Module = nn.LayerNorm(in_features) if normalise else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_features, n_classes)
        self.evidence: nn.Linear | None = (
            nn.Linear(evidence_features, n_classes, bias=False) if evidence_features else None
        )

    def forward(self, readout: torch.Tensor, evidence: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits (one logit for a binary head).

        Raises:
            ValueError: evidence given to a head built without it, or missing for one built with it.
        """
        logits = self.linear(self.dropout(self.norm(readout)))
        if self.evidence is None:
            if evidence is not None:
                raise ValueError("evidence: this head was built with evidence_features=0")
            return logits
        if evidence is None:
            raise ValueError("evidence: this head needs the segmentation evidence")
        return logits + self.evidence(evidence.to(logits.dtype))


class PatientSurvivalHead(nn.Module):
    """Per-slice survival embedding and patient-level attention pooling to one log-hazard.

    The slice embedding (:meth:`embed`, dropout → linear → LeakyReLU) runs inside the
    per-slice network; pooling (:meth:`forward`) runs over a batch's slices grouped by
    patient: attention MIL pooling (Ilse et al., ICML 2018) — score ``s_i = wᵀ tanh(V e_i)``, softmax of the
    scores over each patient's slices, weighted mean of the embeddings — then a linear
    layer without bias (Cox is shift-invariant) on ``[pooled, clinical]``. Duplicating all
    of a patient's slices leaves its weighted mean, hence its log-hazard, unchanged.

    Args:
        in_features: Channels of the pooled coarse features fed to :meth:`embed`.
        survival_dim: Size ``D`` of the slice embedding (and of the attention layer).
        clinical_features: Number ``K`` of clinical covariates joined per patient (0 = none).
        dropout: Dropout probability before the embedding layer (an MC-dropout layer).
        normalise: Layer-normalise the readout first (see :class:`ClassificationHead`).
    """

    def __init__(
        self,
        in_features: int,
        survival_dim: int,
        clinical_features: int = 0,
        dropout: float = 0.0,
        *,
        normalise: bool = False,
    ) -> None:
        super().__init__()
        self.embedding = nn.Sequential(
            nn.LayerNorm(in_features) if normalise else nn.Identity(),
            nn.Dropout(dropout),
            nn.Linear(in_features, survival_dim),
            nn.LeakyReLU(LEAKY_SLOPE),
        )
        self.attention = nn.Sequential(
            nn.Linear(survival_dim, survival_dim), nn.Tanh(), nn.Linear(survival_dim, 1, bias=False)
        )
        self.hazard = nn.Linear(survival_dim + clinical_features, 1, bias=False)
        self.survival_dim = survival_dim
        self.clinical_features = clinical_features

    def embed(self, pooled: torch.Tensor) -> torch.Tensor:
        """Per-slice embedding ``(B, in_features)`` → ``(B, D)``."""
        return self.embedding(pooled)

    def pool(
        self, embedding: torch.Tensor, patient_index: torch.Tensor, n_patients: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention-weighted mean of each patient's slice embeddings.

        Args:
            embedding: ``(B, D)`` slice embeddings.
            patient_index: ``(B,)`` int64 patient of each slice, in ``0..P-1``; every patient
                must have at least one slice.
            n_patients: ``P``; ``patient_index.max() + 1`` when None.

        Returns:
            ``(pooled (P, D), weights (B,))``; a patient's weights sum to 1.

        Raises:
            ValueError: on mismatched shapes, out-of-range indices or a patient without slices.
        """
        n_patients = self._check_index(embedding, patient_index, n_patients)
        scores = self.attention(embedding).squeeze(1).float()
        # Per-patient softmax through scatter ops: no Python loop over patients.
        peak = torch.full((n_patients,), float("-inf"), dtype=scores.dtype, device=scores.device)
        peak = peak.scatter_reduce(0, patient_index, scores, reduce="amax", include_self=True)
        expo = torch.exp(scores - peak[patient_index])
        denom = torch.zeros(n_patients, dtype=expo.dtype, device=expo.device).index_add(
            0, patient_index, expo
        )
        weights = (expo / denom[patient_index]).to(embedding.dtype)
        pooled = torch.zeros(
            n_patients, embedding.shape[1], dtype=embedding.dtype, device=embedding.device
        ).index_add(0, patient_index, weights.unsqueeze(1) * embedding)
        return pooled, weights

    def forward(
        self,
        embedding: torch.Tensor,
        patient_index: torch.Tensor,
        clinical: torch.Tensor | None = None,
        n_patients: int | None = None,
    ) -> torch.Tensor:
        """Log-hazard per patient.

        Args:
            embedding: ``(B, D)`` slice embeddings (``ModelOutput.survival_embedding``).
            patient_index: ``(B,)`` int64 patient of each slice in ``0..P-1``.
            clinical: ``(P, K)`` covariates, one row per patient; required iff ``K > 0``.
            n_patients: ``P``; ``patient_index.max() + 1`` when None.

        Returns:
            ``(P,)`` log-hazard (unnormalised; the Cox likelihood is shift-invariant).

        Raises:
            ValueError: on mismatched shapes or a missing/unexpected ``clinical``.
        """
        pooled, _ = self.pool(embedding, patient_index, n_patients)
        if self.clinical_features > 0:
            if clinical is None or clinical.shape != (pooled.shape[0], self.clinical_features):
                got = None if clinical is None else tuple(clinical.shape)
                raise ValueError(
                    f"clinical: expected shape ({pooled.shape[0]}, {self.clinical_features}) "
                    f"(one row per patient), got {got}"
                )
            pooled = torch.cat([pooled, clinical.to(pooled.dtype)], dim=1)
        elif clinical is not None and clinical.numel() > 0:
            raise ValueError(
                f"clinical: the head was built with clinical_features=0 but got shape {tuple(clinical.shape)}"
            )
        return self.hazard(pooled).squeeze(1)

    def _check_index(
        self, embedding: torch.Tensor, patient_index: torch.Tensor, n_patients: int | None
    ) -> int:
        if embedding.ndim != 2 or embedding.shape[1] != self.survival_dim:
            raise ValueError(
                f"embedding: expected shape (B, {self.survival_dim}), got {tuple(embedding.shape)}"
            )
        if patient_index.shape != (embedding.shape[0],) or patient_index.dtype != torch.int64:
            raise ValueError(
                f"patient_index: expected int64 of shape ({embedding.shape[0]},), "
                f"got {patient_index.dtype} {tuple(patient_index.shape)}"
            )
        if embedding.shape[0] == 0:
            raise ValueError("embedding: empty batch (no slices)")
        if n_patients is None:
            n_patients = int(patient_index.max()) + 1
        counts = torch.bincount(patient_index.clamp(min=0), minlength=n_patients)
        if (
            int(patient_index.min()) < 0
            or counts.numel() != n_patients
            or bool((counts == 0).any())
        ):
            raise ValueError(
                f"patient_index: values must cover 0..{n_patients - 1} with at least one slice each, "
                f"got slice counts {counts.tolist()}"
            )
        return n_patients
