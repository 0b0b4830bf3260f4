"""What a loaded run computes with: a small backend protocol and its PyTorch implementation.

``Predictor`` and evaluation call only :class:`Backend`; an exported folder (ONNX Runtime)
plugs in as another implementation without another loader.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from tumorscope.models.multitask import MultiTaskNet, pad_to_multiple, unpad


class Backend(Protocol):
    """The network of a run, on NumPy arrays."""

    @property
    def tasks(self) -> tuple[str, ...]:
        """Tasks the network has (``segmentation``, ``tumour``, ``tumour_type``, ``survival``)."""
        ...

    def forward_slices(
        self, images: np.ndarray, tasks: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Outputs of preprocessed slices ``(N, C, S, S)``: ``seg_prob (N, R, S, S)``,
        ``tumour_logit (N,)`` and where present ``tumour_type_logits (N, 4)``,
        ``embedding (N, D)``."""
        ...

    def patient_log_hazard(self, embedding: np.ndarray, clinical: np.ndarray | None) -> float:
        """One patient's log-hazard from its slices' embeddings ``(N, D)`` and covariates ``(K,)``."""
        ...


class TorchBackend:
    """:class:`Backend` over a ``MultiTaskNet`` (kept in eval mode).

    Args:
        model: The network.
        batch_size: Slices per forward pass.
    """

    def __init__(self, model: MultiTaskNet, batch_size: int = 16) -> None:
        self.model = model.eval()
        self.batch_size = batch_size

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.model.tasks)

    @torch.no_grad()
    def forward_slices(
        self, images: np.ndarray, tasks: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        run_tasks = tuple(tasks) if tasks is not None else self.tasks
        chunks: dict[str, list[np.ndarray]] = {}
        for start in range(0, images.shape[0], self.batch_size):
            x = torch.from_numpy(
                np.ascontiguousarray(images[start : start + self.batch_size], dtype=np.float32)
            )
            x, pad = pad_to_multiple(x, self.model.size_multiple)
            out = self.model(x, tasks=run_tasks)
            found = {
                "seg_prob": None if out.seg_logits is None else torch.sigmoid(unpad(out.seg_logits, pad)),
                "tumour_logit": None if out.tumour_logit is None else out.tumour_logit.reshape(-1),
                "tumour_type_logits": out.tumour_type_logits,
                "embedding": out.survival_embedding,
            }  # fmt: skip
            for key, value in found.items():
                if value is not None:
                    chunks.setdefault(key, []).append(value.numpy())
        return {k: np.concatenate(v) for k, v in chunks.items()}

    @torch.no_grad()
    def patient_log_hazard(self, embedding: np.ndarray, clinical: np.ndarray | None) -> float:
        emb = torch.from_numpy(np.ascontiguousarray(embedding, dtype=np.float32))
        index = torch.zeros(emb.shape[0], dtype=torch.long)
        clin = None if clinical is None else torch.from_numpy(np.asarray(clinical)[None])
        return float(self.model.patient_log_hazard(emb, index, clin)[0])
