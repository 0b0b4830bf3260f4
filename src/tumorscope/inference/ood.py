"""The out-of-domain check of every prediction: a measured score, a threshold, a flag.

The run's :class:`~tumorscope.runs.load.DomainStats` (fitted at the end of training by
:mod:`tumorscope.training.ood`) describe the network's features on its training slices.
During the backend's own forward pass (no second pass), forward hooks on every encoder
stage's ``pre`` module (:func:`domain_layers`) catch its pre-normalisation map; their
spatial averages are the input's features, and their Mahalanobis distance to the
training slices is its score. A 2D input is out of domain when its score is above the
run's threshold for 2D inputs, a volume when the median of its slices' scores is above
the run's threshold for volumes (each set on its own kind of validation input). The
heuristic warnings of :mod:`tumorscope.inference.domain` are kept beside it.

Why this score, measured (``benchmarks/ood.py``, OOD AUROC against 2D inputs made from
PET/CT phantoms, pydicom's CT/MR files, scikit-image photos and noise): on the demo
recipe 0.988. On one shorter demo-model run, variants scored against the same sets: the
means of every stage 0.976; the tumour head's readout alone (mean and maximum of the last
two stages) 0.951; means and spatial standard deviations 0.981, but flagging more
in-domain 2D images and keyed to noise and texture level, which another scanner or
generator changes; k-nearest-neighbour distance 0.87; the energy score of the single
tumour logit 0.54 — it confuses "no tumour" with "unlike training".
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from tumorscope.inference.results import DomainResult
from tumorscope.models.blocks import EncoderStage
from tumorscope.models.multitask import MultiTaskNet
from tumorscope.runs import Backend, TorchBackend
from tumorscope.runs.load import DomainStats

FEATURES_KEY = "domain_features"
NO_DOMAIN_MODEL = (
    "not checked: the run has no domain model (made before the out-of-domain check); "
    "retrain it to get one"
)
NO_FEATURES = "not checked: this backend gives no domain features"
NO_SLICES = "not checked: no slice inside the brain/body mask"
UNRELIABLE = "the tumour call and mask are unreliable"


def domain_layers(model: MultiTaskNet) -> list[nn.Module]:
    """The modules whose outputs are the domain features, fine → coarse: each encoder
    stage's ``pre`` (its output is the stage's map before its last normalisation, the
    ``pre_norm`` of ``Encoder.encode``)."""
    return [s.pre for s in model.encoder.stages if isinstance(s, EncoderStage)]


class FeatureCapture:
    """Forward hooks that average each layer's ``(B, c, h, w)`` output over ``h, w``, for
    the calls of the thread that opened the capture (concurrent predictions on one model,
    as in the service, never mix their features).

    Args:
        layers: The layers, fine → coarse (:func:`domain_layers`).
    """

    def __init__(self, layers: list[nn.Module]) -> None:
        self.layers = layers
        self._pooled: list[list[torch.Tensor]] = [[] for _ in layers]
        self._handles: list[Any] = []
        self._thread = threading.get_ident()

    def _hook(self, k: int) -> Any:
        def keep(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            if threading.get_ident() == self._thread:
                self._pooled[k].append(output.detach().float().mean(dim=(2, 3)))

        return keep

    def __enter__(self) -> FeatureCapture:
        self._handles = [m.register_forward_hook(self._hook(k)) for k, m in enumerate(self.layers)]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def outputs(self) -> dict[str, np.ndarray]:
        """``{"domain_features": (N, Σ c) float64}`` over every forward call so far; ``{}``
        without layers or calls (the backend computed nothing this check can read)."""
        if not self.layers or not self._pooled[0]:
            return {}
        per_layer = [torch.cat(chunks) for chunks in self._pooled]
        return {FEATURES_KEY: torch.cat(per_layer, dim=1).double().numpy()}


@contextmanager
def capture_features(backend: Backend) -> Iterator[FeatureCapture]:
    """Catch the domain features of the forward passes run inside the block (a PyTorch
    backend; any other yields a capture that stays empty)."""
    layers = domain_layers(backend.model) if isinstance(backend, TorchBackend) else []
    with FeatureCapture(layers) as capture:
        yield capture


def _verdict(score: float, threshold: float, what: str) -> tuple[bool, str]:
    if score <= threshold:
        return True, f"{what} {score:.2f} <= threshold {threshold:.2f}: like the training data"
    return False, (
        f"{what} {score:.2f} > threshold {threshold:.2f}: unlike the training data (another "
        f"modality, body part or kind of image?); {UNRELIABLE}"
    )


class DomainCheck:
    """The out-of-domain check a predictor runs on what its forward passes captured.

    Args:
        stats: The run's domain model; None for a run without one (every result then
            says so, with ``score`` None).
    """

    def __init__(self, stats: DomainStats | None) -> None:
        self.stats = stats

    def _scores(
        self, out: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, DomainStats] | DomainResult:
        """Per-slice scores and the stats, or the unchecked result that says why there are none."""
        stats = self.stats
        if stats is None:
            return self.unscored(NO_DOMAIN_MODEL)
        feats = out.get(FEATURES_KEY)
        if feats is None:
            return self.unscored(NO_FEATURES)
        if feats.shape[1] != stats.feature_dim:
            return self.unscored(
                f"not checked: the domain model has {stats.feature_dim} features, the "
                f"network gives {feats.shape[1]}"
            )
        return stats.score(feats), stats

    def forward(
        self, backend: Backend, images: np.ndarray, tasks: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """``backend.forward_slices(images, tasks)`` plus the ``domain_features (N, F)``
        this check scores, caught during that same pass (absent for a backend without)."""
        with capture_features(backend) as capture:
            out = backend.forward_slices(images, tasks)
        return {**out, **capture.outputs()}

    def unscored(self, reason: str) -> DomainResult:
        """A result for an input the check could not score, saying why."""
        return DomainResult(reason=reason)

    def images(self, out: Mapping[str, np.ndarray], n: int) -> list[DomainResult]:
        """One result per 2D input of a batch whose forward outputs are ``out``."""
        found = self._scores(out)
        if isinstance(found, DomainResult):
            return [found] * n
        scores, t = found[0], found[1].image_threshold
        results = []
        for s in scores.tolist():
            ok, reason = _verdict(s, t, "score")
            results.append(DomainResult(score=s, threshold=t, in_domain=ok, reason=reason))
        return results

    def volume(self, out: Mapping[str, np.ndarray], slice_index: np.ndarray) -> DomainResult:
        """The result of a volume whose slices ``slice_index`` (canonical z) gave ``out``."""
        found = self._scores(out)
        if isinstance(found, DomainResult):
            return found
        scores, t = found[0], found[1].volume_threshold
        score = DomainStats.volume_score(scores)
        flagged = int((scores > t).sum())
        ok, reason = _verdict(score, t, "median slice score")
        return DomainResult(
            score=score,
            threshold=t,
            in_domain=ok,
            reason=f"{reason} ({flagged} of {scores.size} slices above the threshold)",
            slice_scores={int(z): float(v) for z, v in zip(slice_index, scores, strict=True)},
        )
