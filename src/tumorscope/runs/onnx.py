"""The ONNX Runtime backend of an exported run folder (``tumorscope export``).

An export holds three graphs, split where the PyTorch network splits for MC dropout
(``MultiTaskNet.trunk`` / ``tail``): the **trunk** (image → the decoder's state before its
dropout layer, the heads' readout, the out-of-domain features), the **tail** (that state
and one mask per dropout layer → every per-slice output) and the **patient** survival head
(one patient's slice embeddings and covariates → its log-hazard). A plain prediction runs
the tail once with masks of ones (dropout off); MC dropout runs the trunk once and the
tail once per sample with sampled masks, as the PyTorch backend does.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tumorscope.data.types import DataError
from tumorscope.models.multitask import MultiTaskNet

TRUNK_FILE = "trunk.onnx"
TAIL_FILE = "tail.onnx"
PATIENT_FILE = "patient.onnx"
# Outputs of the tail graph, in order, and the task each serves.
TAIL_OUTPUTS: dict[str, str] = {
    "seg_logits": "segmentation",
    "tumour_logit": "tumour",
    "tumour_type_logits": "tumour_type",
    "embedding": "survival",
}
DOMAIN_OUTPUT = "domain_features"
# Outputs of the trunk graph, in order.
TRUNK_OUTPUTS = ("mid", "readout", DOMAIN_OUTPUT)
ORT_PROVIDERS = ["CPUExecutionProvider"]


@dataclass(frozen=True)
class DropoutMask:
    """One dropout layer of the tail, fed as an input ``name`` of the tail graph.

    Attributes:
        name: The tail graph's input.
        module: The layer's name in the PyTorch network (e.g. ``decoder.dropout``).
        p: Its drop probability; a sampled mask is 0 or ``1 / (1 − p)``.
        shape: The mask's shape after the batch axis (``(C, 1, 1)`` for channel dropout,
            ``(F,)`` for plain dropout).
    """

    name: str
    module: str
    p: float
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "module": self.module, "p": self.p, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DropoutMask:
        return cls(
            name=str(raw["name"]),
            module=str(raw["module"]),
            p=float(raw["p"]),
            shape=tuple(int(s) for s in raw["shape"]),
        )

    def ones(self, n: int) -> np.ndarray:
        """The mask of ``n`` slices with dropout off."""
        return np.ones((n, *self.shape), dtype=np.float32)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """A mask of ``n`` slices as the layer draws it in training mode (inverted dropout)."""
        keep = rng.random((n, *self.shape)) >= self.p
        scale = 0.0 if self.p >= 1.0 else 1.0 / (1.0 - self.p)
        return (keep * scale).astype(np.float32)


def session_options(threads: int | None = None) -> Any:
    """ONNX Runtime options: ``threads`` intra-op threads (default: torch's thread count, so
    the service's and the CLI's thread settings hold for both backends), one inter-op."""
    import onnxruntime as ort  # deferred: only an export needs it
    import torch

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


class OnnxBackend:
    """:class:`~tumorscope.runs.backend.Backend` over the graphs of an exported run.

    Args:
        folder: The export folder.
        tasks: Tasks the network has, in ``TASKS`` order.
        size: Side of the graphs' square input (the preprocessed slice, padded to the
            network's size multiple).
        channels: Input channels.
        masks: The tail's dropout masks, in input order.
        clinical_features: Covariates the patient graph takes (0: none).
        batch_size: Slices per run of the graphs.
        threads: Intra-op threads (default: torch's).
    """

    kind = "onnxruntime"

    def __init__(
        self,
        folder: str | Path,
        *,
        tasks: Sequence[str],
        size: int,
        channels: int,
        masks: Sequence[DropoutMask],
        clinical_features: int = 0,
        batch_size: int = 16,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort  # deferred: only an export needs it

        self.folder = Path(folder)
        self._tasks = tuple(tasks)
        self.size, self.channels = int(size), int(channels)
        self.masks = list(masks)
        self.clinical_features = int(clinical_features)
        self.batch_size = batch_size
        opts = session_options(threads)

        def open_graph(name: str) -> Any:
            return ort.InferenceSession(str(self.folder / name), opts, providers=ORT_PROVIDERS)

        self.trunk = open_graph(TRUNK_FILE)
        self.tail = open_graph(TAIL_FILE)
        self.patient = open_graph(PATIENT_FILE) if "survival" in self._tasks else None
        self.tail_outputs = [o.name for o in self.tail.get_outputs()]
        self.trunk_outputs = [o.name for o in self.trunk.get_outputs()]
        expected = [k for k, t in TAIL_OUTPUTS.items() if t in self._tasks]
        feeds = ["mid", "readout", *(m.name for m in self.masks)]
        got_feeds = [i.name for i in self.tail.get_inputs()]
        if (
            self.trunk_outputs != list(TRUNK_OUTPUTS)
            or self.tail_outputs != expected
            or got_feeds != feeds
        ):
            raise DataError(
                self.folder,
                f"graphs of another layout (trunk outputs {self.trunk_outputs}, "
                f"tail inputs {got_feeds} and outputs {self.tail_outputs}; expected "
                f"{list(TRUNK_OUTPUTS)}, {feeds} and {expected}): re-export the run",
            )

    @classmethod
    def of_network(
        cls,
        folder: str | Path,
        model: MultiTaskNet,
        size: int,
        masks: Sequence[DropoutMask],
        *,
        batch_size: int = 16,
    ) -> OnnxBackend:
        """The backend of graphs just exported from ``model`` (its tasks, channels and
        covariates) for slices of side ``size``."""
        return cls(
            folder,
            tasks=tuple(model.tasks),
            size=size,
            channels=model.cfg.in_channels,
            masks=masks,
            clinical_features=model.cfg.clinical_features,
            batch_size=batch_size,
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> OnnxBackend:
        # ONNX Runtime sessions run concurrent calls safely and cannot be copied: a copy
        # (one per service slot) shares them.
        clone = copy.copy(self)
        clone.masks = list(self.masks)
        return clone

    @property
    def tasks(self) -> tuple[str, ...]:
        return self._tasks

    @property
    def size_multiple(self) -> int:
        """The side of the graphs' input: a slice is padded to exactly this."""
        return self.size

    def pad_slices(self, images: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """Zero-pad ``(N, C, H, W)`` to the graphs' square side, split evenly as
        ``pad_to_multiple`` does; ``(padded, (left, right, top, bottom))``."""
        _, c, h, w = images.shape
        if c != self.channels or h > self.size or w > self.size:
            raise ValueError(
                f"input: expected (N, {self.channels}, H, W) with H, W <= {self.size} "
                f"(the exported size), got {tuple(images.shape)}"
            )
        ph, pw = self.size - h, self.size - w
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        widths = ((0, 0), (0, 0), (pad[2], pad[3]), (pad[0], pad[1]))
        return np.pad(images.astype(np.float32, copy=False), widths), pad

    def run_trunk(self, images: np.ndarray) -> tuple[dict[str, np.ndarray], tuple[int, ...]]:
        """The trunk graph on ``(N, C, H, W)`` slices: ``({mid, readout, domain_features},
        pad)``."""
        x, pad = self.pad_slices(np.ascontiguousarray(images, dtype=np.float32))
        got = self.trunk.run(None, {"image": x})
        return dict(zip(self.trunk_outputs, got, strict=True)), pad

    def run_tail(
        self, state: Mapping[str, np.ndarray], masks: Sequence[np.ndarray] | None = None
    ) -> dict[str, np.ndarray]:
        """The tail graph on a trunk state; ``masks`` one per :attr:`masks` (default: ones)."""
        n = state["readout"].shape[0]
        feeds = {"mid": state["mid"], "readout": state["readout"]}
        chosen = masks if masks is not None else [m.ones(n) for m in self.masks]
        feeds.update({m.name: a for m, a in zip(self.masks, chosen, strict=True)})
        return dict(zip(self.tail_outputs, self.tail.run(None, feeds), strict=True))

    def outputs(
        self,
        tail: Mapping[str, np.ndarray],
        pad: Sequence[int],
        tasks: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """The backend outputs of a tail run: the wanted tasks' arrays, the segmentation
        logits cropped back to the input size as probabilities (``seg_prob``)."""
        wanted = set(tasks) if tasks is not None else set(self._tasks)
        left, right, top, bottom = pad
        found = {}
        for name, value in tail.items():
            if TAIL_OUTPUTS.get(name) not in wanted:
                continue
            if name == "seg_logits":
                s = value.shape[-1]
                z = value[..., top : s - bottom, left : s - right]
                found["seg_prob"] = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
            else:
                found[name] = value.reshape(-1) if name == "tumour_logit" else value
        return found

    def forward_slices(
        self, images: np.ndarray, tasks: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        chunks: dict[str, list[np.ndarray]] = {}
        for start in range(0, images.shape[0], self.batch_size):
            state, pad = self.run_trunk(images[start : start + self.batch_size])
            found = self.outputs(self.run_tail(state), pad, tasks)
            found[DOMAIN_OUTPUT] = state[DOMAIN_OUTPUT].astype(np.float64)
            for key, value in found.items():
                chunks.setdefault(key, []).append(value)
        return {k: np.concatenate(v) for k, v in chunks.items()}

    def patient_log_hazard(self, embedding: np.ndarray, clinical: np.ndarray | None) -> float:
        if self.patient is None:
            raise ValueError("the model has no survival head (add 'survival' to model.heads)")
        feeds = {"embedding": np.ascontiguousarray(embedding, dtype=np.float32)}
        if self.clinical_features:
            if clinical is None:
                raise ValueError(f"clinical: expected {self.clinical_features} covariates")
            feeds["clinical"] = np.asarray(clinical, dtype=np.float32).reshape(1, -1)
        return float(self.patient.run(None, feeds)[0].reshape(-1)[0])


def graph_bytes(folder: Path) -> int:
    """Bytes of an export's graph files."""
    return sum(
        os.path.getsize(folder / f)
        for f in (TRUNK_FILE, TAIL_FILE, PATIENT_FILE)
        if (folder / f).is_file()
    )
