"""The batch every loader yields and every loss reads: targets are optional per sample."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass
class Batch:
    """A batch of slices with partial labels.

    Every target tensor has a presence flag; losses use only the samples whose flag is
    set. Survival targets repeat on every slice of a patient; ``patient_index`` maps each
    slice to its patient (0..P-1, in order of first appearance) so survival losses and the
    patient survival head work per patient.

    Attributes:
        image: ``(B, C, H, W)`` float32.
        mask: ``(B, R, H, W)`` float32 region masks (zeros where ``has_mask`` is False).
        has_mask: ``(B,)`` bool.
        tumour: ``(B,)`` float32, 1 = tumour in slice.
        has_tumour: ``(B,)`` bool.
        tumour_type: ``(B,)`` int64 index into ``TUMOUR_TYPES`` (-1 where absent).
        has_tumour_type: ``(B,)`` bool.
        time: ``(B,)`` float32 follow-up in days (0 where absent).
        event: ``(B,)`` bool.
        has_survival: ``(B,)`` bool.
        clinical: ``(B, K)`` float32 imputed covariates (K may be 0).
        patient_index: ``(B,)`` int64.
        patient_ids: Patient id per slice.
        sources: Source layout per slice.
        slice_index: ``(B,)`` int64 slice position in its volume (-1 for 2D images).
    """

    image: torch.Tensor
    mask: torch.Tensor
    has_mask: torch.Tensor
    tumour: torch.Tensor
    has_tumour: torch.Tensor
    tumour_type: torch.Tensor
    has_tumour_type: torch.Tensor
    time: torch.Tensor
    event: torch.Tensor
    has_survival: torch.Tensor
    clinical: torch.Tensor
    patient_index: torch.Tensor
    patient_ids: list[str]
    sources: list[str]
    slice_index: torch.Tensor

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        """Move every tensor to ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **moved)
