"""Helpers of ``benchmarks/peers.py``: step budgets, MONAI peers, radiomics + Cox, statistics.

Every peer is measured through the same path as tumorscope: MONAI networks are wrapped in
a :class:`PeerPredictor` (a ``Predictor`` whose forward pass is swapped), so their volumes
go through the same preprocessing, ``restore_volume`` and metrics
(:func:`tumorscope.evaluation.collect.collect_held_out`) in the input's own geometry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tumorscope.config import StageConfig
from tumorscope.data.batch import Batch
from tumorscope.data.layouts import get_layout
from tumorscope.inference.predictor import Predictor

log = logging.getLogger(__name__)


def _demo_steps() -> dict[str, int]:
    """The demo recipe's step counts, read from ``configs/demo.yaml``."""
    from tumorscope.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    return {s.name: s.max_steps for s in cfg.stages}


# Every peer's budget is a fraction of these; single-task configs use the image stages' sum.
DEMO_STEPS = _demo_steps()
IMAGE_STAGES = ("seg_warmup", "cls_head", "joint")
SINGLE_STAGE = {"seg_only": "seg_only", "cls_only": "cls_only", "surv_only": "surv_only"}
# BraTS enhancing-tumour labels, as the layout owns them: 4 up to 2021, 3 from 2023.
BRATS_ET = sorted(get_layout("brats").labels.regions["ET"])


@dataclass(frozen=True)
class Budget:
    """Size of one benchmark run.

    Attributes:
        patients: Synthetic volume patients.
        kaggle: Kaggle-style 2D images.
        shape: Synthetic volume grid ``(X, Y, Z)`` in voxels.
        image_size: Model input side in pixels.
        step_scale: Fraction of the demo recipe's steps every peer gets.
        seeds: Seeds of the segmentation/classification figures.
        folds: Cross-validation folds of the survival figures (seed 0).
        n_boot: Bootstrap replicates of every CI.
    """

    patients: int
    kaggle: int
    shape: tuple[int, int, int]
    image_size: int
    step_scale: float
    seeds: int
    folds: int
    n_boot: int

    def steps(self, stage: str) -> int:
        """Steps of a demo-recipe stage under this budget (at least 2)."""
        return max(2, round(DEMO_STEPS[stage] * self.step_scale))

    @property
    def image_steps(self) -> int:
        """Steps of every image model: the demo's seg_warmup + cls_head + joint."""
        return sum(self.steps(s) for s in IMAGE_STAGES)


def recipe_overrides(config: str, budget: Budget, *, seed: int, fold: int) -> list[str]:
    """``--set`` overrides that put a config on the budget, seed and fold.

    Args:
        config: Config stem: ``demo``, ``seg_only``, ``cls_only`` or ``surv_only``.
        budget: The run's budget.
        seed: ``runtime.seed``.
        fold: ``data.fold`` (validation fold).
    """
    out = [
        f"runtime.seed={seed}",
        f"data.fold={fold}",
        f"data.n_folds={budget.folds}",
        f"data.image_size={budget.image_size}",
    ]
    if config == "demo":
        stages = {s: budget.steps(s) for s in DEMO_STEPS}
    else:
        stages = {SINGLE_STAGE[config]: budget.image_steps}
        if config == "surv_only":
            stages["surv_head"] = budget.steps("surv_head")
    for name, steps in stages.items():
        # One validation, at the stage's end: the last weights are kept, as for the MONAI
        # peers (no checkpoint selection on validation data for anyone).
        out += [f"stages.{name}.max_steps={steps}", f"stages.{name}.eval_every={steps}"]
    return out


# --------------------------------------------------------------------------- MONAI peers


class PeerPredictor(Predictor):
    """A ``Predictor`` whose slice forward pass comes from other networks.

    Used for the MONAI peers (``seg_net`` / ``cls_net`` replace the tumorscope network) and
    for tumorscope's single-task runs (``keep_base``: the run's own network, with the
    outputs it lacks filled in). The gate is off (threshold 0): peers without a tumour head
    return their mask as is.

    Args:
        base: Predictor giving preprocessing, calibration and (with ``keep_base``) network.
        seg_net: ``(B, C, S, S) → (B, R, S, S)`` segmentation logits, or None.
        cls_net: ``(B, C, S, S) → (B, 1)`` tumour logit, or None.
        keep_base: Run the base network too (its outputs first, peers' override).
    """

    def __init__(
        self,
        base: Predictor,
        *,
        seg_net: nn.Module | None = None,
        cls_net: nn.Module | None = None,
        keep_base: bool = False,
    ) -> None:
        calibration = {**base.calibration, "gate_threshold": 0.0}
        super().__init__(
            base.model,
            base.cfg,
            {**base.manifest, "calibration": calibration},
            batch_size=base.batch_size,
        )
        self.seg_net = None if seg_net is None else seg_net.eval()
        self.cls_net = None if cls_net is None else cls_net.eval()
        self.keep_base = keep_base

    @torch.no_grad()
    def forward_slices(
        self, images: np.ndarray, tasks: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """As :meth:`Predictor.forward_slices`; a missing tumour logit is the max seg logit (or 0)."""
        out = super().forward_slices(images, tasks) if self.keep_base else {}
        seg: list[np.ndarray] = []
        cls: list[np.ndarray] = []
        for start in range(0, images.shape[0], self.batch_size):
            x = torch.from_numpy(
                np.ascontiguousarray(images[start : start + self.batch_size], dtype=np.float32)
            )
            if self.seg_net is not None:
                seg.append(torch.sigmoid(self.seg_net(x)).numpy())
            if self.cls_net is not None:
                cls.append(self.cls_net(x).reshape(-1).numpy())
        if seg:
            out["seg_prob"] = np.concatenate(seg)
        if cls:
            out["tumour_logit"] = np.concatenate(cls)
        if "tumour_logit" not in out:
            n = images.shape[0]
            if "seg_prob" in out and n:
                p = np.clip(out["seg_prob"].reshape(n, -1).max(axis=1), 1e-6, 1 - 1e-6)
                out["tumour_logit"] = np.log(p / (1 - p)).astype(np.float32)
            else:
                out["tumour_logit"] = np.zeros(n, dtype=np.float32)
        return out


def train_monai(
    net: nn.Module,
    batches: Iterator[Batch],
    stage: StageConfig,
    *,
    target: str,
    precision: str,
    pos_weight: float = 1.0,
) -> float:
    """Train a MONAI network for ``stage.max_steps`` steps on tumorscope's own batches.

    Same optimiser (AdamW), LR schedule, gradient clipping and autocast as tumorscope's
    stages; losses in fp32. Segmentation uses MONAI ``DiceCELoss`` (sigmoid) on slices with
    a mask; classification BCE with the run's positive-class weight on labelled slices.

    Args:
        net: Network returning ``(B, R, S, S)`` (segmentation) or ``(B, 1)`` logits.
        batches: ``StageData.train_batches`` of the matching single-task stage.
        stage: Stage giving steps, LR, weight decay and clipping.
        target: ``segmentation`` or ``tumour``.
        precision: ``bf16`` or ``fp32``.
        pos_weight: BCE positive weight (classification).

    Returns:
        Training wall time in seconds.
    """
    from monai.losses import DiceCELoss

    from tumorscope.training.loop import autocast
    from tumorscope.training.stages import make_scheduler

    dice_ce = DiceCELoss(sigmoid=True)
    bce = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))
    opt = torch.optim.AdamW(net.parameters(), lr=stage.lr, weight_decay=stage.weight_decay)
    sched = make_scheduler(opt, stage)
    t0 = time.perf_counter()
    for _ in range(stage.max_steps):
        b = next(batches)
        net.train()
        opt.zero_grad(set_to_none=True)
        with autocast(precision):
            y = net(b.image)
        y = y.float()
        if target == "segmentation":
            keep = b.has_mask
            loss = dice_ce(y[keep], b.mask[keep])
        else:
            keep = b.has_tumour
            loss = bce(y[keep].reshape(-1), b.tumour[keep])
        loss.backward()
        if stage.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), stage.grad_clip)
        opt.step()
        sched.step()
    return time.perf_counter() - t0


def ms_per_slice(
    forward: Callable[[np.ndarray], Any], images: np.ndarray, repeats: int = 3
) -> float:
    """Best-of-``repeats`` CPU time per slice in ms for ``forward(images (N, C, S, S))``.

    Process CPU time (all threads), not wall time: on a shared machine wall time measures
    the neighbours; CPU time is what the inference costs.
    """
    forward(images[:2])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        forward(images)
        best = min(best, time.process_time() - t0)
    return 1000.0 * best / max(1, images.shape[0])


# --------------------------------------------------------------------------- radiomics + Cox


def radiomics_features(seg: np.ndarray, spacing: Sequence[float]) -> tuple[float, float]:
    """Tumour volume and enhancing fraction from a BraTS label volume.

    Args:
        seg: ``(X, Y, Z)`` labels (0 background, 1 NCR, 2 ED, 4 or 3 ET).
        spacing: Voxel size in mm per axis.

    Returns:
        ``(volume_ml, enhancing_fraction)``: whole-tumour volume in mL and ET voxels over
        tumour voxels (0 without tumour).
    """
    tumour = int(np.count_nonzero(seg))
    voxel_ml = float(np.prod([float(s) for s in spacing[:3]])) / 1000.0
    enhancing = int(np.count_nonzero(np.isin(seg, BRATS_ET)))
    return tumour * voxel_ml, (enhancing / tumour if tumour else 0.0)


def radiomics_table(data: Sequence[Path]) -> dict[str, dict[str, float]]:
    """Per BraTS patient with an outcome: ``volume_ml``, ``enhancing_fraction``, ``age``,
    ``time`` (days), ``event`` (0/1), ``true_risk`` (NaN if absent), from ground truth."""
    from tumorscope.data.layout import discover, load_case

    index = discover(list(data))
    rows: dict[str, dict[str, float]] = {}
    for case in index.cases:
        outcome = index.outcomes.get(case.patient_id)
        if case.mask is None or outcome is None:
            continue
        loaded = load_case(case, (next(iter(case.channels)),))
        if loaded.mask is None:
            continue
        vol, enh = radiomics_features(loaded.mask, loaded.meta.spacing)
        age = outcome.clinical.get("age", outcome.clinical.get("Age"))
        rows[case.patient_id] = {
            "volume_ml": vol,
            "enhancing_fraction": enh,
            "age": float("nan") if age is None else float(age),
            "time": float(outcome.time),
            "event": float(outcome.event),
            "true_risk": float(index.true_risk.get(case.patient_id, np.nan)),
        }
    return rows


def cox_risk(
    table: dict[str, dict[str, float]], train: Sequence[str], predict: Sequence[str]
) -> dict[str, float]:
    """Fit lifelines ``CoxPHFitter`` on ``train`` patients; log partial hazard of ``predict``.

    Covariates: log tumour volume, enhancing fraction, age (missing age: training median);
    a small ridge penalty keeps the fit finite on tiny cohorts.
    """
    import pandas as pd
    from lifelines import CoxPHFitter

    def frame(ids: Sequence[str]) -> pd.DataFrame:
        df = pd.DataFrame([table[p] for p in ids], index=list(ids))
        df["log_volume"] = np.log1p(df["volume_ml"])
        return df[["log_volume", "enhancing_fraction", "age", "time", "event"]]

    tr, te = frame([p for p in train if p in table]), frame([p for p in predict if p in table])
    median_age = float(tr["age"].median()) if tr["age"].notna().any() else 0.0
    tr["age"], te["age"] = tr["age"].fillna(median_age), te["age"].fillna(median_age)
    cph = CoxPHFitter(penalizer=0.01)
    cph.fit(tr, duration_col="time", event_col="event")
    risk = cph.predict_log_partial_hazard(te.drop(columns=["time", "event"]))
    return {str(p): float(v) for p, v in risk.items()}


# --------------------------------------------------------------------------- statistics


def per_seed_mean(metric: Callable[..., float]) -> Callable[..., float]:
    """Lift ``metric(score, *targets)`` to the mean over seeds; the seed is the last array."""

    def lifted(score: np.ndarray, *rest: np.ndarray) -> float:
        *targets, seed = rest
        values = []
        for s in np.unique(seed):
            m = seed == s
            values.append(float(metric(score[m], *(t[m] for t in targets))))
        return float(np.nanmean(values)) if values else float("nan")

    return lifted


def compare(
    metric: Callable[..., float],
    a: np.ndarray,
    b: np.ndarray,
    shared: Sequence[np.ndarray],
    groups: np.ndarray,
    *,
    n_boot: int,
    lower_is_better: bool = False,
) -> dict[str, Any]:
    """Paired comparison of model A (tumorscope) with model B (a peer) on the same rows.

    Returns:
        ``{"a", "b", "ratio", "ratio_ci95", "delta", "delta_ci95", "p", "a_better"}`` where
        ``delta = metric(a) − metric(b)`` with a patient-level paired bootstrap CI and
        ``ratio = metric(a) / metric(b)`` with its bootstrap CI.
    """
    from tumorscope.metrics.stats import bootstrap_ci, paired_bootstrap

    pb = paired_bootstrap(metric, a, b, *shared, groups=groups, n_boot=n_boot)

    def ratio(pa: np.ndarray, pbb: np.ndarray, *rest: np.ndarray) -> float:
        den = float(metric(pbb, *rest))
        return float(metric(pa, *rest)) / den if den else float("nan")

    rc = bootstrap_ci([a, b, *shared], groups=groups, statistic=ratio, n_boot=n_boot)
    va, vb = float(metric(a, *shared)), float(metric(b, *shared))
    return {
        "a": round(va, 4),
        "b": round(vb, 4),
        "ratio": round(rc.estimate, 4),
        "ratio_ci95": [round(rc.lo, 4), round(rc.hi, 4)],
        "delta": round(pb.delta, 4),
        "delta_ci95": [round(pb.lo, 4), round(pb.hi, 4)],
        "p": round(pb.p, 4),
        "a_better": bool(va <= vb if lower_is_better else va >= vb),
    }


# --------------------------------------------------------------------------- report


def figure_ci(
    metric: Any, arrays: list[np.ndarray], groups: np.ndarray, n_boot: int
) -> dict[str, Any]:
    """Point estimate, patient-level bootstrap CI and patient count of ``metric(*arrays)``."""
    from tumorscope.metrics.stats import bootstrap_ci

    if arrays[0].size == 0:
        return {"value": None, "ci95": None, "n": 0}
    ci = bootstrap_ci(arrays, groups=groups, statistic=metric, n_boot=n_boot)
    return {
        "value": round(ci.estimate, 4),
        "ci95": [round(ci.lo, 4), round(ci.hi, 4)],
        "n": int(np.unique(groups).size),
    }


def table_cell(f: Any) -> str:
    if isinstance(f, dict):
        if f.get("value") is None:
            return "–"
        lo, hi = f["ci95"]
        return f"{f['value']:.3f} [{lo:.3f}, {hi:.3f}]"
    return "–" if f is None else str(f)


def markdown(result: dict[str, Any]) -> str:
    """The peer table and the comparison table as Markdown."""
    cols = [
        ("dice", "3D Dice"),
        ("hd95_mm", "HD95 mm"),
        ("slice_auc", "slice AUC"),
        ("kaggle_auc", "Kaggle AUC"),
        ("c_index_harrell", "Harrell C (OOF)"),
        ("c_index_uno", "Uno C (OOF)"),
        ("train_seconds", "train s"),
        ("train_cpu_seconds", "train CPU s"),
        ("infer_ms_per_slice", "CPU ms/slice"),
    ]
    b, d = result["budget"], result["data"]
    lines = [
        f"Peers on `{d['preset']}` brain MRI (FLAIR), {d['patients']} patients "
        f"{tuple(d['shape'])} + {d['kaggle_images']} Kaggle-style images, {d['image_size']}² "
        f"slices; {b['steps_per_image_model']} optimisation steps per image model "
        f"(tumorscope stages {b['tumorscope_stages']}), {b['precision']}; segmentation and "
        f"classification over {b['seeds']} seed(s) on each seed's test split, survival "
        f"out-of-fold over {b['survival_folds']} folds ({result['survival_patients']} patients). "
        "95% CIs: patient-level bootstrap. tumorscope is one model; the peers are three."
        + (
            f" tumorscope overrides: {' '.join(result['tumorscope_overrides'])}."
            if result.get("tumorscope_overrides")
            else ""
        )
        + (" Survival only." if result.get("survival_only") else ""),
        "",
        "| peer | " + " | ".join(c[1] for c in cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for p in result["peers"].values():
        lines.append(
            f"| {p['label']} | " + " | ".join(table_cell(p.get(k)) for k, _ in cols) + " |"
        )
    lines += [
        "",
        "| tumorscope vs | metric | tumorscope | peer | ratio [95% CI] | Δ [95% CI] | p |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in result["comparisons"]:
        ni = "" if "non_inferior" not in c else f" (non-inferior: {c['non_inferior']})"
        lines.append(
            f"| {c['peer']} | {c['metric']} | {c['a']:.3f} | {c['b']:.3f} | "
            f"{c['ratio']:.3f} [{c['ratio_ci95'][0]:.3f}, {c['ratio_ci95'][1]:.3f}] | "
            f"{c['delta']:+.3f} [{c['delta_ci95'][0]:+.3f}, {c['delta_ci95'][1]:+.3f}]{ni} | {c['p']:.3f} |"
        )
    lines += ["", "Goals: " + ", ".join(f"{k}={v}" for k, v in result["goals"].items())]
    return "\n".join(lines) + "\n"
