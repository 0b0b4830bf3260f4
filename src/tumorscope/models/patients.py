"""Per-slice outputs grouped by patient: the one collector behind every patient-level score.

Survival is per patient (DESIGN "Model"): validation, the cohort refit of the survival
head and the predictor all gather a patient's slice embeddings and hand them, with the
patient's covariates and outcome, to ``MultiTaskNet.patient_log_hazard``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class PatientBatch:
    """Slices of P patients, stacked.

    Attributes:
        embedding: ``(N, D)`` slice embeddings.
        patient_index: ``(N,)`` patient of each slice, ``0 … P-1``.
        clinical: ``(P, K)`` covariates (``K = 0``: none).
        time: ``(P,)`` follow-up times (NaN where unknown).
        event: ``(P,)`` event indicators.
        patient_ids: The P patient identifiers, in index order.
    """

    embedding: torch.Tensor
    patient_index: torch.Tensor
    clinical: torch.Tensor
    time: torch.Tensor
    event: torch.Tensor
    patient_ids: list[str]

    def __len__(self) -> int:
        return len(self.patient_ids)


@dataclass
class PatientCollector:
    """Collects slice embeddings per patient (in first-seen order) with one row of covariates
    and outcome per patient; :meth:`stack` returns them as one :class:`PatientBatch`."""

    _embeddings: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    _rows: dict[str, tuple[torch.Tensor, float, bool]] = field(default_factory=dict)

    def add(
        self,
        patient_id: str,
        embedding: torch.Tensor,
        clinical: torch.Tensor | None = None,
        time: float = float("nan"),
        event: bool = False,
    ) -> None:
        """Add one slice's embedding ``(D,)``; the patient's covariates ``(K,)`` and outcome
        are those of its last slice added (they repeat on every slice)."""
        self._embeddings.setdefault(patient_id, []).append(embedding.detach().float())
        clin = torch.zeros(0) if clinical is None else clinical.detach().float()
        self._rows[patient_id] = (clin, float(time), bool(event))

    def __len__(self) -> int:
        return len(self._embeddings)

    def stack(self) -> PatientBatch:
        """Everything collected as tensors (empty tensors when nothing was added)."""
        pids = list(self._embeddings)
        if not pids:
            empty = torch.zeros(0)
            return PatientBatch(empty, empty.long(), empty, empty, empty.bool(), [])
        counts = [len(self._embeddings[p]) for p in pids]
        return PatientBatch(
            embedding=torch.cat([torch.stack(self._embeddings[p]) for p in pids]),
            patient_index=torch.repeat_interleave(torch.arange(len(pids)), torch.tensor(counts)),
            clinical=torch.stack([self._rows[p][0] for p in pids]),
            time=torch.tensor([self._rows[p][1] for p in pids], dtype=torch.float32),
            event=torch.tensor([self._rows[p][2] for p in pids], dtype=torch.bool),
            patient_ids=pids,
        )
