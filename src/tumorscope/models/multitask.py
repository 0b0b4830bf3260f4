"""The multi-task network: shared encoder, decoder + segmentation head, classification and
survival heads, one :class:`ModelOutput` type.

The per-slice forward is split in two for MC-dropout (DESIGN "Inference"):
:meth:`MultiTaskNet.trunk` (encoder, the decoder up to the first block of its last stage,
the pooled readout; no dropout, runs once per image) and :meth:`MultiTaskNet.tail` (the
dropout layers, the last decoder block and every head; re-run per MC sample).
``forward(x) == tail(trunk(x))``. The per-slice forward has no data-dependent control
flow, so it traces to ONNX.

The slice heads read the ``readout``: with ``model.readout: multiscale`` the last two
encoder stages' maps *before* their last normalisation, average- and max-pooled (instance
norm removes each sample's scale, so pooled normalised features cannot say how strong a
response is), and with ``model.seg_evidence`` the segmentation logits' evidence per
region (top-k mean and log-mean-exp of the map): the segmentation head learns "is there
tumour here" from dense labels, and the slice decision uses it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from tumorscope.config import PARTS, TASKS, ModelConfig
from tumorscope.models.blocks import EncoderStage
from tumorscope.models.decoder import Decoder, DecoderTrunk
from tumorscope.models.encoder import Encoder
from tumorscope.models.heads import ClassificationHead, PatientSurvivalHead, SegmentationHead
from tumorscope.models.readout import (
    EVIDENCE_PER_REGION,
    READOUT_STAGES,
    pooled_readout,
    seg_evidence,
)

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
        seg_aux_logits: Deep-supervision logits of the coarser decoder scales, fine →
            coarse (``(B, R, H / 2**k, W / 2**k)``, k = 1, 2, …); only in training mode
            with ``model.deep_supervision`` > 0, else None.
    """

    seg_logits: torch.Tensor | None = None
    tumour_logit: torch.Tensor | None = None
    tumour_type_logits: torch.Tensor | None = None
    survival_embedding: torch.Tensor | None = None
    seg_aux_logits: list[torch.Tensor] | None = None


@dataclass
class Trunk:
    """The deterministic part of a forward pass, computed once per image.

    Attributes:
        features: Encoder maps fine → coarse, ``f_i`` of shape ``(B, c_i, H / 2**i, W / 2**i)``.
        decoder: The decoder's deterministic part (up to the MC-dropout layer); None when
            neither segmentation nor the segmentation evidence is needed.
        readout: ``(B, F)`` pooled features, input of the slice heads.
        pre_norm: Every encoder stage's map before its last normalisation, fine → coarse
            (their spatial means are the out-of-domain features of an exported graph).
    """

    features: list[torch.Tensor]
    decoder: DecoderTrunk | None
    readout: torch.Tensor
    pre_norm: list[torch.Tensor] = field(default_factory=list)


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
        self.segmentation_head = SegmentationHead(
            self.decoder.out_channels,
            len(cfg.regions),
            self.decoder.coarse_channels[::-1][: cfg.deep_supervision],
        )
        chans = self.encoder.out_channels
        multiscale = cfg.readout == "multiscale"
        readout = 2 * sum(chans[-READOUT_STAGES:]) if multiscale else chans[-1]
        evidence = EVIDENCE_PER_REGION * len(cfg.regions) if cfg.seg_evidence else 0
        self.tumour_head: ClassificationHead | None = None
        self.tumour_type_head: ClassificationHead | None = None
        self.survival_head: PatientSurvivalHead | None = None
        if "tumour" in cfg.heads:
            self.tumour_head = ClassificationHead(
                readout, 1, cfg.dropout, evidence_features=evidence, normalise=multiscale
            )
        if "tumour_type" in cfg.heads:
            self.tumour_type_head = ClassificationHead(
                readout,
                TUMOUR_TYPE_CLASSES,
                cfg.dropout,
                evidence_features=evidence,
                normalise=multiscale,
            )
        if "survival" in cfg.heads:
            self.survival_head = PatientSurvivalHead(
                readout,
                cfg.survival_dim,
                cfg.clinical_features,
                cfg.dropout,
                normalise=multiscale,
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
        """The module whose activations Grad-CAM uses: the bottleneck stage up to its last
        convolution, whose output (before the final norm) feeds both the slice heads'
        readout and, normalised, the decoder."""
        stage = self.encoder.last_stage
        assert isinstance(stage, EncoderStage)
        return stage.pre

    @property
    def readout_layers(self) -> list[nn.Module]:
        """The convolutions whose outputs the slice heads' readout pools, fine → coarse
        (the last two encoder stages' last convolutions; the bottleneck's alone with
        ``readout: bottleneck``)."""
        n = READOUT_STAGES if self.cfg.readout == "multiscale" else 1
        stages = list(self.encoder.stages)[-n:]
        return [s.pre[-1] for s in stages if isinstance(s, EncoderStage)]

    @property
    def prenorm_layer(self) -> nn.Module:
        """The bottleneck stage's last convolution (its output is before the final norm)."""
        stage = self.encoder.last_stage
        assert isinstance(stage, EncoderStage)
        return stage.pre[-1]

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

    def _needs_decoder(self, wanted: frozenset[str]) -> bool:
        evidence = self.cfg.seg_evidence and bool(wanted & {"tumour", "tumour_type"})
        return "segmentation" in wanted or evidence

    def trunk(self, x: torch.Tensor, tasks: Iterable[str] | None = None) -> Trunk:
        """Deterministic part: encoder, the decoder up to its dropout layer, the readout.

        Args:
            x: ``(B, in_channels, H, W)`` with H, W multiples of :attr:`size_multiple`.
            tasks: Tasks the tail will compute (None = all); the decoder is skipped when
                neither segmentation nor the segmentation evidence is needed.

        Raises:
            ValueError: for a wrong shape or an unknown task.
        """
        wanted = self.resolve_tasks(tasks)
        if not _exporting():
            self.check_input(x)
        features, pre_norm = self.encoder.encode(x)
        decoder = self.decoder.trunk(features) if self._needs_decoder(wanted) else None
        if self.cfg.readout == "multiscale":
            readout = pooled_readout(pre_norm[-READOUT_STAGES:])
        else:
            readout = features[-1].mean(dim=(2, 3))
        return Trunk(features=features, decoder=decoder, readout=readout, pre_norm=pre_norm)

    def tail(self, trunk: Trunk, tasks: Iterable[str] | None = None) -> ModelOutput:
        """Stochastic part: dropout → last decoder block → segmentation head (+ evidence);
        dropout → slice heads.

        Args:
            trunk: Output of :meth:`trunk` for the same ``tasks``.
            tasks: Tasks to compute (None = all this model has).
        """
        wanted = self.resolve_tasks(tasks)
        out = ModelOutput()
        seg: torch.Tensor | None = None
        if self._needs_decoder(wanted):
            if trunk.decoder is None:
                raise ValueError("tail: segmentation asked for but the trunk was built without it")
            seg = self.segmentation_head(self.decoder.finish(trunk.decoder))
        if "segmentation" in wanted:
            out.seg_logits = seg
            if self.training and self.cfg.deep_supervision and trunk.decoder is not None:
                coarse_fine_first = trunk.decoder.coarse[::-1]
                out.seg_aux_logits = self.segmentation_head.aux(coarse_fine_first)
        evidence = None
        if self.cfg.seg_evidence and seg is not None:
            evidence = seg_evidence(seg if self.cfg.evidence_grad else seg.detach())
        if "tumour" in wanted and self.tumour_head is not None:
            out.tumour_logit = self.tumour_head(trunk.readout, evidence)
        if "tumour_type" in wanted and self.tumour_type_head is not None:
            out.tumour_type_logits = self.tumour_type_head(trunk.readout, evidence)
        if "survival" in wanted and self.survival_head is not None:
            out.survival_embedding = self.survival_head.embed(trunk.readout)
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
