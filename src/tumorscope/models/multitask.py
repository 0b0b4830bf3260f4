"""The multi-task network: shared encoder, decoder + segmentation head, classification and
survival heads, one :class:`ModelOutput` type.

The per-slice forward is split in two for MC-dropout (DESIGN "Inference"):
:meth:`MultiTaskNet.trunk` (encoder, every decoder stage but the last, global pooling; no
dropout, runs once per image) and :meth:`MultiTaskNet.tail` (the dropout layers, the last
decoder stage and every head; re-run per MC sample). ``forward(x) == tail(trunk(x))``.
The per-slice forward has no data-dependent control flow, so it traces to ONNX.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tumorscope.config import PARTS, TASKS, ModelConfig
from tumorscope.models.decoder import Decoder
from tumorscope.models.encoder import Encoder
from tumorscope.models.heads import ClassificationHead, PatientSurvivalHead, SegmentationHead

logger = logging.getLogger(__name__)

TUMOUR_TYPE_CLASSES = 4
# Which optional part serves which task (segmentation is always built).
TASK_HEAD: dict[str, str] = {
    "segmentation": "segmentation_head",
    "tumour": "tumour_head",
    "tumour_type": "tumour_type_head",
    "survival": "survival_head",
}
# The ModelOutput field of each task.
OUTPUT_FIELDS: dict[str, str] = {
    "segmentation": "seg_logits",
    "tumour": "tumour_logit",
    "tumour_type": "tumour_type_logits",
    "survival": "survival_embedding",
}


@dataclass
class ModelOutput:
    """What the per-slice network returns: logits only; None for tasks not asked for.

    Attributes:
        seg_logits: ``(B, R, H, W)`` one logit per region and pixel.
        tumour_logit: ``(B, 1)`` tumour-present logit.
        tumour_type_logits: ``(B, 4)`` tumour-type logits.
        survival_embedding: ``(B, D)`` per-slice embedding for :class:`PatientSurvivalHead`.
    """

    seg_logits: torch.Tensor | None = None
    tumour_logit: torch.Tensor | None = None
    tumour_type_logits: torch.Tensor | None = None
    survival_embedding: torch.Tensor | None = None


@dataclass
class Trunk:
    """The deterministic part of a forward pass, computed once per image.

    Attributes:
        features: Encoder maps fine → coarse, ``f_i`` of shape ``(B, c_i, H / 2**i, W / 2**i)``.
        decoded: ``(B, c_0, H, W)`` decoder output (before the MC-dropout layer); None when
            segmentation was not asked for.
        pooled: ``(B, c_depth)`` global average of the coarsest map (input of the heads).
    """

    features: list[torch.Tensor]
    decoded: torch.Tensor | None
    pooled: torch.Tensor


def _exporting() -> bool:
    return bool(
        torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()
    )


def pad_to_multiple(
    x: torch.Tensor, multiple: int, mode: str = "constant"
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pad the last two dims of ``x`` up to multiples of ``multiple``, split evenly on both sides.

    Args:
        x: ``(..., H, W)`` tensor (``(B, C, H, W)`` for ``reflect``/``replicate``).
        multiple: Required multiple (``MultiTaskNet.size_multiple``).
        mode: ``torch.nn.functional.pad`` mode; ``constant`` pads with zeros.

    Returns:
        ``(x_padded, pad)`` with ``pad = (left, right, top, bottom)`` in pixels, for :func:`unpad`.
    """
    if multiple < 1:
        raise ValueError(f"multiple: must be >= 1, got {multiple}")
    h, w = int(x.shape[-2]), int(x.shape[-1])
    ph, pw = -h % multiple, -w % multiple
    pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    if ph == 0 and pw == 0:
        return x, pad
    return F.pad(x, pad, mode=mode), pad


def unpad(y: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Crop ``(..., H, W)`` back to the size before :func:`pad_to_multiple`."""
    left, right, top, bottom = pad
    h, w = y.shape[-2], y.shape[-1]
    return y[..., top : h - bottom, left : w - right]


class MultiTaskNet(nn.Module):
    """Shared encoder with segmentation, ``tumour``, ``tumour_type`` and survival heads.

    Parts (``tumorscope.config.PARTS``): ``encoder``, ``decoder``, ``segmentation_head``,
    ``tumour_head``, ``tumour_type_head``, ``survival_head`` — the last three only when
    named in ``cfg.heads``. ``survival_head`` is a :class:`PatientSurvivalHead`: the
    per-slice embedding runs in :meth:`forward`; the training code pools it per patient with
    ``model.survival_head(embedding, patient_index, clinical)``.

    Args:
        cfg: Model configuration (sizes, norm, dropout, regions, heads).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = Encoder(cfg.in_channels, cfg.base_channels, cfg.depth, cfg.norm)
        self.decoder = Decoder(self.encoder.out_channels, cfg.norm, cfg.dropout)
        self.segmentation_head = SegmentationHead(self.decoder.out_channels, len(cfg.regions))
        coarse = self.encoder.out_channels[-1]
        self.tumour_head: ClassificationHead | None = None
        self.tumour_type_head: ClassificationHead | None = None
        self.survival_head: PatientSurvivalHead | None = None
        if "tumour" in cfg.heads:
            self.tumour_head = ClassificationHead(coarse, 1, cfg.dropout)
        if "tumour_type" in cfg.heads:
            self.tumour_type_head = ClassificationHead(coarse, TUMOUR_TYPE_CLASSES, cfg.dropout)
        if "survival" in cfg.heads:
            self.survival_head = PatientSurvivalHead(
                coarse, cfg.survival_dim, cfg.clinical_features, cfg.dropout
            )
        self._frozen: set[str] = set()

    def patient_log_hazard(
        self,
        embedding: torch.Tensor,
        patient_index: torch.Tensor,
        clinical: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-patient log-hazard ``(P,)`` from per-slice survival embeddings.

        Args:
            embedding: ``(N, D)`` slice embeddings (``ModelOutput.survival_embedding``).
            patient_index: ``(N,)`` patient of each slice, ``0 … P-1``.
            clinical: ``(P, K)`` covariates, or None (``K = 0`` counts as None).

        Raises:
            ValueError: the model was built without a survival head.
        """
        if self.survival_head is None:
            raise ValueError("the model has no survival head (add 'survival' to model.heads)")
        clin = clinical if clinical is not None and clinical.shape[-1] > 0 else None
        return self.survival_head(embedding, patient_index, clin)

    # ----------------------------------------------------------------- structure
    @property
    def parts(self) -> dict[str, nn.Module]:
        """The built parts by name, in ``PARTS`` order."""
        found = {name: getattr(self, name) for name in PARTS}
        return {name: module for name, module in found.items() if module is not None}

    @property
    def tasks(self) -> tuple[str, ...]:
        """Tasks this model can serve, in ``TASKS`` order."""
        parts = self.parts
        return tuple(t for t in TASKS if TASK_HEAD[t] in parts)

    @property
    def size_multiple(self) -> int:
        """H and W of the input must be multiples of this (``2**depth``)."""
        return 2**self.encoder.depth

    @property
    def gradcam_layer(self) -> nn.Module:
        """The module whose activations Grad-CAM uses: the last encoder stage (bottleneck)."""
        return self.encoder.last_stage

    @property
    def dropout_layers(self) -> list[nn.Dropout | nn.Dropout2d]:
        """The MC-dropout layers (all in the tail); enable these alone for MC sampling."""
        return [m for m in self.modules() if isinstance(m, nn.Dropout | nn.Dropout2d)]

    def parameter_counts(self) -> dict[str, int]:
        """Number of parameters per built part, plus ``total``."""
        counts = {name: sum(p.numel() for p in m.parameters()) for name, m in self.parts.items()}
        counts["total"] = sum(p.numel() for p in self.parameters())
        return counts

    # ----------------------------------------------------------------- freezing
    def _part(self, part: str) -> nn.Module:
        if part not in PARTS:
            raise ValueError(f"part: {part!r} is not one of {list(PARTS)}")
        module = self.parts.get(part)
        if module is None:
            raise ValueError(f"part: {part!r} is not built (model.heads = {list(self.cfg.heads)})")
        return module

    def freeze(self, part: str) -> None:
        """Stop gradients into ``part`` and keep its norm/dropout layers in eval mode.

        Raises:
            ValueError: for an unknown or unbuilt part.
        """
        module = self._part(part)
        for p in module.parameters():
            p.requires_grad_(False)
        module.eval()
        self._frozen.add(part)

    def unfreeze(self, part: str) -> None:
        """Undo :meth:`freeze` (the part follows the model's train/eval mode again)."""
        module = self._part(part)
        for p in module.parameters():
            p.requires_grad_(True)
        module.train(self.training)
        self._frozen.discard(part)

    @property
    def frozen(self) -> tuple[str, ...]:
        """Currently frozen parts, in ``PARTS`` order."""
        return tuple(p for p in PARTS if p in self._frozen)

    def train(self, mode: bool = True) -> MultiTaskNet:
        """Set train/eval mode; frozen parts stay in eval mode."""
        super().train(mode)
        for part in self._frozen:
            self.parts[part].eval()
        return self

    # ----------------------------------------------------------------- forward
    def resolve_tasks(self, tasks: Iterable[str] | None) -> frozenset[str]:
        """The set of tasks to run (None = all this model has).

        Raises:
            ValueError: for an unknown task or one without a head.
        """
        if tasks is None:
            return frozenset(self.tasks)
        wanted = frozenset(tasks)
        for t in wanted:
            if t not in TASKS:
                raise ValueError(f"tasks: unknown task {t!r}; expected some of {list(TASKS)}")
            if t not in self.tasks:
                raise ValueError(
                    f"tasks: {t!r} has no head in this model (model.heads = {list(self.cfg.heads)})"
                )
        return wanted

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ``ValueError`` naming the shape unless ``x`` is ``(B, in_channels, H, W)``
        with H and W multiples of :attr:`size_multiple` (pad with :func:`pad_to_multiple`)
        and, with instance norm, a bottleneck of at least two pixels."""
        m = self.size_multiple
        shape = tuple(int(s) for s in x.shape)
        if len(shape) != 4 or shape[1] != self.cfg.in_channels:
            raise ValueError(
                f"input: expected shape (B, {self.cfg.in_channels}, H, W), got {shape}"
            )
        if shape[2] % m or shape[3] % m:
            raise ValueError(
                f"input: H and W must be multiples of {m} (2**depth, depth={self.encoder.depth}), "
                f"got shape {shape}; pad with tumorscope.models.multitask.pad_to_multiple(x, {m})"
            )
        if self.cfg.norm == "instance" and (shape[2] // m) * (shape[3] // m) < 2:
            # Instance norm over a single bottleneck pixel outputs zeros (and fails in training).
            raise ValueError(
                f"input: shape {shape} leaves a 1×1 bottleneck at depth {self.encoder.depth}; "
                f"instance norm needs H or W of at least {2 * m}"
            )

    def trunk(self, x: torch.Tensor, tasks: Iterable[str] | None = None) -> Trunk:
        """Deterministic part: encoder, whole decoder, pooled coarse features.

        Args:
            x: ``(B, in_channels, H, W)`` with H, W multiples of :attr:`size_multiple`.
            tasks: Tasks the tail will compute (None = all); the decoder is skipped
                without ``segmentation``.

        Raises:
            ValueError: for a wrong shape or an unknown task.
        """
        wanted = self.resolve_tasks(tasks)
        if not _exporting():
            self.check_input(x)
        features = self.encoder(x)
        decoded = self.decoder(features) if "segmentation" in wanted else None
        pooled = features[-1].mean(dim=(2, 3))
        return Trunk(features=features, decoded=decoded, pooled=pooled)

    def tail(self, trunk: Trunk, tasks: Iterable[str] | None = None) -> ModelOutput:
        """Stochastic part: dropout → 1×1 segmentation head; dropout → classification/survival heads.

        Args:
            trunk: Output of :meth:`trunk` for the same ``tasks``.
            tasks: Tasks to compute (None = all this model has).
        """
        wanted = self.resolve_tasks(tasks)
        out = ModelOutput()
        if "segmentation" in wanted:
            if trunk.decoded is None:
                raise ValueError("tail: segmentation asked for but the trunk was built without it")
            out.seg_logits = self.segmentation_head(self.decoder.dropout(trunk.decoded))
        if "tumour" in wanted and self.tumour_head is not None:
            out.tumour_logit = self.tumour_head(trunk.pooled)
        if "tumour_type" in wanted and self.tumour_type_head is not None:
            out.tumour_type_logits = self.tumour_type_head(trunk.pooled)
        if "survival" in wanted and self.survival_head is not None:
            out.survival_embedding = self.survival_head.embed(trunk.pooled)
        return out

    def forward(self, x: torch.Tensor, tasks: Iterable[str] | None = None) -> ModelOutput:
        """Per-slice forward pass.

        Args:
            x: ``(B, in_channels, H, W)`` float, H and W multiples of ``2**depth``.
            tasks: Tasks to compute (None = all this model has); others stay None.

        Returns:
            :class:`ModelOutput` of logits and the survival embedding.

        Raises:
            ValueError: for a wrong input shape or a task without a head.
        """
        return self.tail(self.trunk(x, tasks), tasks)


class TensorOutputs(nn.Module):
    """Wrap a :class:`MultiTaskNet` so ``forward(x)`` returns a tuple of tensors (for ONNX).

    Args:
        model: The network.
        tasks: Tasks to compute (None = all the model has); outputs follow ``output_names``.
    """

    def __init__(self, model: MultiTaskNet, tasks: Iterable[str] | None = None) -> None:
        super().__init__()
        self.model = model
        wanted = model.resolve_tasks(tasks)
        self.tasks: tuple[str, ...] = tuple(t for t in TASKS if t in wanted)
        self.output_names: list[str] = [OUTPUT_FIELDS[t] for t in self.tasks]
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(B, C, H, W)`` → the outputs named in ``output_names``, in that order."""
        out = self.model(x, self.tasks)
        return tuple(getattr(out, name) for name in self.output_names)
