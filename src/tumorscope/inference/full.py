"""``predict_full``: every head, MC-dropout uncertainty and Grad-CAM for one input."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from tumorscope.data.spec import PreprocessSpec
from tumorscope.data.transforms import preprocess_volume, restore_volume
from tumorscope.data.types import LoadedCase
from tumorscope.inference.gradcam import CAM_METHODS, CamMethod
from tumorscope.inference.gradcam import gradcam as gradcam_maps
from tumorscope.inference.inputs import ImageInput, VolumeInput, cut, is_2d_input, read_2d
from tumorscope.inference.results import SliceResult, VolumeResult
from tumorscope.inference.uncertainty import (
    DEFAULT_REVIEW_CUTOFF,
    DEFAULT_SAMPLES,
    SCORE_DEFINITION,
    MCResult,
    binary_entropy_np,
    binary_mutual_information,
    mc_dropout,
    tta,
)
from tumorscope.models.multitask import MultiTaskNet
from tumorscope.runs.onnx import OnnxBackend


class FullPredictor(Protocol):
    """What :func:`predict_full` asks of a ``tumorscope.inference.predictor.Predictor``."""

    spec: PreprocessSpec
    temperature: float

    @property
    def model(self) -> MultiTaskNet: ...

    @property
    def network(self) -> MultiTaskNet | OnnxBackend: ...

    def predict(
        self, image: ImageInput, *, name: str | None = None, gate_threshold: float | None = None
    ) -> SliceResult: ...

    def load_volume(
        self, case: VolumeInput, *, source: str | None = None, affine: np.ndarray | None = None
    ) -> tuple[LoadedCase, str, str]: ...

    def predict_volume(
        self,
        case: VolumeInput,
        *,
        source: str | None = None,
        clinical: Mapping[str, float | None] | None = None,
        gate_threshold: float | None = None,
        affine: np.ndarray | None = None,
        slice_gate: bool | None = None,
        min_component_ml: float | None = None,
    ) -> VolumeResult: ...


@dataclass
class FullResult:
    """Every head, MC-dropout uncertainty and Grad-CAM for one image or volume.

    Attributes:
        base: The predictor's deterministic result (``SliceResult`` or ``VolumeResult``).
        images: ``(N, C, S, S)`` the preprocessed model inputs (N = 1 for a 2D image).
        slice_index: ``(N,)`` canonical axial index of each slice (volumes), else None.
        mc: MC-dropout / test-time-augmentation estimates, or None when neither was asked.
        review_cutoff: Score (nats) above which the case needs review.
        gradcam_tumour: ``(N, S, S)`` Grad-CAM of the tumour logit in ``[0, 1]``, or None.
        gradcam_survival: ``(N, S, S)`` Grad-CAM of the patient log-hazard (zero on slices
            the survival head does not pool), or None.
        restore: Maps ``(N, K, S, S)`` model-space maps to ``(K, H, W)`` in a 2D input's
            grid or ``(K, X, Y, Z)`` in a volume's canonical grid.
        tumour_region: The preprocessing spec's tumour region (whose maps :meth:`maps` gives).
        loaded: The canonical volume (volumes only).
        source: Layout of the volume (``brats``, ``volume``, ...).
        seed: Seed of the dropout masks.
        cam_method: ``hirescam`` or ``gradcam`` (``tumorscope.inference.gradcam``).
    """

    base: Any
    images: np.ndarray
    slice_index: np.ndarray | None
    mc: MCResult | None
    review_cutoff: float
    gradcam_tumour: np.ndarray | None
    gradcam_survival: np.ndarray | None
    restore: Any
    tumour_region: str
    loaded: Any = None
    source: str = "image"
    seed: int = 0
    cam_method: str = "hirescam"

    @property
    def uncertainty_score(self) -> float | None:
        """The case's score (nats, :data:`SCORE_DEFINITION`), None without MC samples."""
        return None if self.mc is None else self.mc.case_score()

    @property
    def needs_review(self) -> bool | None:
        """True when the score is above the cut-off; None without MC samples.

        The confidence-based flag, which needs no samples, is ``base.review``
        (:mod:`tumorscope.inference.review`); a caller flags a case when either is set.
        """
        score = self.uncertainty_score
        return None if score is None else score > self.review_cutoff

    def uncertainty_json(self) -> dict[str, Any] | None:
        """The ``uncertainty`` entry of ``<name>.json`` (None without MC samples)."""
        mc = self.mc
        if mc is None:
            return None
        case = mc.case_tumour_samples()
        if mc.views == ("identity",):
            method = "MC dropout: trunk once per image, dropout tail once per sample"
        else:
            method = (
                f"test-time augmentation over {len(mc.views)} views, batched through one trunk "
                "pass, each output mapped back to the input's grid"
                + (f", x {mc.dropout_samples} MC-dropout samples" if mc.dropout_samples else "")
            )
        entropy = None if case is None else float(binary_entropy_np(case.mean()))
        epistemic = None if case is None else float(binary_mutual_information(case))
        out: dict[str, Any] = {
            "method": method,
            "views": list(mc.views),
            "dropout_samples": mc.dropout_samples,
            "samples": mc.samples,
            "seed": self.seed,
            "score": self.uncertainty_score,
            "score_unit": "nats",
            "score_definition": SCORE_DEFINITION,
            "segmentation_score": mc.segmentation_score(),
            "review_cutoff": self.review_cutoff,
            "needs_review": self.needs_review,
            "tumour_probability_mean": None if case is None else float(case.mean()),
            "tumour_probability_std": None if case is None else float(case.std()),
            "tumour_mutual_information": epistemic,
            "tumour_entropy": entropy,
            "tumour_aleatoric": (
                None if entropy is None or epistemic is None else entropy - epistemic
            ),
            "segmentation_aleatoric": mc.segmentation_aleatoric(),
            "maps": list(MAP_NAMES),
        }
        if self.slice_index is not None:
            out["slice_scores"] = {
                str(int(z)): float(s) for z, s in zip(self.slice_index, mc.slice_score, strict=True)
            }
        return out

    def gradcam_json(self) -> dict[str, Any] | None:
        """The ``gradcam`` entry of ``<name>.json`` (None when not computed)."""
        if self.gradcam_tumour is None and self.gradcam_survival is None:
            return None
        targets = ["tumour logit"] if self.gradcam_tumour is not None else []
        if self.gradcam_survival is not None:
            targets.append("patient log-hazard")
        return {
            "method": _CAM_DESCRIPTION[self.cam_method],
            "layer": "model.gradcam_layer (last encoder stage)",
            "why": "tumorscope.inference.gradcam module docstring",
            "targets": targets,
        }

    def to_json(self) -> dict[str, Any]:
        """The predictor's JSON plus ``uncertainty`` and ``gradcam`` entries."""
        return {
            **self.base.to_json(),
            "uncertainty": self.uncertainty_json(),
            "gradcam": self.gradcam_json(),
        }

    def maps(self) -> np.ndarray | None:
        """``(4, *grid)`` float32 tumour-region maps :data:`MAP_NAMES` in the input's grid
        (``(4, H, W)`` for a 2D input, canonical ``(4, X, Y, Z)`` for a volume)."""
        mc = self.mc
        if mc is None or mc.probability is None:
            return None
        k = _tumour_region_index(self.base.regions, self.tumour_region)
        assert mc.std is not None and mc.entropy is not None and mc.mutual_information is not None
        stack = [m[:, k] for m in (mc.probability, mc.std, mc.entropy, mc.mutual_information)]
        return np.asarray(self.restore(np.stack(stack, axis=1)), dtype=np.float32)


MAP_NAMES = ("mean_probability", "std", "entropy", "mutual_information")
MAP_UNITS = ("probability", "probability", "nats", "nats")
_CAM_DESCRIPTION = {
    "hirescam": "HiResCAM: ReLU(sum over channels of gradient x activation) before the "
    "bottleneck's instance norm (captum LayerGradientXActivation), bilinear, max-scaled",
    "gradcam": "Grad-CAM (captum LayerGradCam), ReLU, bilinear upsampling, max-scaled",
}


def _tumour_region_index(regions: list[str], tumour_region: str) -> int:
    """Index of the spec's tumour region among the model's regions (0 if it has no such output)."""
    return regions.index(tumour_region) if tumour_region in regions else 0


def is_2d_item(item: Any) -> bool:
    """True for a 2D image input (array ``(H, W)``/``(C<=16, H, W)``, PNG/JPEG, 2D NIfTI)."""
    if isinstance(item, np.ndarray):
        return item.ndim == 2 or (item.ndim == 3 and item.shape[0] <= 16)
    if isinstance(item, str | Path):
        return is_2d_input(Path(item))
    return False


def predict_full(
    predictor: FullPredictor,
    image_or_case: Any,
    *,
    mc_samples: int = DEFAULT_SAMPLES,
    gradcam: bool = True,
    tta_views: int = 0,
    review_cutoff: float = DEFAULT_REVIEW_CUTOFF,
    seed: int = 0,
    cam_method: str = "hirescam",
    clinical: dict[str, float | None] | None = None,
    gate_threshold: float | None = None,
    source: str | None = None,
    slice_gate: bool | None = None,
    min_component_ml: float | None = None,
) -> FullResult:
    """All heads, MC-dropout uncertainty and Grad-CAM for a 2D image or a volume.

    Args:
        predictor: A ``tumorscope.inference.predictor.Predictor`` (typed by its protocol).
        image_or_case: Anything ``Predictor.predict`` (2D) or ``predict_volume`` takes.
        mc_samples: Dropout samples (0 = no uncertainty); with ``tta_views``, per view.
        tta_views: Test-time-augmentation views (0 = none; 1–8, see
            :mod:`tumorscope.inference.views`), merged with MC dropout when both are set.
        gradcam: Compute Grad-CAM of the tumour logit and the patient log-hazard.
        review_cutoff: Score (nats) above which the case needs review.
        seed: Seed of the dropout masks.
        cam_method: ``hirescam`` (default) or ``gradcam`` (see ``tumorscope.inference.gradcam``).
        clinical: Covariates for the survival head (volumes).
        gate_threshold: Override of the conditional-mask gate.
        source: Layout name of a ``LoadedCase``.
        slice_gate: Override of the run's slice gate (volumes).
        min_component_ml: Override of the run's smallest kept 3D component, mL (volumes).

    Raises:
        DataError: Unreadable input (from the predictor). ValueError: bad arguments.
    """
    if mc_samples < 0:
        raise ValueError(f"mc_samples: must be >= 0, got {mc_samples}")
    if tta_views < 0:
        raise ValueError(f"tta_views: must be >= 0, got {tta_views}")
    if cam_method not in CAM_METHODS:
        raise ValueError(f"cam_method: {cam_method!r} is not one of {list(CAM_METHODS)}")
    method = cast(CamMethod, cam_method)
    if not review_cutoff >= 0:
        raise ValueError(f"review_cutoff: must be >= 0 nats, got {review_cutoff}")
    network = predictor.network
    model = predictor.model if gradcam else None  # Grad-CAM alone needs the PyTorch network
    loaded, src = None, "image"
    base: SliceResult | VolumeResult
    if is_2d_item(image_or_case):
        # The predictor's own reader and cut, so maps align with its mask.
        base = predictor.predict(image_or_case, gate_threshold=gate_threshold)
        image, back, _ = cut(read_2d(image_or_case, None, 0, 1, predictor.spec), predictor.spec)
        images, slice_index = image[None], None

        def restore(maps: np.ndarray) -> np.ndarray:
            return np.asarray(back(maps[0]))

        used = np.arange(1)
    else:
        loaded, src, name = predictor.load_volume(image_or_case, source=source)
        base = predictor.predict_volume(
            loaded, source=src, clinical=clinical, gate_threshold=gate_threshold,
            slice_gate=slice_gate, min_component_ml=min_component_ml,
        )  # fmt: skip
        base.name = name
        slices = preprocess_volume(
            dataclasses.replace(loaded, mask=None), predictor.spec, source=src, all_slices=True
        )
        images, slice_index = slices.images, slices.slice_index
        shape = tuple(int(s) for s in loaded.image.shape[1:])

        def restore(maps: np.ndarray) -> np.ndarray:
            return restore_volume(maps, slices, shape)

        risk = base.risk
        chosen = [] if risk is None else risk.slices_used
        used = np.nonzero(np.isin(slice_index, chosen))[0]
    mc = None
    if tta_views and images.shape[0]:
        mc = tta(
            network, images, views=tta_views, mc_samples=mc_samples, seed=seed,
            temperature=predictor.temperature,
        )  # fmt: skip
    elif mc_samples and images.shape[0]:
        mc = mc_dropout(
            network, images, samples=mc_samples, seed=seed, temperature=predictor.temperature
        )
    cam_t = cam_s = None
    if model is not None and images.shape[0]:
        if model.tumour_head is not None:
            cam_t = gradcam_maps(model, images, target="tumour", method=method)
        if model.survival_head is not None and used.size:
            cam_s = np.zeros((images.shape[0], *images.shape[2:]), dtype=np.float32)
            cam_s[used] = gradcam_maps(
                model, images[used], target="survival_patient", method=method
            )
    return FullResult(
        base=base, images=images, slice_index=slice_index, mc=mc, review_cutoff=review_cutoff,
        gradcam_tumour=cam_t, gradcam_survival=cam_s, restore=restore,
        tumour_region=predictor.spec.tumour_region, loaded=loaded,
        source=src, seed=seed, cam_method=cam_method,
    )  # fmt: skip
