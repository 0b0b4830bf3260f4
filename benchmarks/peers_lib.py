"""Helpers of ``benchmarks/peers.py``: step budgets, MONAI peers, radiomics + Cox, statistics.

Every peer is measured through the same path as tumorscope: MONAI networks are wrapped in
a :class:`PeerPredictor` (a ``Predictor`` whose forward pass is swapped), so their volumes
go through the same preprocessing, ``restore_volume`` and metrics
(:func:`tumorscope.evaluation.collect.collect_held_out`) in the input's own geometry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
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
from tumorscope.training.data import StageData

log = logging.getLogger(__name__)


def _demo_stages() -> tuple[dict[str, int], tuple[str, ...]]:
    """The demo recipe's step counts and its image stages (all but the survival refit),
    read from ``configs/demo.yaml``."""
    from tumorscope.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    steps = {s.name: s.max_steps for s in cfg.stages}
    return steps, tuple(s.name for s in cfg.stages if not s.cohort_refit)


# Every peer's budget is a fraction of these; single-task configs use the image stages' sum.
DEMO_STEPS, IMAGE_STAGES = _demo_stages()
SINGLE_STAGE = {"seg_only": "seg_only", "cls_only": "cls_only", "surv_only": "surv_only"}
# BraTS enhancing-tumour labels, as the layout owns them: 4 up to 2021, 3 from 2023.
BRATS_ET = sorted(get_layout("brats").labels.regions["ET"])


@dataclass(frozen=True)
class Budget:
    """Size of one benchmark run.

    Attributes:
        patients: Synthetic volume patients.
        kaggle: Kaggle-style 2D training images.
        kaggle_test: Images of the fixed 2D test set (own seed stream, ``strata.csv``).
        shape: Synthetic volume grid ``(X, Y, Z)`` in voxels.
        image_size: Model input side in pixels.
        step_scale: Fraction of the demo recipe's steps tumorscope's multi-task run gets;
            its whole training's CPU time is every other model's budget.
        seeds: Seeds of the segmentation/classification figures.
        folds: Cross-validation folds of the survival figures.
        repeats: Repeats of the survival cross-validation (each with its own split seed).
        n_boot: Bootstrap replicates of every CI.
        curve_patients: Test patients of the learning curve (the first, sorted).
        probe_steps: Steps of each peer's probe training (:func:`budget.plan_steps`).
    """

    patients: int
    kaggle: int
    kaggle_test: int
    shape: tuple[int, int, int]
    image_size: int
    step_scale: float
    seeds: int
    folds: int
    repeats: int
    n_boot: int
    curve_patients: int
    probe_steps: int

    def steps(self, stage: str) -> int:
        """Steps of a demo-recipe stage under this budget (at least 2)."""
        return max(2, round(DEMO_STEPS[stage] * self.step_scale))

    @property
    def image_steps(self) -> int:
        """Steps of tumorscope's image stages (the demo's stages but the survival refit)."""
        return sum(self.steps(s) for s in IMAGE_STAGES)

    @property
    def total_steps(self) -> int:
        """Steps of tumorscope's whole recipe, survival refit included."""
        return sum(self.steps(s) for s in DEMO_STEPS)


# Every model warms its LR up over this fraction of each stage's steps (``warmup_fraction``).
WARMUP_FRACTION = 0.05
# Learning-curve points, as fractions of each model's steps (1.0 is the finished model).
CURVE_FRACTIONS = (0.25, 0.5, 1.0)


def curve_steps(total: int) -> dict[float, int]:
    """Learning-curve fraction → run-wide snapshot step, for the points before the end."""
    return {f: max(1, round(f * total)) for f in CURVE_FRACTIONS if f < 1}


def recipe_overrides(
    config: str,
    budget: Budget,
    *,
    seed: int,
    fold: int,
    split_seed: int = 0,
    steps: int | None = None,
    snapshots: Sequence[int] = (),
) -> list[str]:
    """``--set`` overrides that put a config on the budget, seed, split and fold.

    Args:
        config: Config stem: ``demo``, ``seg_only``, ``cls_only`` or ``surv_only``.
        budget: The run's budget.
        seed: ``runtime.seed`` (initialisation and batches).
        fold: ``data.fold`` (validation fold).
        split_seed: ``data.split_seed``: the test set and folds (fixed across seeds).
        steps: Steps of a single-task config's training stage (its plan); default the
            demo's image steps.
        snapshots: ``runtime.snapshot_steps`` (learning curve).
    """
    out = [
        f"runtime.seed={seed}",
        f"data.fold={fold}",
        f"data.n_folds={budget.folds}",
        f"data.split_seed={split_seed}",
        f"data.image_size={budget.image_size}",
    ]
    if snapshots:
        out.append(f"runtime.snapshot_steps=[{','.join(str(s) for s in snapshots)}]")
    if config == "demo":
        stages = {s: budget.steps(s) for s in DEMO_STEPS}
    else:
        stages = {SINGLE_STAGE[config]: steps if steps is not None else budget.image_steps}
        if config == "surv_only":
            stages["surv_head"] = budget.steps("surv_head")
    for name, n in stages.items():
        # One validation, at the stage's end: the last weights are kept, as for the MONAI
        # peers (no checkpoint selection on validation data for anyone).
        out += [f"stages.{name}.max_steps={n}", f"stages.{name}.eval_every={n}"]
        if name != "surv_head":  # the full-batch refit has no LR schedule to warm up
            out.append(f"stages.{name}.warmup_fraction={WARMUP_FRACTION}")
    return out


# --------------------------------------------------------------------------- MONAI peers


class PeerPredictor(Predictor):
    """A ``Predictor`` whose slice forward pass comes from other networks.

    Used for the MONAI peers (``seg_net`` / ``cls_net`` replace the tumorscope network) and
    for tumorscope's single-task runs (``keep_base``: the run's own network, with the
    outputs it lacks filled in). Every segmentation peer gets the same gate and
    post-processing as tumorscope: ``gate_threshold`` is the multi-task run's, and a peer
    without a tumour head gates on its largest segmentation probability.

    Args:
        base: Predictor giving preprocessing, calibration and (with ``keep_base``) network.
        gate_threshold: The conditional-mask gate of every peer (tumorscope's).
        seg_net: ``(B, C, S, S) → (B, R, S, S)`` segmentation logits, or None.
        cls_net: ``(B, C, S, S) → (B, 1)`` tumour logit, or None.
        keep_base: Run the base network too (its outputs first, peers' override).
    """

    def __init__(
        self,
        base: Predictor,
        *,
        gate_threshold: float,
        seg_net: nn.Module | None = None,
        cls_net: nn.Module | None = None,
        keep_base: bool = False,
    ) -> None:
        calibration = {**base.calibration, "gate_threshold": float(gate_threshold)}
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
    data: StageData,
    stage: StageConfig,
    *,
    seed: int,
    target: str,
    precision: str,
    snapshots: Mapping[int, Callable[[nn.Module], None]] | None = None,
    on_step: Callable[[], None] | None = None,
) -> float:
    """Train a MONAI network for ``stage.max_steps`` steps on tumorscope's own batches,
    then validate it once (its validation pass counts in its budget, as tumorscope's do).

    Same optimiser (AdamW), LR schedule (warm-up, cosine), gradient clipping and autocast
    as tumorscope's stages; losses in fp32. Segmentation uses MONAI ``DiceCELoss``
    (sigmoid) on slices with a mask; classification BCE with the run's positive-class
    weight on labelled slices.

    Args:
        net: Network returning ``(B, R, S, S)`` (segmentation) or ``(B, 1)`` logits.
        data: The stage data of the matching single-task config.
        stage: Stage giving steps, LR, warm-up, weight decay and clipping.
        seed: Seed of the batch order.
        target: ``segmentation`` or ``tumour``.
        precision: ``bf16`` or ``fp32``.
        snapshots: Step → called with the network after that step (learning curve).
        on_step: Called after every step (the step timer of :func:`budget.plan_steps`).

    Returns:
        The validation loss of the last weights.
    """
    from monai.losses import DiceCELoss

    from tumorscope.training.loop import autocast
    from tumorscope.training.stages import make_scheduler

    pos_weight = data.tumour_pos_weight() if target == "tumour" else 1.0
    dice_ce = DiceCELoss(sigmoid=True)
    bce = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))

    def loss_of(y: torch.Tensor, b: Batch) -> torch.Tensor | None:
        keep = b.has_mask if target == "segmentation" else b.has_tumour
        if not bool(keep.any()):
            return None
        if target == "segmentation":
            return dice_ce(y[keep], b.mask[keep])
        return bce(y[keep].reshape(-1), b.tumour[keep])

    opt = torch.optim.AdamW(net.parameters(), lr=stage.lr, weight_decay=stage.weight_decay)
    sched = make_scheduler(opt, stage)
    batches = data.train_batches(stage, seed=seed)
    for step in range(1, stage.max_steps + 1):
        b = next(batches)
        net.train()
        opt.zero_grad(set_to_none=True)
        with autocast(precision):
            y = net(b.image)
        loss = loss_of(y.float(), b)
        if loss is not None:
            loss.backward()
            if stage.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), stage.grad_clip)
            opt.step()
        sched.step()
        if snapshots and step in snapshots:
            snapshots[step](net)
        if on_step is not None:
            on_step()
    net.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for b in data.val_batches(stage):
            with autocast(precision):
                y = net(b.image)
            loss = loss_of(y.float(), b)
            if loss is not None:
                total, count = total + float(loss), count + 1
    return total / count if count else float("nan")


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


# --------------------------------------------------------------------------- statistics


def per_seed_mean(metric: Callable[..., float]) -> Callable[..., float]:
    """Lift ``metric(score, *targets)`` to the mean over seeds; the seed is the last array."""

    def lifted(score: np.ndarray, *rest: np.ndarray) -> float:
        *targets, seed = rest
        values = []
        for s in np.unique(seed):
            m = seed == s
            values.append(float(metric(score[m], *(t[m] for t in targets))))
        if not values or np.isnan(values).all():  # e.g. a resample with one class only
            return float("nan")
        return float(np.nanmean(values))

    return lifted


def compare(
    metric: Callable[..., float],
    a: np.ndarray,
    b: np.ndarray,
    shared: Sequence[np.ndarray],
    groups: np.ndarray,
    *,
    n_boot: int,
    margin: float,
    lower_is_better: bool = False,
) -> dict[str, Any]:
    """Paired comparison of model A (tumorscope) with model B (a peer) on the same rows.

    Returns:
        ``{"a", "b", "ratio", "ratio_ci95", "delta", "delta_ci95", "p", "a_better",
        "margin", "verdict", "non_inferior"}`` where ``delta = metric(a) − metric(b)`` with
        a patient-level paired bootstrap CI, ``ratio = metric(a) / metric(b)`` with its
        bootstrap CI, ``verdict`` from the delta's CI (:func:`budget.verdict`) and
        ``non_inferior`` true for a ``better`` or ``non_inferior`` verdict.
    """
    from budget import verdict

    from tumorscope.metrics.stats import bootstrap_ci, paired_bootstrap

    pb = paired_bootstrap(metric, a, b, *shared, groups=groups, n_boot=n_boot)

    def ratio(pa: np.ndarray, pbb: np.ndarray, *rest: np.ndarray) -> float:
        den = float(metric(pbb, *rest))
        return float(metric(pa, *rest)) / den if den else float("nan")

    rc = bootstrap_ci([a, b, *shared], groups=groups, statistic=ratio, n_boot=n_boot)
    va, vb = float(metric(a, *shared)), float(metric(b, *shared))
    ci = [round(pb.lo, 4), round(pb.hi, 4)]
    v = verdict(ci, margin, lower_is_better=lower_is_better)
    return {
        "a": round(va, 4),
        "b": round(vb, 4),
        "ratio": round(rc.estimate, 4),
        "ratio_ci95": [round(rc.lo, 4), round(rc.hi, 4)],
        "delta": round(pb.delta, 4),
        "delta_ci95": ci,
        "p": round(pb.p, 4),
        "a_better": bool(va <= vb if lower_is_better else va >= vb),
        "margin": margin,
        "verdict": v,
        "non_inferior": v in ("better", "non_inferior"),
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
    """The peer, comparison, learning-curve and 2D-strata tables as Markdown (the survival
    table for a ``--survival-only`` run)."""
    if result.get("survival_only"):
        return survival_markdown(result)
    cols = [
        ("dice", "3D Dice"),
        ("dice_ungated", "Dice ungated"),
        ("hd95_mm", "HD95 mm"),
        ("slice_auc", "slice AUC"),
        ("kaggle_auc", "2D AUC"),
        ("steps", "steps"),
        ("train_cpu_seconds", "train CPU s"),
        ("budget_ratio", "of budget"),
        ("infer_ms_per_slice", "CPU ms/slice"),
    ]
    b, d = result["budget"], result["data"]
    lines = [
        f"Peers on `{d['preset']}` brain MRI (FLAIR), {d['patients']} patients "
        f"{tuple(d['shape'])} + {d['kaggle_images']} Kaggle-style training images, "
        f"{d['image_size']}² slices, {b['precision']}, on {result['cpu']['model']} "
        f"({result['cpu']['flags']}). Budget: {b['cpu_seconds']} CPU s per model, "
        f"tumorscope's whole training (stages {b['tumorscope_stages']}); every other "
        "model's steps are planned from two probe trainings on the same CPU timer. "
        f"Segmentation and classification over {b['seeds']} seed(s) on one fixed test split "
        f"({d['test_patients']} patients) and a fixed 2D test set of "
        f"{d['kaggle_test_images']} images (survival: `peers.py --survival-only`). 95% CIs: "
        "patient-level bootstrap. tumorscope is one model; the peers are three."
        + (
            f" tumorscope overrides: {' '.join(result['tumorscope_overrides'])}."
            if result.get("tumorscope_overrides")
            else ""
        ),
        "",
        "| peer | " + " | ".join(c[1] for c in cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for p in result["peers"].values():
        if p.get("dice") is None and p.get("slice_auc") is None:
            continue  # a survival peer: not in this run
        lines.append(
            f"| {p['label']} | " + " | ".join(table_cell(p.get(k)) for k, _ in cols) + " |"
        )
    return "\n".join(lines + comparison_lines(result) + image_extras(result))


def survival_markdown(result: dict[str, Any]) -> str:
    """The survival peers' table (``--survival-only``)."""
    b, d = result["budget"], result["data"]
    horizons = result.get("survival_horizons_days") or []
    cols = [("c_index_harrell", "Harrell C"), ("c_index_uno", "Uno C"), ("ibs", "IBS")]
    ratio = result["goals"].get("c_index_ratio_to_observable_ceiling") or {}
    lines = [
        f"Survival peers on `{d['preset']}` {d['profile']} ({', '.join(d['channels'])}), "
        f"{result['survival_patients']} "
        f"patients {tuple(d['shape'])}, every one out of fold over {b['survival_folds']} "
        f"folds × {b['survival_repeats']} repeats (figures: the mean over repeats; 95% CIs: "
        f"patient-level bootstrap), on {result['cpu']['model']} ({result['cpu']['flags']}). "
        f"tumorscope and BasicUNet are trained per fold of the first repeat for "
        f"{b['cpu_seconds']} CPU s each (every patient's predicted masks come from models "
        "that did not see it; later repeats refit the Cox models only, and the survival "
        "head alone is scored on the first repeat); "
        "every Cox model is fitted on the training folds' ground-truth-mask features. "
        f"IBS over {len(result.get('survival_grid_days') or [])} times, td-AUC at "
        f"{', '.join(f'{h:.0f}' for h in horizons)} days.",
        "",
        "| peer | "
        + " | ".join(c[1] for c in cols)
        + "".join(f" | td-AUC {h:.0f} d" for h in horizons)
        + " |",
        "|---" * (len(cols) + len(horizons) + 1) + "|",
    ]
    for p in result["peers"].values():
        if p.get("c_index_harrell") is None:
            continue
        td = p.get("td_auc") or {}
        lines.append(
            f"| {p['label']} | "
            + " | ".join(table_cell(p.get(k)) for k, _ in cols)
            + "".join(f" | {table_cell(v)}" for v in td.values())
            + " |"
        )
    if ratio:
        lines += [
            "",
            f"tumorscope / observable ceiling (Harrell C): {ratio['value']:.3f} "
            f"[{ratio['ci95'][0]:.3f}, {ratio['ci95'][1]:.3f}]",
        ]
    return "\n".join(lines + comparison_lines(result) + ["\n"])


def comparison_lines(result: dict[str, Any]) -> list[str]:
    """The paired comparisons table."""
    lines = [
        "",
        "| tumorscope vs | metric | tumorscope | peer | Δ [95% CI] | verdict (margin) |",
        "|---|---|---|---|---|---|",
    ]
    for c in result["comparisons"]:
        lines.append(
            f"| {c['peer']} | {c['metric']} | {c['a']:.3f} | {c['b']:.3f} | "
            f"{c['delta']:+.3f} [{c['delta_ci95'][0]:+.3f}, {c['delta_ci95'][1]:+.3f}] | "
            f"{c['verdict']} ({c['margin']:g}) |"
        )
    lines += ["", "Goals: " + ", ".join(f"{k}={v}" for k, v in result["goals"].items())]
    return lines


def image_extras(result: dict[str, Any]) -> list[str]:
    """The learning curve and the 2D strata tables."""
    d = result["data"]
    lines: list[str] = []
    curve = result.get("curve") or []
    if curve:
        names = list(curve[0]["peers"])
        heads = [(n, m) for n in names for m in curve[0]["peers"][n]]
        lines += [
            "",
            "Learning curve, seed 0 (fraction of each model's steps; "
            f"{len(d['curve_patients'])} test patients, the 2D test set):",
            "",
            "| fraction | " + " | ".join(f"{n} {m}" for n, m in heads) + " |",
            "|---" * (len(heads) + 1) + "|",
        ]
        for row in curve:
            cells = [row["peers"][n].get(m) for n, m in heads]
            lines.append(
                f"| {row['fraction']:g} | "
                + " | ".join("–" if v is None else f"{v:.3f}" for v in cells)
                + " |"
            )
    strata = {
        n: p["kaggle_auc_by_stratum"]
        for n, p in result["peers"].items()
        if "kaggle_auc_by_stratum" in p
    }
    if strata:
        names = list(strata)
        lines += [
            "",
            "2D test set AUC per stratum (`strata.csv`):",
            "",
            "| stratum | " + " | ".join(names) + " |",
            "|---" * (len(names) + 1) + "|",
        ]
        first = strata[names[0]]
        for col, values in first.items():
            for v in values:
                cells = [table_cell(strata[n][col].get(v)) for n in names]
                n_img = first[col][v]["n"]
                lines.append(f"| {col}={v} (n={n_img}) | " + " | ".join(cells) + " |")
    return [*lines, ""]
