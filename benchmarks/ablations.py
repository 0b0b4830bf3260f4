"""Ablations of tumorscope's multi-task recipe: each change on/off, in one run.

Prints one JSON object on its last stdout line and writes ``bench-out/ablations.json`` and
``bench-out/ablations.md``. ``--quick`` runs a small version. Not part of ``make bench``
(its own target, ``make bench-ablations``).

    python benchmarks/ablations.py [--quick] [--seeds N] [--only a,b] [--out bench-out] [--work DIR]

Data, budget and statistics are the peer benchmark's (``benchmarks/peers.py``: the same
synthetic ``standard`` cohort, the same fixed test split and 2D test set, the demo recipe
at ``step_scale`` of its steps). Every variant trains the demo config with one change, for
the same steps, on ``ABLATION_SEEDS`` seeds, and is compared with the full recipe on the
same test patients (patient-level paired bootstrap of the difference): 3D Dice (gated and
ungated), HD95, slice AUC and the 2D test set's AUC, with each variant's training CPU
seconds on the benchmark's one CPU timer. Variants:

- ``no_deep_supervision``, ``bottleneck_readout`` (the normalised bottleneck's average
  alone), ``no_seg_evidence``, ``batch_dice``, ``no_dropout``, ``no_image_share``
  (source-balanced batches), ``staged_schedule`` (``configs/staged.yaml``, its stages
  scaled to the same total steps);
- widths ``base_channels`` 8, 24 and 32 (the default is 16) at the same steps; with the
  learning-curve snapshots of seed 0 (25 %, 50 %) they give Dice against CPU seconds;
- ``batch_16``, ``batch_8``: batches four and two times the recipe's 4 for a quarter and
  half the steps (the same slices seen; 16 was the recipe before);
  ``evidence_detached``: the evidence read with a stop-gradient, so the slice loss does
  not reach the segmentation map; ``tumour_weight_1``: the slice loss at the
  segmentation's weight (the recipe's is 0.1);
  ``segmentation_task_only``: the same network trained on the segmentation loss alone
  (its tumour head untrained: only its ungated Dice means anything);
- ``no_postprocessing``: the full recipe's own runs predicted without the slice gate and
  the small-component removal (no retraining).

``--only a,b`` trains those variants beside ``full`` (which every comparison needs).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import cpu  # noqa: E402
from peers import FULL, QUICK, Bench  # noqa: E402
from peers_lib import (  # noqa: E402
    IMAGE_STAGES,
    WARMUP_FRACTION,
    Budget,
    compare,
    curve_steps,
    figure_ci,
    per_seed_mean,
    recipe_overrides,
)

log = logging.getLogger("ablations")

ABLATION_SEEDS = {"full": 2, "quick": 1}
# Variant → (config stem, --set overrides on top of the benchmark's recipe overrides).
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "full": ("demo", []),
    "no_deep_supervision": ("demo", ["model.deep_supervision=0"]),
    "bottleneck_readout": ("demo", ["model.readout=bottleneck"]),
    "no_seg_evidence": ("demo", ["model.seg_evidence=false"]),
    "batch_dice": ("demo", ["loss.dice_batch=true"]),
    "no_dropout": ("demo", ["model.dropout=0"]),
    "no_image_share": ("demo", ["data.image_share=null"]),
    "staged_schedule": ("staged", []),
    "width_8": ("demo", ["model.base_channels=8"]),
    "width_24": ("demo", ["model.base_channels=24"]),
    "width_32": ("demo", ["model.base_channels=32"]),
    "batch_16": ("demo", ["stages.joint.batch_size=16"]),
    "batch_8": ("demo", ["stages.joint.batch_size=8"]),
    "evidence_detached": ("demo", ["model.evidence_grad=false"]),
    "tumour_weight_1": ("demo", ["loss.task_weights.tumour=1.0"]),
    "segmentation_task_only": ("demo", ["stages.joint.tasks=[segmentation]"]),
}
# Variants that train other steps than the full recipe: the factor on its image steps (a
# batch 4x the recipe's for a quarter of the steps sees the same slices).
STEP_FACTORS = {"batch_16": 0.25, "batch_8": 0.5}
WIDTHS = {"width_8": 8, "full": 16, "width_24": 24, "width_32": 32}
NO_POSTPROCESSING = "no_postprocessing"
METRICS = ("dice", "dice_ungated", "hd95_mm", "slice_auc", "kaggle_auc")
MARGINS = {
    "dice": 0.02,
    "dice_ungated": 0.02,
    "hd95_mm": 2.0,
    "slice_auc": 0.02,
    "kaggle_auc": 0.02,
}


def staged_overrides(budget: Budget) -> list[str]:
    """The staged curriculum's stages scaled so that its image stages take the demo
    recipe's image steps under ``budget`` (the survival refit as the demo's)."""
    from tumorscope.config import load_config

    staged = load_config(ROOT / "configs" / "staged.yaml")
    image = [s for s in staged.stages if not s.cohort_refit]
    total = sum(s.max_steps for s in image)
    out = []
    for s in staged.stages:
        n = (
            budget.steps("surv_head")
            if s.cohort_refit
            else s.max_steps * budget.image_steps / total
        )
        n = max(2, round(n))
        out += [f"stages.{s.name}.max_steps={n}", f"stages.{s.name}.eval_every={n}"]
        if not s.cohort_refit:
            out.append(f"stages.{s.name}.warmup_fraction={WARMUP_FRACTION}")
    return out


def selected(only: Sequence[str] = ()) -> list[str]:
    """The variants a run trains, in :data:`VARIANTS` order: ``full`` and ``only`` (all
    when ``only`` is empty).

    Raises:
        ValueError: ``only`` names a variant that does not exist.
    """
    unknown = sorted(set(only) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    return [n for n in VARIANTS if not only or n in only or n == "full"]


class AblationBench(Bench):
    """The peer benchmark's data and collection, training tumorscope variants."""

    def __init__(self, budget: Budget, work: Path) -> None:
        super().__init__(budget, work)
        self.variant_sets: list[str] = []

    def cfg(self, config: str, **kw: Any) -> Any:
        from tumorscope.config import load_config

        path = ROOT / "configs" / f"{config}.yaml"
        if config == "staged":
            kw.pop("steps", None)
            base = recipe_overrides("demo", self.b, **kw)
            overrides = [o for o in base if not o.startswith("stages.")]
            overrides += staged_overrides(self.b)
        else:
            overrides = recipe_overrides(config, self.b, **kw)
        return load_config(path, overrides=overrides + self.variant_sets)

    def step_overrides(self, name: str) -> list[str]:
        """``stages.*.max_steps`` of a variant with a step factor (none otherwise)."""
        factor = STEP_FACTORS.get(name)
        if factor is None:
            return []
        out = []
        for stage in IMAGE_STAGES:
            n = max(2, round(self.b.steps(stage) * factor))
            out += [f"stages.{stage}.max_steps={n}", f"stages.{stage}.eval_every={n}"]
        return out

    def train_variant(self, name: str, seed: int) -> tuple[Any, dict[str, Any]]:
        """Train one variant on the shared timer and collect its test figures."""
        from tumorscope.inference.predictor import Predictor

        config, sets = VARIANTS[name]
        self.variant_sets = sets + self.step_overrides(name)
        run = self.work / "runs" / f"{name}-s{seed}"
        total = sum(s.max_steps for s in self.cfg(config, seed=seed, fold=0).stages)
        snaps = curve_steps(total) if seed == 0 else {}
        self.timed(
            name,
            lambda: self.fit_run(
                config,
                run,
                seed=seed,
                fold=seed % self.b.folds,
                split_seed=0,
                snapshots=sorted(snaps.values()),
            ),
        )
        pred = Predictor.from_run(run)
        splits: dict[str, Any] = dict(pred.manifest.splits or {})
        for fraction, g in snaps.items():
            snap = Predictor.from_run(run / "snapshots" / f"step-{g}")
            self.collect_curve(name, snap, splits, fraction)
        self.collect(name, pred, splits, seed, test=True, oof_repeat=None)
        return pred, splits

    def run_ablations(self, seeds: int, only: Sequence[str] = ()) -> None:
        from tumorscope.training.data import StageData

        self.read_strata()
        demo = self.cfg("demo", seed=0, fold=0)
        self.gate = float(demo.calibration.gate_threshold)
        shared = StageData.build(data=self.data, cfg=demo, cache=self.cache)
        self.curve_ids = sorted(shared.split_patients()["test"])[: self.b.curve_patients]
        for seed in range(seeds):
            for name in selected(only):
                pred, splits = self.train_variant(name, seed)
                if name == "full":  # the same weights without post-processing
                    pred.slice_gate, pred.min_component_ml = False, 0.0
                    self.collect(NO_POSTPROCESSING, pred, splits, seed, test=True, oof_repeat=None)


def summarise(bench: AblationBench) -> dict[str, Any]:
    """Per-variant figures, paired differences from the full recipe, Dice-vs-CPU curve."""
    from tumorscope.metrics.classification import roc_auc

    nb = bench.b.n_boot
    mean = per_seed_mean(lambda x: float(np.mean(x)))
    auc = per_seed_mean(roc_auc)
    st = bench.store
    names = [n for n in [*VARIANTS, NO_POSTPROCESSING] if n in st["seg"]]

    def keys(kind: str, models: Sequence[str]) -> list[Any]:
        sets = [set(st[kind].get(n, {})) for n in models]
        return sorted(set.intersection(*sets)) if sets else []

    def col(kind: str, name: str, ks: list[Any], c: int, dtype: Any = np.float64) -> Any:
        return np.asarray([st[kind][name][k][c] for k in ks], dtype=dtype)

    def seeds_groups(ks: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray([k[0] for k in ks]), np.asarray([k[1] for k in ks], dtype=object)

    seg_cols = {"dice": 0, "dice_ungated": 1, "hd95_mm": 2}
    cls_kinds = {"slice_auc": "slices", "kaggle_auc": "images"}
    variants: dict[str, dict[str, Any]] = {}
    for name in names:
        row: dict[str, Any] = {}
        ks = keys("seg", [name])
        seeds, groups = seeds_groups(ks)
        for metric, c in seg_cols.items():
            row[metric] = figure_ci(mean, [col("seg", name, ks, c), seeds], groups, nb)
        for metric, kind in cls_kinds.items():
            ks = keys(kind, [name])
            seeds, groups = seeds_groups(ks)
            arrays = [col(kind, name, ks, 0), col(kind, name, ks, 1, np.int64), seeds]
            row[metric] = figure_ci(auc, arrays, groups, nb)
        cpu_s = bench.train_cpu.get("full" if name == NO_POSTPROCESSING else name, [])
        row["train_cpu_s"] = round(float(np.mean(cpu_s)), 1) if cpu_s else None
        if name != "full":
            row["vs_full"] = {}
            for metric, c in seg_cols.items():
                ks = keys("seg", [name, "full"])
                seeds, groups = seeds_groups(ks)
                a, b = col("seg", name, ks, c), col("seg", "full", ks, c)
                row["vs_full"][metric] = compare(
                    mean,
                    a,
                    b,
                    [seeds],
                    groups,
                    n_boot=nb,
                    margin=MARGINS[metric],
                    lower_is_better=metric == "hd95_mm",
                )
            for metric, kind in cls_kinds.items():
                ks = keys(kind, [name, "full"])
                seeds, groups = seeds_groups(ks)
                lab = col(kind, "full", ks, 1, np.int64)
                a, b = col(kind, name, ks, 0), col(kind, "full", ks, 0)
                row["vs_full"][metric] = compare(
                    auc, a, b, [lab, seeds], groups, n_boot=nb, margin=MARGINS[metric]
                )
        variants[name] = row
    return {"variants": variants, "width_curve": width_curve(bench)}


def width_curve(bench: AblationBench) -> list[dict[str, Any]]:
    """Dice against training CPU seconds per width: seed 0's snapshots (25 %, 50 %; their
    CPU seconds the same fraction of the run's) and its finished run."""
    rows = []
    for name, width in WIDTHS.items():
        cpu_s = bench.train_cpu.get(name, [])
        if not cpu_s:
            continue
        for fraction in (0.25, 0.5, 1.0):
            if fraction < 1:
                vals = [
                    v[0]
                    for k, v in bench.store["curve_seg"].get(name, {}).items()
                    if k[0] == fraction
                ]
            else:
                vals = [
                    v[0]
                    for k, v in bench.store["seg"].get(name, {}).items()
                    if k[0] == 0 and k[1] in bench.curve_ids
                ]
            if vals:
                rows.append(
                    {
                        "base_channels": width,
                        "fraction": fraction,
                        "cpu_s": round(fraction * cpu_s[0], 1),
                        "dice": round(float(np.mean(vals)), 4),
                    }
                )
    return rows


def _cell(f: dict[str, Any] | None) -> str:
    if not f or f.get("value") is None:
        return "–"
    lo, hi = f["ci95"]
    return f"{f['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def markdown(result: dict[str, Any]) -> str:
    """The ablation table and the width curve as markdown."""
    lines = [
        "| variant | 3D Dice | Dice ungated | HD95 mm | slice AUC | 2D AUC | train CPU s |"
        " Δ Dice vs full [95% CI] | Δ slice AUC vs full [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["variants"].items():
        deltas = []
        for metric in ("dice", "slice_auc"):
            c = row.get("vs_full", {}).get(metric)
            if c is None:
                deltas.append("–")
            else:
                lo, hi = c["delta_ci95"]
                deltas.append(f"{c['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}] {c['verdict']}")
        cells = [_cell(row[m]) for m in METRICS]
        cpu_s = "–" if row["train_cpu_s"] is None else f"{row['train_cpu_s']:.1f}"
        lines.append(f"| {name} | " + " | ".join([*cells, cpu_s, *deltas]) + " |")
    lines += ["", "| base_channels | fraction of steps | CPU s | Dice (curve patients, seed 0) |"]
    lines.append("|---|---|---|---|")
    for r in result["width_curve"]:
        lines.append(f"| {r['base_channels']} | {r['fraction']} | {r['cpu_s']} | {r['dice']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--work", type=Path, default=None, help="keep runs here (default: temp)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per variant (default: 2)")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated variants to run beside `full` (default: all of them)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    log.setLevel(logging.INFO)
    logging.getLogger("peers").setLevel(logging.INFO)
    only = [v for v in args.only.split(",") if v]
    try:
        selected(only)
    except ValueError as e:
        parser.error(str(e))
    budget = QUICK if args.quick else FULL
    seeds = args.seeds or ABLATION_SEEDS["quick" if args.quick else "full"]
    from tumorscope.runtime import resolve_precision

    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        bench = AblationBench(budget, work)
        bench.synthesize_data()
        bench.run_ablations(seeds, only)
        result = summarise(bench)
    result.update(
        {
            "benchmark": "ablations",
            "quick": args.quick,
            "seeds": seeds,
            "budget": {
                "image_steps": budget.image_steps,
                "step_scale": budget.step_scale,
                "patients": budget.patients,
                "image_size": budget.image_size,
                "precision": resolve_precision("auto"),
            },
            "seconds": round(time.perf_counter() - t0, 1),
            "cpu": cpu(),
        }
    )
    (args.out / "ablations.json").write_text(json.dumps(result, indent=2))
    md = markdown(result)
    (args.out / "ablations.md").write_text(md)
    print(md)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
