"""The three graphs of an export, traced from a trained ``MultiTaskNet`` with
``torch.onnx.export`` (dynamo): trunk, tail (dropout masks as inputs) and patient head.

See :mod:`tumorscope.runs.onnx` for what each graph computes and how the backend runs
them. The batch axis is dynamic; the slice side is fixed to the run's preprocessed size
(padded to the network's size multiple), the only size a prediction feeds the network.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from tumorscope.models.decoder import DecoderTrunk
from tumorscope.models.heads import PatientSurvivalHead
from tumorscope.models.multitask import MultiTaskNet, Trunk
from tumorscope.runs.onnx import (
    PATIENT_FILE,
    TAIL_FILE,
    TAIL_OUTPUTS,
    TRUNK_FILE,
    TRUNK_OUTPUTS,
    DropoutMask,
)

log = logging.getLogger(__name__)

MAX_BATCH = 4096
OPSET = 18


class TrunkGraph(nn.Module):
    """``image (B, C, S, S)`` → ``mid``, ``readout``, ``domain_features``: the deterministic
    part (``MultiTaskNet.trunk``) and the spatial means of every encoder stage's
    pre-normalisation map (the features of the out-of-domain check)."""

    output_names = TRUNK_OUTPUTS

    def __init__(self, model: MultiTaskNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        trunk = self.model.trunk(image)
        assert trunk.decoder is not None  # segmentation is always built
        domain = torch.cat([p.float().mean(dim=(2, 3)) for p in trunk.pre_norm], dim=1)
        return trunk.decoder.mid, trunk.readout, domain


class GivenMask(nn.Module):
    """A dropout layer whose mask comes from outside (set before each call): ``x · mask``."""

    def __init__(self) -> None:
        super().__init__()
        self.mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.mask is not None
        return x * self.mask


def dropout_masks(model: MultiTaskNet, size: int) -> list[DropoutMask]:
    """The dropout layers of ``model``'s tail, with the shape of the mask each draws per
    slice (found by one forward pass on a zero slice of side ``size``)."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    names = {m: n for n, m in model.named_modules()}
    for layer in model.dropout_layers:

        def keep(mod: nn.Module, args: tuple[torch.Tensor, ...], _out: object) -> None:
            x = args[0]
            shapes[names[mod]] = (
                (int(x.shape[1]), 1, 1) if isinstance(mod, nn.Dropout2d) else tuple(x.shape[1:])
            )

        handles.append(layer.register_forward_hook(keep))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, model.cfg.in_channels, size, size))
    finally:
        for h in handles:
            h.remove()
    return [
        DropoutMask(
            name=f"mask_{k}", module=names[layer], p=float(layer.p), shape=shapes[names[layer]]
        )
        for k, layer in enumerate(model.dropout_layers)
        if names[layer] in shapes
    ]


class TailGraph(nn.Module):
    """``mid``, ``readout`` and one mask per dropout layer → the per-slice outputs
    (``TAIL_OUTPUTS`` of the model's tasks): ``MultiTaskNet.tail`` with each dropout layer
    replaced by a :class:`GivenMask`."""

    def __init__(self, model: MultiTaskNet, masks: list[DropoutMask]) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).eval()
        self.given: list[GivenMask] = []
        for mask in masks:
            parent_name, _, attr = mask.module.rpartition(".")
            parent = self.model.get_submodule(parent_name) if parent_name else self.model
            layer = GivenMask()
            if isinstance(parent, nn.Sequential) and attr.isdigit():
                parent[int(attr)] = layer
            else:
                setattr(parent, attr, layer)
            self.given.append(layer)
        tasks = set(self.model.tasks)
        self.output_names = tuple(k for k, t in TAIL_OUTPUTS.items() if t in tasks)

    def forward(self, mid: torch.Tensor, readout: torch.Tensor, *masks: torch.Tensor) -> tuple:
        for layer, mask in zip(self.given, masks, strict=True):
            layer.mask = mask
        trunk = Trunk(features=[], decoder=DecoderTrunk(coarse=[], mid=mid), readout=readout)
        out = self.model.tail(trunk)
        found = {
            "seg_logits": out.seg_logits,
            "tumour_logit": None if out.tumour_logit is None else out.tumour_logit.reshape(-1),
            "tumour_type_logits": out.tumour_type_logits,
            "embedding": out.survival_embedding,
        }
        return tuple(found[name] for name in self.output_names)


class PatientGraph(nn.Module):
    """One patient: ``embedding (N, D)`` (+ ``clinical (1, K)``) → ``log_hazard (1,)``.

    ``PatientSurvivalHead.forward`` with every slice in patient 0, written out because its
    index checks are data-dependent Python that does not trace: the attention softmax over
    the slices, the weighted mean, the covariates joined, the hazard layer.
    """

    def __init__(self, head: PatientSurvivalHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, embedding: torch.Tensor, *clinical: torch.Tensor) -> torch.Tensor:
        scores = self.head.attention(embedding).squeeze(1).float()
        weights = torch.softmax(scores, dim=0).to(embedding.dtype)
        pooled = (weights.unsqueeze(1) * embedding).sum(dim=0, keepdim=True)
        if clinical:
            pooled = torch.cat([pooled, clinical[0].to(pooled.dtype)], dim=1)
        return self.head.hazard(pooled).squeeze(1)


def _export(
    module: nn.Module,
    args: tuple,
    path: Path,
    inputs: list[str],
    outputs: list[str],
    dynamic: tuple,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=dynamic,
            dynamo=True,
            opset_version=OPSET,
            verbose=False,
            external_data=False,
        )


def export_graphs(model: MultiTaskNet, folder: Path, size: int) -> list[DropoutMask]:
    """Write :data:`TRUNK_FILE`, :data:`TAIL_FILE` and (with a survival head)
    :data:`PATIENT_FILE` of ``model`` into ``folder``, for square slices of side ``size``.

    Returns:
        The tail's dropout masks, in input order.
    """
    model = model.eval()
    masks = dropout_masks(model, size)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    x = torch.zeros(2, model.cfg.in_channels, size, size)
    trunk = TrunkGraph(model)
    _export(trunk, (x,), folder / TRUNK_FILE, ["image"], list(trunk.output_names), ({0: batch},))
    with torch.no_grad():
        mid, readout, _ = trunk(x)
    tail = TailGraph(model, masks)
    mask_args = tuple(torch.ones(2, *m.shape) for m in masks)
    _export(
        tail,
        (mid, readout, *mask_args),
        folder / TAIL_FILE,
        ["mid", "readout", *[m.name for m in masks]],
        list(tail.output_names),
        ({0: batch}, {0: batch}, tuple({0: batch} for _ in masks)),
    )
    head = model.survival_head
    if head is not None:
        slices = torch.export.Dim("slices", min=1, max=MAX_BATCH)
        k = head.clinical_features
        emb = torch.randn(3, head.survival_dim)
        clin = (torch.zeros(1, k),) if k else ()
        _export(
            PatientGraph(head).eval(),
            (emb, *clin),
            folder / PATIENT_FILE,
            ["embedding", *(["clinical"] if k else [])],
            ["log_hazard"],
            ({0: slices}, ({},)) if k else ({0: slices},),
        )
    return masks
