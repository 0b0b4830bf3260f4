"""MC-dropout (Gal & Ghahramani, ICML 2016) and test-time-augmentation uncertainty, with a
cached trunk, as one predictive distribution.

The network's forward is split (``MultiTaskNet.trunk`` / ``tail``): the encoder and the
whole decoder run **once** per image; only the tail — the channel-dropout layer and the 1×1
segmentation head, and dropout with the classification/survival heads — runs once per sample. Dropout layers alone are put in
train mode, everything else stays in eval mode.

Test-time augmentation (:func:`tta`; Wang et al., Neurocomputing 2019) adds views of each
slice (:mod:`tumorscope.inference.views`): all views of a batch go through the trunk in one
pass, each view's output is mapped back to the slice's grid, and the predictive
distribution is over every (view, dropout sample) pair — ``views × samples`` members.

Maps per pixel and region (natural logarithms, unit ``nats``), over those members:
``entropy = H(mean_t p_t)`` (total predictive uncertainty) and
``mutual_information = H(mean_t p_t) − mean_t H(p_t)`` (the epistemic part, BALD), with
``H`` the binary entropy of a sigmoid output; their difference ``mean_t H(p_t)`` is the
aleatoric part (:attr:`MCResult.aleatoric`), so ``entropy = aleatoric + mutual_information``.

Uncertainty score (:data:`SCORE_DEFINITION`): per slice, the mean segmentation mutual
information over the pixels of the *region of interest* — the union over samples and
regions of the sampled masks (``p_t >= 0.5``), dilated by :data:`REVIEW_BAND_PX` pixels —
(0 when no sample segments anything). Per case: the ROI-pixel-weighted mean over slices,
or the mutual information of the case's tumour-present probability (the max over slices,
per sample), whichever is larger. A case **needs review** when its score exceeds the cut-off.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tumorscope.inference.gradcam import gradcam
from tumorscope.inference.views import IDENTITY, View, default_views
from tumorscope.models.multitask import MultiTaskNet, pad_to_multiple, unpad
from tumorscope.runs.onnx import OnnxBackend

log = logging.getLogger(__name__)

DEFAULT_SAMPLES = 20
# Cut-off on the score (nats, max ln 2 ≈ 0.693): about 3% of the maximal binary MI. Chosen
# so that a trained demo model flags cases whose masks change visibly between samples.
DEFAULT_REVIEW_CUTOFF = 0.02
REVIEW_BAND_PX = 3
SCORE_DEFINITION = (
    "max(mean segmentation mutual information (nats) inside the union of the sampled masks "
    f"dilated by {REVIEW_BAND_PX} px, mutual information of the case tumour probability)"
)
_DEFAULT_TASKS = ("segmentation", "tumour")


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of Bernoulli probabilities ``p`` (any shape; ``0 log 0 = 0``)."""
    return torch.special.entr(p) + torch.special.entr(1.0 - p)


def binary_entropy_np(p: np.ndarray | float) -> np.ndarray:
    """:func:`binary_entropy` of a numpy array or number (float64, nats)."""
    return binary_entropy(torch.as_tensor(np.asarray(p, dtype=np.float64))).numpy()


def binary_mutual_information(samples: np.ndarray) -> np.ndarray:
    """BALD mutual information (nats) of Bernoulli samples along axis 0: ``(T, ...)`` → ``(...)``."""
    t = torch.as_tensor(np.asarray(samples, dtype=np.float64))
    mi = binary_entropy(t.mean(0)) - binary_entropy(t).mean(0)
    return mi.clamp_min(0.0).numpy()


@dataclass
class MCResult:
    """MC-dropout estimates for ``N`` slices of side ``S`` and ``R`` regions.

    Attributes:
        samples: Number of samples ``T``.
        probability: ``(N, R, S, S)`` float32 mean segmentation probability.
        std: ``(N, R, S, S)`` float32 standard deviation of the probability over samples.
        entropy: ``(N, R, S, S)`` float32 predictive entropy of the mean (nats).
        mutual_information: ``(N, R, S, S)`` float32 entropy of the mean − mean entropy (nats).
        roi_pixels: ``(N,)`` int64 pixels in each slice's region of interest.
        slice_score: ``(N,)`` float64 mean mutual information in the ROI (nats; 0 if empty).
        tumour_samples: ``(T, N)`` float64 calibrated tumour probabilities per sample, or
            None without the tumour task.
        seg_samples: ``(T, N, R, S, S)`` float32 per-sample probabilities when kept.
        views: Names of the test-time views (``("identity",)`` for MC dropout alone).
        dropout_samples: Dropout samples per view (``samples = views × dropout_samples``).
        slice_aleatoric: ``(N,)`` mean expected entropy in each slice's ROI (nats).
    """

    samples: int
    probability: np.ndarray | None
    std: np.ndarray | None
    entropy: np.ndarray | None
    mutual_information: np.ndarray | None
    roi_pixels: np.ndarray
    slice_score: np.ndarray
    tumour_samples: np.ndarray | None
    seg_samples: np.ndarray | None = None
    views: tuple[str, ...] = ("identity",)
    dropout_samples: int = 0
    slice_aleatoric: np.ndarray | None = None

    @property
    def aleatoric(self) -> np.ndarray | None:
        """``(N, R, S, S)`` expected entropy ``mean_t H(p_t)`` (nats): ``entropy − MI``."""
        if self.entropy is None or self.mutual_information is None:
            return None
        return np.asarray(self.entropy - self.mutual_information, dtype=np.float32)

    @property
    def tumour_probability(self) -> np.ndarray | None:
        """``(N,)`` mean calibrated tumour probability over samples."""
        return None if self.tumour_samples is None else self.tumour_samples.mean(0)

    @property
    def tumour_std(self) -> np.ndarray | None:
        """``(N,)`` standard deviation of the tumour probability over samples."""
        return None if self.tumour_samples is None else self.tumour_samples.std(0)

    def segmentation_score(self) -> float:
        """ROI-pixel-weighted mean segmentation mutual information over slices (nats)."""
        total = int(self.roi_pixels.sum())
        return 0.0 if total == 0 else float((self.slice_score * self.roi_pixels).sum() / total)

    def segmentation_aleatoric(self) -> float | None:
        """ROI-pixel-weighted mean expected entropy over slices (nats); None without maps."""
        if self.slice_aleatoric is None:
            return None
        total = int(self.roi_pixels.sum())
        return 0.0 if total == 0 else float((self.slice_aleatoric * self.roi_pixels).sum() / total)

    def case_tumour_samples(self) -> np.ndarray | None:
        """``(T,)`` per-sample case probability: the max over slices."""
        if self.tumour_samples is None or self.tumour_samples.shape[1] == 0:
            return None
        return self.tumour_samples.max(axis=1)

    def case_score(self) -> float:
        """The per-case uncertainty score (module docstring, :data:`SCORE_DEFINITION`)."""
        case = self.case_tumour_samples()
        cls = 0.0 if case is None else float(binary_mutual_information(case))
        return max(self.segmentation_score(), cls)


class _DropoutOnly:
    """Context: model in eval mode, dropout layers in train mode iff ``sampling``; restores."""

    def __init__(self, model: MultiTaskNet, sampling: bool) -> None:
        self.model, self.sampling = model, sampling
        self.states: list[tuple[torch.nn.Module, bool]] = []

    def __enter__(self) -> None:
        self.states = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        for layer in self.model.dropout_layers:
            layer.train(self.sampling)

    def __exit__(self, *exc: object) -> None:
        for m, mode in self.states:
            m.training = mode


class _TorchSampler:
    """Trunk once, tail per sample, on a ``MultiTaskNet`` (dropout layers alone sampling)."""

    def __init__(self, model: MultiTaskNet, wanted: tuple[str, ...]) -> None:
        model.resolve_tasks(wanted)
        self.model, self.wanted = model, wanted
        self.size_multiple = model.size_multiple

    @contextmanager
    def sampling(self, on: bool, seed: int) -> Iterator[None]:
        with torch.random.fork_rng(devices=[]), _DropoutOnly(self.model, on):
            torch.manual_seed(seed)
            yield

    def trunk(self, x: torch.Tensor) -> Any:
        return self.model.trunk(x, self.wanted)

    def tail(self, state: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        out = self.model.tail(state, self.wanted)
        return out.seg_logits, out.tumour_logit


class _OnnxSampler:
    """The same on an exported run's graphs: the tail graph fed sampled dropout masks
    (inverted dropout, as the layers draw them in training mode) from a seeded generator."""

    def __init__(self, backend: OnnxBackend, wanted: tuple[str, ...]) -> None:
        missing = [t for t in wanted if t not in backend.tasks]
        if missing:
            raise ValueError(f"tasks: {missing} have no head in this model")
        self.backend, self.wanted = backend, wanted
        self.size_multiple = backend.size_multiple
        self.on, self.rng = False, np.random.default_rng(0)

    @contextmanager
    def sampling(self, on: bool, seed: int) -> Iterator[None]:
        self.on, self.rng = on, np.random.default_rng(seed)
        yield

    def trunk(self, x: torch.Tensor) -> Any:
        return self.backend.run_trunk(x.numpy())[0]

    def tail(self, state: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        n = state["readout"].shape[0]
        masks = [m.sample(n, self.rng) if self.on else m.ones(n) for m in self.backend.masks]
        out = self.backend.run_tail(state, masks)
        seg = out.get("seg_logits") if "segmentation" in self.wanted else None
        tum = out.get("tumour_logit") if "tumour" in self.wanted else None
        return (
            None if seg is None else torch.from_numpy(seg),
            None if tum is None else torch.from_numpy(tum),
        )


def _sampler(
    model: MultiTaskNet | OnnxBackend, wanted: tuple[str, ...]
) -> _TorchSampler | _OnnxSampler:
    if isinstance(model, OnnxBackend):
        return _OnnxSampler(model, wanted)
    return _TorchSampler(model, wanted)


@torch.no_grad()
def mc_dropout(
    model: MultiTaskNet | OnnxBackend,
    images: np.ndarray | torch.Tensor,
    *,
    samples: int = DEFAULT_SAMPLES,
    tasks: Iterable[str] | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    batch_size: int = 16,
    sampling: bool = True,
    keep_samples: bool = False,
    band: int = REVIEW_BAND_PX,
    views: Sequence[View] = (IDENTITY,),
) -> MCResult:
    """MC-dropout over preprocessed slices: trunk once per slice and view, tail ``samples``
    times; the distribution has ``len(views) × samples`` members (see :func:`tta`).

    Args:
        model: The network, or an exported run's ONNX Runtime backend (its tail graph takes
            the dropout masks as inputs; they come from a generator seeded with ``seed``,
            so the two backends draw different masks).
        images: ``(N, C, S, S)`` float preprocessed slices (padded internally).
        samples: Number of dropout samples ``T`` (>= 1).
        tasks: Tasks to sample (default: ``segmentation`` and ``tumour`` where built).
        seed: Seed of the dropout masks (the global RNG state is restored afterwards).
        temperature: Temperature of the tumour probability ``σ(z / T)``.
        batch_size: Images per trunk pass (slices × views); all ``T`` tail samples of a
            batch run in turn.
        sampling: False keeps dropout off (every sample equals the deterministic pass).
        keep_samples: Also return the per-sample segmentation probabilities (memory ``T×``).
        band: Pixels by which the sampled masks are dilated into the score's ROI.
        views: Test-time views of each slice (default: the slice alone).

    Returns:
        :class:`MCResult`.

    Raises:
        ValueError: ``samples < 1``, a non-positive temperature, a negative band, a bad
            shape or task.
    """
    if samples < 1:
        raise ValueError(f"samples: must be >= 1, got {samples}")
    if not temperature > 0:
        raise ValueError(f"temperature: must be positive, got {temperature}")
    if band < 0:
        raise ValueError(f"band: must be >= 0 pixels, got {band}")
    views = tuple(views)
    if not views:
        raise ValueError("views: at least one view (the identity) is needed")
    wanted = tuple(t for t in _DEFAULT_TASKS if t in model.tasks) if tasks is None else tuple(tasks)
    net = _sampler(model, wanted)
    x_all = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if x_all.ndim != 4:
        raise ValueError(f"images: expected (N, C, S, S), got {tuple(x_all.shape)}")
    n = int(x_all.shape[0])
    seg = "segmentation" in wanted
    acc: dict[str, list[torch.Tensor]] = {}
    tumour: list[torch.Tensor] = []
    kept: list[torch.Tensor] = []
    with net.sampling(sampling, seed):
        # All views of a slice share a trunk batch of at most ``batch_size`` images: a
        # bigger one is no faster on a CPU (measured 1.2-1.7x slower at 8 views x 4 slices).
        step = max(1, batch_size // len(views))
        for start in range(0, n, step):
            xb = x_all[start : start + step]
            b = int(xb.shape[0])
            xv = xb if views == (IDENTITY,) else torch.cat([v.forward(xb) for v in views])
            x, pad = pad_to_multiple(xv, net.size_multiple)
            trunk = net.trunk(x)
            stats = _Moments()
            t_chunk: list[torch.Tensor] = []
            k_chunk: list[torch.Tensor] = []
            for _ in range(samples):
                seg_logits, tumour_logit = net.tail(trunk)
                if tumour_logit is not None:
                    t = torch.sigmoid(tumour_logit.double().reshape(-1) / temperature)
                    t_chunk.extend(t.reshape(len(views), b))
                if seg and seg_logits is not None:
                    z_all = unpad(seg_logits, pad).float()
                    for k, view in enumerate(views):
                        p = stats.add(z_all[k * b : (k + 1) * b], view)
                        if keep_samples:
                            k_chunk.append(p.clone())
            if stats.s1 is not None:
                for key, value in stats.parts().items():
                    acc.setdefault(key, []).append(value)
            if t_chunk:
                tumour.append(torch.stack(t_chunk))
            if k_chunk:
                kept.append(torch.stack(k_chunk))
    members = samples * len(views)
    tumour_samples = torch.cat(tumour, dim=1).numpy() if tumour else None
    if not acc:
        zeros = np.zeros(n)
        return MCResult(
            members, None, None, None, None, zeros.astype(np.int64), zeros, tumour_samples,
            views=tuple(v.name for v in views), dropout_samples=samples if sampling else 0,
        )  # fmt: skip
    mean_d = torch.cat(acc["s1"]).double() / members
    var = (torch.cat(acc["s2"]).double() / members - mean_d * mean_d).clamp_min(0.0)
    mean = torch.cat(acc["shift"]).double() + mean_d
    entropy = binary_entropy(mean)
    mi = (entropy - torch.cat(acc["h"]).double() / members).clamp_min(0.0)
    union_all = torch.cat(acc["union"]).double()[:, None]
    roi = (
        F.max_pool2d(union_all, 2 * band + 1, stride=1, padding=band)[:, 0] > 0
        if band
        else union_all[:, 0] > 0
    )
    roi_pixels = roi.sum(dim=(1, 2))
    mi_roi = (mi.mean(dim=1) * roi).sum(dim=(1, 2))
    slice_score = torch.where(roi_pixels > 0, mi_roi / roi_pixels.clamp_min(1), 0.0)
    al_roi = ((entropy - mi).mean(dim=1) * roi).sum(dim=(1, 2))
    slice_al = torch.where(roi_pixels > 0, al_roi / roi_pixels.clamp_min(1), 0.0)
    return MCResult(
        samples=members,
        probability=mean.float().numpy(),
        std=var.sqrt().float().numpy(),
        entropy=entropy.float().numpy(),
        mutual_information=mi.float().numpy(),
        roi_pixels=roi_pixels.numpy().astype(np.int64),
        slice_score=slice_score.numpy().astype(np.float64),
        tumour_samples=tumour_samples,
        seg_samples=torch.cat(kept, dim=1).numpy() if kept else None,
        views=tuple(v.name for v in views),
        dropout_samples=samples if sampling else 0,
        slice_aleatoric=slice_al.numpy().astype(np.float64),
    )


class _Moments:
    """Running per-pixel sums over the members of one batch: moments about the first
    member (no fp32 cancellation), the summed entropy and the union of the masks."""

    def __init__(self) -> None:
        self.shift: torch.Tensor | None = None
        self.s1: torch.Tensor | None = None
        self.s2: torch.Tensor | None = None
        self.h: torch.Tensor | None = None
        self.union: torch.Tensor | None = None

    def add(self, z: torch.Tensor, view: View) -> torch.Tensor:
        """Add one member from a view's logits ``(B, R, S, S)``; returns its probability
        on the slice's grid."""
        if view.warps:  # resampled: the probability is mapped back, its entropy from it
            p = view.inverse(torch.sigmoid(z))
            h = binary_entropy(p)
            inside = (p >= 0.5).any(dim=1)
        else:  # flips are exact on logits: the stable entropy of a logit
            z = view.inverse(z)
            p = torch.sigmoid(z)
            h = F.softplus(z) - z * p  # binary entropy H(σ(z)) in nats
            inside = (z >= 0).any(dim=1)
        if self.shift is None:
            self.shift = p.clone()
            self.s1, self.s2 = torch.zeros_like(p), torch.zeros_like(p)
            self.h, self.union = torch.zeros_like(p), torch.zeros_like(p[:, 0])
        assert self.s1 is not None and self.s2 is not None
        assert self.h is not None and self.union is not None
        # fp32 and in place: per-member work must stay small next to the trunk.
        d = p - self.shift
        self.s1 += d
        self.s2.addcmul_(d, d)
        self.h += h
        torch.maximum(self.union, inside.float(), out=self.union)
        return p

    def parts(self) -> dict[str, torch.Tensor]:
        assert self.shift is not None and self.s1 is not None and self.s2 is not None
        assert self.h is not None and self.union is not None
        return {"shift": self.shift, "s1": self.s1, "s2": self.s2, "h": self.h, "union": self.union}


def tta(
    model: MultiTaskNet | OnnxBackend,
    images: np.ndarray | torch.Tensor,
    *,
    views: int | Sequence[View] = 8,
    mc_samples: int = 0,
    **kwargs: Any,
) -> MCResult:
    """Test-time augmentation, merged with MC dropout when ``mc_samples > 0``.

    Args:
        model: The network or an exported run's backend (see :func:`mc_dropout`).
        images: ``(N, C, S, S)`` preprocessed slices.
        views: Number of :data:`~tumorscope.inference.views.DEFAULT_VIEWS` (1–8), or the
            views themselves.
        mc_samples: Dropout samples per view (0: dropout off, one deterministic pass per
            view).
        **kwargs: Passed to :func:`mc_dropout` (``seed``, ``temperature``, ``tasks``...).

    Returns:
        :class:`MCResult` over ``views × max(1, mc_samples)`` members.
    """
    chosen = default_views(views) if isinstance(views, int) else tuple(views)
    if mc_samples < 0:
        raise ValueError(f"mc_samples: must be >= 0, got {mc_samples}")
    return mc_dropout(
        model, images, samples=max(1, mc_samples), sampling=mc_samples > 0, views=chosen,
        **kwargs,
    )  # fmt: skip


def measure_costs(
    model: MultiTaskNet, size: int, batch: int, samples: int = DEFAULT_SAMPLES, repeats: int = 3
) -> dict[str, Any]:
    """Wall-clock cost of MC dropout and Grad-CAM relative to one deterministic pass.

    One random batch ``(batch, in_channels, size, size)``. After a warm-up, each of
    ``repeats`` rounds times one pass, one tail, MC dropout and Grad-CAM back to back, so a
    round's ratios share the machine's load of the moment (it is shared); ratios are the
    median over rounds, seconds the minimum.

    Returns:
        ``image_size``, ``batch``, ``samples``, ``threads``, ``repeats``, seconds of
        ``one_pass_s`` (segmentation + tumour), ``mc_s`` (trunk once + ``samples`` tails),
        ``gradcam_s`` (tumour map, forward + backward), ``tail_fraction`` (one tail / one
        pass), ``mc_cost_ratio``, ``gradcam_cost_ratio``, and ``naive_mc_cost_ratio``
        (= ``samples`` full passes).
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, model.cfg.in_channels, size, size, generator=gen)
    tasks = tuple(t for t in _DEFAULT_TASKS if t in model.tasks)
    model.eval()

    def seconds(fn: Any) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    with torch.no_grad():
        trunk = model.trunk(x, tasks)
        steps: dict[str, Any] = {
            "one": lambda: model(x, tasks),
            "tail": lambda: model.tail(trunk, tasks),
        }
    steps["mc"] = lambda: mc_dropout(model, x, samples=samples, tasks=tasks, batch_size=batch)
    steps["cam"] = lambda: gradcam(model, x, target="tumour", batch_size=batch)
    rounds: list[dict[str, float]] = []
    for r in range(repeats + 1):
        with torch.no_grad():
            row = {k: seconds(steps[k]) for k in ("one", "tail")}
        row.update({k: seconds(steps[k]) for k in ("mc", "cam")})
        if r:  # round 0 is the warm-up
            rounds.append(row)

    def ratio(key: str) -> float:
        return float(np.median([row[key] / row["one"] for row in rounds]))

    def best(key: str) -> float:
        return min(row[key] for row in rounds)

    return {
        "image_size": size,
        "batch": batch,
        "samples": samples,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "one_pass_s": best("one"),
        "mc_s": best("mc"),
        "gradcam_s": best("cam"),
        "tail_fraction": ratio("tail"),
        "mc_cost_ratio": ratio("mc"),
        "gradcam_cost_ratio": ratio("cam"),
        "naive_mc_cost_ratio": float(samples),
    }
