"""Class-activation maps for the ``tumour`` logit and the survival log-hazard.

Two methods, both through captum at ``model.gradcam_layer`` (the last encoder stage):

- ``gradcam`` — Grad-CAM (Selvaraju et al., ICCV 2017), ``ReLU(Σ_k mean(∂y/∂A_k)·A_k)``
  on the stage's output (captum ``LayerGradCam``; equal to MONAI ``GradCAM``).
- ``hirescam`` (default) — HiResCAM (Draelos & Carin, 2020), ``ReLU(Σ_k ∂y/∂A_k ⊙ A_k)``
  on the stage's last convolution *before* its instance norm (captum
  ``LayerGradientXActivation``).

Why the default is not plain Grad-CAM: the heads average-pool an instance-normalised map,
whose spatial mean is fixed per channel, so tumour evidence is carried by the *shape* of each
channel's distribution and enters the logit with a negative weight. Grad-CAM's uniform
gradient on the pooled map then points *away* from the tumour (a model trained to use only
the tumour scores 0% on the pointing game, 91% with the sign flipped), and before the norm its
channel weights are exactly zero (a norm's output ignores a per-channel shift). Element-wise
gradients before the norm keep that coupling: the same model scores ≥ 80%.

Maps are rectified, upsampled bilinearly to the input size and scaled per slice to
``[0, 1]``, in the model's input space ``(S, S)``; callers map them back to the input's
geometry with the predictor's restore records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam, LayerGradientXActivation
from torch import nn

from tumorscope.models.multitask import MultiTaskNet, pad_to_multiple, unpad

log = logging.getLogger(__name__)

GradCamTarget = Literal["tumour", "survival_slice", "survival_patient"]
GRADCAM_TARGETS: tuple[str, ...] = ("tumour", "survival_slice", "survival_patient")
CamMethod = Literal["hirescam", "gradcam"]
CAM_METHODS: tuple[str, ...] = ("hirescam", "gradcam")


def prenorm_layer(model: MultiTaskNet) -> nn.Module:
    """The bottleneck stage's last convolution (its output is pre-normalisation)."""
    return model.prenorm_layer


def _forward_for(model: MultiTaskNet, target: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The scalar-per-row function whose gradient Grad-CAM takes.

    ``tumour``: ``(B, C, S, S)`` → ``(B,)`` tumour logits. ``survival_slice``: each slice
    treated as its own patient → ``(B,)`` log-hazards. ``survival_patient``: all slices pooled
    as one patient → ``(1,)`` log-hazard. The head is linear in the clinical covariates, so
    their values do not change the gradient; zeros stand in for them.
    """
    if target == "tumour":
        if model.tumour_head is None:
            raise ValueError("gradcam: target 'tumour' needs a model with the tumour head")

        def tumour(x: torch.Tensor) -> torch.Tensor:
            out = model(x, ("tumour",)).tumour_logit
            assert out is not None  # the task was asked for
            return out.reshape(-1)

        return tumour
    head = model.survival_head
    if head is None:
        raise ValueError(f"gradcam: target {target!r} needs a model with the survival head")
    per_slice = target == "survival_slice"

    def survival(x: torch.Tensor) -> torch.Tensor:
        emb = model(x, ("survival",)).survival_embedding
        assert emb is not None  # the task was asked for
        n = emb.shape[0]
        index = torch.arange(n, dtype=torch.long) if per_slice else torch.zeros(n, dtype=torch.long)
        p = n if per_slice else 1
        clin = torch.zeros(p, head.clinical_features) if head.clinical_features else None
        return head(emb, index, clin, n_patients=p)

    return survival


def gradcam(
    model: MultiTaskNet,
    images: np.ndarray | torch.Tensor,
    *,
    target: GradCamTarget = "tumour",
    method: CamMethod = "hirescam",
    batch_size: int = 16,
    normalise: bool = True,
) -> np.ndarray:
    """Grad-CAM maps of preprocessed slices at ``model.gradcam_layer``.

    Args:
        images: ``(N, C, S, S)`` float preprocessed slices (padded internally to
            ``model.size_multiple``).
        target: ``tumour`` (per-slice tumour logit), ``survival_slice`` (per-slice
            log-hazard, each slice its own patient) or ``survival_patient`` (the log-hazard
            of all ``N`` slices pooled as one patient; computed in one batch).
        method: ``hirescam`` (default) or ``gradcam`` (module docstring).
        batch_size: Slices per forward/backward pass (ignored for ``survival_patient``).
        normalise: Scale each slice's map by its maximum to ``[0, 1]`` (all-zero maps stay 0).

    Returns:
        ``(N, S, S)`` float32, finite and non-negative (rectified, bilinearly upsampled from
        the layer's ``(S / 2**depth)`` grid).

    Raises:
        ValueError: Unknown target, a model without the needed head, or a wrong shape.
    """
    if target not in GRADCAM_TARGETS:
        raise ValueError(f"gradcam: target {target!r} is not one of {list(GRADCAM_TARGETS)}")
    if method not in CAM_METHODS:
        raise ValueError(f"gradcam: method {method!r} is not one of {list(CAM_METHODS)}")
    x_all = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if x_all.ndim != 4:
        raise ValueError(f"gradcam: images must be (N, C, S, S), got {tuple(x_all.shape)}")
    n = int(x_all.shape[0])
    if n == 0:
        return np.zeros((0, *x_all.shape[2:]), dtype=np.float32)
    step = n if target == "survival_patient" else max(1, batch_size)
    was_training = model.training
    model.eval()
    forward = _forward_for(model, target)
    if method == "gradcam":
        cam: LayerGradCam | LayerGradientXActivation = LayerGradCam(forward, model.gradcam_layer)
    else:
        cam = LayerGradientXActivation(forward, prenorm_layer(model))
    maps: list[np.ndarray] = []
    try:
        with torch.enable_grad():
            for start in range(0, n, step):
                x, pad = pad_to_multiple(x_all[start : start + step], model.size_multiple)
                # A leaf that needs grad keeps the graph alive even when weights are frozen.
                x = x.clone().requires_grad_(True)
                if isinstance(cam, LayerGradCam):
                    attr = cam.attribute(x, relu_attributions=True)
                else:
                    attr = cam.attribute(x).sum(dim=1, keepdim=True).clamp_min(0.0)
                up = LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), "bilinear")
                maps.append(unpad(up, pad)[:, 0].detach().clamp_min(0.0).numpy())
    finally:
        model.train(was_training)
    out = np.concatenate(maps).astype(np.float32)
    out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    if normalise:
        peak = out.reshape(n, -1).max(axis=1)
        out = out / np.where(peak > 0, peak, 1.0).astype(np.float32)[:, None, None]
    return out.astype(np.float32)


def pointing_hits(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Pointing game (Zhang et al., ECCV 2016): does each map's peak fall inside its mask?

    Args:
        maps: ``(N, H, W)`` saliency maps.
        masks: ``(N, H, W)`` boolean ground truth.

    Returns:
        ``(N,)`` bool; slices whose map is all zero count as misses.
    """
    flat = maps.reshape(maps.shape[0], -1)
    peak = flat.argmax(axis=1)
    hit = masks.reshape(masks.shape[0], -1)[np.arange(maps.shape[0]), peak].astype(bool)
    return hit & (flat.max(axis=1) > 0)
