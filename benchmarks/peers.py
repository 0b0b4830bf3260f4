"""tumorscope against peers trained in the same run, on the same data, for the same CPU time.

Prints one JSON object on its last stdout line and writes ``bench-out/peers.json``,
``bench-out/peers.md`` and ``bench-out/peers-state.json`` (every collected prediction;
``--from-state`` re-summarises it without training). ``--quick`` runs a small version.
``--survival-only [--profile petct]`` writes ``peers-survival[-petct].{json,md}`` and
``…-state.json`` instead.

    python benchmarks/peers.py [--quick] [--survival-only [--profile petct]] [--out bench-out] [--work DIR]

Data: the ``standard`` synthetic preset, brain MRI (FLAIR only, as the demo), a
Kaggle-style training folder and a fixed 2D test set from its own seed stream with
``strata.csv`` (contrast, plane, skull, offset). Peers (all on the same patients):

1. tumorscope multi-task (``configs/demo.yaml``, stages scaled by ``step_scale``);
2. MONAI ``BasicUNet`` + ``DiceCELoss``, segmentation only;
3. MONAI ``DenseNet121``, tumour presence, on the same labelled slices and images;
4. radiomics + Cox: lifelines ``CoxPHFitter`` on ground-truth volume, enhancing fraction, age;
5. tumorscope single-task runs (``seg_only``, ``cls_only``, ``surv_only``);
6. the oracle C-index (true log-hazard of the generator).

The rules (``benchmarks/budget.py``): tumorscope's whole training (every stage, its
validation passes, survival refit and calibration) is measured on one CPU timer, and its
CPU seconds are every other model's budget. Each peer's step count is planned from two
probe trainings in the same run (a short one timed step by step, then one at the
estimated length), on the same timer with the same overheads (its own validation pass
included), and then fixed for every seed. Every model uses its
recipe's learning rate (no LR sweep for anyone), warms up over ``WARMUP_FRACTION`` of its
steps and keeps its last weights; every segmentation peer gets tumorscope's gate and
post-processing, and Dice is reported gated and ungated. Image figures are over ``seeds``
seeds on one fixed test split (``data.split_seed`` 0) and the fixed 2D test set; survival
figures are out of fold over ``folds`` folds × ``repeats`` split seeds. Comparisons are
paired patient-level bootstraps with a verdict from the CI (``better`` /
``non_inferior`` at ``MARGINS`` / ``worse`` / ``undecided``). Seed 0 of every image
model is also evaluated at 25 % and 50 % of its steps (the learning curve).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from budget import CpuTimer, StepPlan, plan_steps  # noqa: E402
from peers_lib import (  # noqa: E402
    CURVE_FRACTIONS,
    DEMO_STEPS,
    WARMUP_FRACTION,
    Budget,
    PeerPredictor,
    compare,
    curve_steps,
    figure_ci,
    markdown,
    ms_per_slice,
    per_seed_mean,
    recipe_overrides,
    train_monai,
)
from survival_lib import (  # noqa: E402
    HORIZON_QUANTILES,
    SURVIVAL_COMPARISONS,
    SURVIVAL_LABELS,
    fold_peers,
    grid_of,
    ground_truth_table,
    predicted_features,
    survival_at,
)

log = logging.getLogger("peers")

QUICK = Budget(
    patients=16,
    kaggle=24,
    kaggle_test=16,
    shape=(48, 56, 40),
    image_size=32,
    step_scale=0.01,
    seeds=2,
    folds=2,
    repeats=2,
    n_boot=200,
    curve_patients=2,
    probe_steps=6,
)
FULL = Budget(
    patients=120,
    kaggle=160,
    kaggle_test=200,
    shape=(96, 112, 72),
    image_size=96,
    step_scale=0.12,
    seeds=5,
    folds=5,
    repeats=3,
    n_boot=500,
    curve_patients=12,
    probe_steps=24,
)
# ``--survival-only``: at least 200 patients, every one out of fold (no test split).
SURVIVAL_QUICK = dataclasses.replace(QUICK, patients=20)
SURVIVAL_FULL = dataclasses.replace(FULL, patients=200)
# ``--profile petct`` (survival only): the same recipes on synthetic HECKTOR-layout PET/CT,
# two channels and the primary tumour, as ``configs/demo-petct.yaml`` has them.
PROFILES = {
    "brain-mri": {"channels": ["flair"], "overrides": []},
    "petct": {
        "channels": ["ct", "pet"],
        "overrides": [
            "profile=petct",
            "data.channels=[ct,pet]",
            "model.in_channels=2",
            "model.regions=[GTVp]",
        ],
    },
}
TIMED_SLICES = 16  # slices of one test volume timed per peer (best of 3 passes)
# Non-inferiority margins of the verdicts, in each metric's units.
MARGINS = {
    "dice": 0.02,
    "dice_ungated": 0.02,
    "hd95_mm": 2.0,
    "slice_auc": 0.02,
    "kaggle_auc": 0.02,
    "c_index_harrell": 0.02,
}
LABELS = {
    "tumorscope": "tumorscope multi-task (one model)",
    "monai_basicunet": "MONAI BasicUNet + DiceCELoss",
    "monai_densenet121": "MONAI DenseNet121 classifier",
    "seg_only": "tumorscope seg_only",
    "cls_only": "tumorscope cls_only",
    **{k: v for k, v in SURVIVAL_LABELS.items() if k != "tumorscope"},
}
SEG_PEERS = ("tumorscope", "seg_only", "monai_basicunet")
CLS_PEERS = ("tumorscope", "cls_only", "monai_densenet121")
PLANNED = ("seg_only", "cls_only", "monai_basicunet", "monai_densenet121")
MONAI = {"monai_basicunet": "seg_only", "monai_densenet121": "cls_only"}
STRATA = ("contrast", "plane", "skull", "offset")
NEAR_MM = 10.0  # offset stratum: |plane offset| up to this is "near" its target


def offset_stratum(offset_mm: float) -> str:
    return "near" if abs(offset_mm) <= NEAR_MM else "far"


class Bench:
    """State of one benchmark run: data, cache, plans and every collected prediction."""

    # Stores keyed by tuples: kind → model → key → values.
    KINDS = ("seg", "slices", "images", "oof", "curve_seg", "curve_slices", "curve_images")
    PLAIN = (
        "train_s",
        "train_cpu",
        "ms",
        "folds",
        "table",
        "plans",
        "target_cpu",
        "curve_ids",
        "strata",
        "gate",
        "phases",
        "grid",
    )

    def __init__(
        self, budget: Budget, work: Path, extra: Sequence[str] = (), profile: str = "brain-mri"
    ) -> None:
        self.b = budget
        self.profile = profile
        self.extra = list(extra)  # --set overrides of tumorscope's multi-task runs
        self.work = work
        self.data = [work / "data"]
        self.test2d = work / "test2d"
        self.cache = work / "cache"
        self.timer = CpuTimer()  # the budget's clock: process CPU seconds
        self.wall = CpuTimer(clock=time.perf_counter)
        self.store: dict[str, dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]] = {
            k: {} for k in self.KINDS
        }
        self.train_s: dict[str, list[float]] = {}
        self.train_cpu: dict[str, list[float]] = {}
        self.ms: dict[str, float] = {}
        self.folds: list[tuple[int, list[str], list[str]]] = []
        self.table: dict[str, dict[str, float]] = {}
        self.plans: dict[str, dict[str, Any]] = {}
        self.target_cpu = 0.0
        self.curve_ids: list[str] = []
        self.strata: dict[str, dict[str, Any]] = {}
        self.gate = 0.0
        self.phases: dict[str, float] = {}  # wall seconds of each part of the run
        self.mode: list[
            str
        ] = []  # overrides of every config in this mode (survival: no test split)
        self.grid: list[float] = []  # survival-curve times (days) of the survival peers

    # ------------------------------------------------------------------ state
    def save_state(self, path: Path) -> None:
        """Write every collected prediction as JSON (re-summarise with ``--from-state``)."""
        state: dict[str, Any] = {k: getattr(self, k) for k in self.PLAIN}
        state["store"] = {
            kind: {n: [[list(key), list(v)] for key, v in d.items()] for n, d in models.items()}
            for kind, models in self.store.items()
        }
        path.write_text(json.dumps(state))

    def load_state(self, path: Path) -> None:
        """Read what :meth:`save_state` wrote."""
        state = json.loads(path.read_text())
        for k in self.PLAIN:
            setattr(self, k, state[k])
        self.folds = [(int(r), list(a), list(b)) for r, a, b in self.folds]
        self.store = {
            kind: {n: {tuple(key): tuple(v) for key, v in rows} for n, rows in models.items()}
            for kind, models in state["store"].items()
        }

    def synthesize_data(self, *, survival: bool = False) -> None:
        """The cohort and (not for ``survival``) the fixed 2D test set (a kept ``--work``
        folder reuses them)."""
        from tumorscope.synthetic import synthesize, synthesize_kaggle

        b = self.b
        layout = "brats" if self.profile == "brain-mri" else "hecktor"
        if not (self.work / "data" / layout).is_dir():
            synthesize(
                profile=self.profile,
                patients=b.patients,
                out=self.work / "data",
                kaggle=b.kaggle if self.profile == "brain-mri" else 0,
                difficulty="standard",
                seed=0,
                shape=b.shape,
                workers=2,
            )
        if not self.test2d.is_dir() and not survival:
            synthesize_kaggle(
                count=b.kaggle_test, out=self.test2d, difficulty="standard", seed=0, workers=2
            )

    def put(self, kind: str, name: str, key: tuple[Any, ...], *values: Any) -> None:
        self.store[kind].setdefault(name, {})[key] = values

    # ------------------------------------------------------------------ training
    def cfg(self, config: str, **kw: Any) -> Any:
        from tumorscope.config import load_config

        path = ROOT / "configs" / f"{config}.yaml"
        overrides = recipe_overrides(config, self.b, **kw) + self.mode
        return load_config(path, overrides=overrides + (self.extra if config == "demo" else []))

    def steps(self, name: str) -> int | None:
        """The planned steps of a peer (None: tumorscope's recipe)."""
        return int(self.plans[name]["steps"]) if name in self.plans else None

    def snapshots(self, name: str, seed: int) -> dict[float, int]:
        """Learning-curve fraction → run-wide snapshot step of ``name`` (seed 0 only)."""
        total = self.b.total_steps if name == "tumorscope" else self.steps(name)
        if seed != 0 or self.mode or total is None:
            return {}
        return curve_steps(total)

    def fit_run(
        self, config: str, out: Path, *, on_step: Callable[[], None] | None = None, **kw: Any
    ) -> None:
        """One tumorscope training into ``out`` (not timed here); ``on_step`` is called
        after every step of the config's planned (first) stage."""
        from tumorscope.training.run import train_run

        cfg = self.cfg(config, **kw)
        planned = cfg.stages[0].name

        def progress(stage: str, step: int, max_steps: int, row: dict[str, float]) -> None:
            if on_step is not None and stage == planned:
                on_step()

        train_run(cfg=cfg, data=self.data, out=out, cache=self.cache, progress=progress)

    def fit_monai(
        self,
        kind: str,
        *,
        seed: int,
        steps: int,
        fold: int | None = None,
        split_seed: int = 0,
        snapshots: Sequence[int] = (),
        on_snapshot: Callable[[int, Any], None] | None = None,
        on_step: Callable[[], None] | None = None,
    ) -> tuple[Any, Any, dict[str, Any]]:
        """One MONAI training (not timed here): ``(network, config, splits)``; ``fold``
        defaults to ``seed % folds``."""
        from monai.networks.nets import BasicUNet, DenseNet121

        from tumorscope.runtime import resolve_precision, seed_everything
        from tumorscope.training.data import StageData

        fold = seed % self.b.folds if fold is None else fold
        cfg = self.cfg(MONAI[kind], seed=seed, fold=fold, split_seed=split_seed, steps=steps)
        data = StageData.build(data=self.data, cfg=cfg, cache=self.cache)
        seed_everything(seed)
        channels = len(cfg.data.channels)
        net: Any
        if kind == "monai_basicunet":
            net = BasicUNet(
                spatial_dims=2, in_channels=channels, out_channels=len(cfg.model.regions)
            )
        else:
            net = DenseNet121(spatial_dims=2, in_channels=channels, out_channels=1)
        hooks = {s: (lambda n, s=s: on_snapshot(s, n)) for s in snapshots} if on_snapshot else {}
        train_monai(
            net,
            data,
            cfg.stages[0],
            seed=seed,
            target="segmentation" if kind == "monai_basicunet" else "tumour",
            precision=resolve_precision(cfg.runtime.precision),
            snapshots=hooks,
            on_step=on_step,
        )
        return net, cfg, data.split_patients()

    def peer_predictor(self, kind: str, net: Any, cfg: Any) -> Any:
        from tumorscope.inference.predictor import Predictor

        base = Predictor.from_config(cfg)
        role = "seg_net" if kind == "monai_basicunet" else "cls_net"
        return PeerPredictor(base, gate_threshold=self.gate, **{role: net})

    def run_predictor(self, name: str, folder: Path) -> Any:
        from tumorscope.inference.predictor import Predictor

        pred = Predictor.from_run(folder)
        if name == "tumorscope":
            return pred
        return PeerPredictor(pred, gate_threshold=self.gate, keep_base=True)

    def timed(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run one whole training on the shared timer (and the wall clock, for the table)."""
        with self.timer.measure(name), self.wall.measure(name):
            out = fn()
        self.train_cpu.setdefault(name, []).append(self.timer.last(name))
        self.train_s.setdefault(name, []).append(self.wall.last(name))
        log.info(
            "trained %s in %.0f CPU s (%.0f s wall)",
            name,
            self.timer.last(name),
            self.wall.last(name),
        )
        return out

    def plan(self, names: Sequence[str]) -> None:
        """Plan the peers' steps from two probe trainings each, on the shared timer."""
        probes = self.work / "probes"

        def probe(name: str) -> Callable[[int, Callable[[], None]], None]:
            def train(steps: int, tick: Callable[[], None]) -> None:
                if name in MONAI:
                    self.fit_monai(name, seed=0, steps=steps, on_step=tick)
                    return
                out = probes / f"{name}-{steps}"
                shutil.rmtree(out, ignore_errors=True)
                self.fit_run(name, out, seed=0, fold=0, steps=steps, on_step=tick)
                shutil.rmtree(out, ignore_errors=True)

            return train

        for name in names:
            p: StepPlan = plan_steps(
                name, probe(name), self.target_cpu, self.timer, probe_steps=self.b.probe_steps
            )
            self.plans[name] = p.as_dict()
            log.info(
                "plan %s: %d steps (fixed %.1f CPU s + %.3f CPU s/step; budget %.1f)",
                name,
                p.steps,
                p.fixed_seconds,
                p.step_seconds,
                p.target_seconds,
            )

    def train_tumorscope(self, config: str, *, seed: int, fold: int, split_seed: int = 0) -> Any:
        """Train a tumorscope config on the shared timer; ``(predictor, splits, run)``."""
        name = "tumorscope" if config == "demo" else config
        run = self.work / "runs" / f"{config}-r{split_seed}-s{seed}-f{fold}"
        snaps = self.snapshots(name, seed) if split_seed == 0 else {}
        self.timed(
            name,
            lambda: self.fit_run(
                config,
                run,
                seed=seed,
                fold=fold,
                split_seed=split_seed,
                steps=self.steps(name),
                snapshots=sorted(snaps.values()),
            ),
        )
        pred = self.run_predictor(name, run)
        for fraction, g in snaps.items():
            snap = self.run_predictor(name, run / "snapshots" / f"step-{g}")
            self.collect_curve(name, snap, pred.manifest.splits, fraction)
        return pred, pred.manifest.splits

    def train_peer(self, kind: str, seed: int) -> Any:
        """Train a MONAI peer on the shared timer; ``(predictor, splits)``."""
        steps = int(self.plans[kind]["steps"])
        snaps = self.snapshots(kind, seed)
        copies: dict[int, Any] = {}

        def keep(step: int, net: Any) -> None:
            import copy

            copies[step] = copy.deepcopy(net)

        net, cfg, splits = self.timed(
            kind,
            lambda: self.fit_monai(
                kind, seed=seed, steps=steps, snapshots=list(snaps.values()), on_snapshot=keep
            ),
        )
        for fraction, step in snaps.items():
            snap = self.peer_predictor(kind, copies[step], cfg)
            self.collect_curve(kind, snap, splits, fraction)
        return self.peer_predictor(kind, net, cfg), splits

    # ------------------------------------------------------------------ collection
    def held_out(self, pred: Any, splits: dict[str, Any], wanted: set[str], *, images: bool) -> Any:
        from tumorscope.evaluation.collect import collect_held_out

        seen = {p for ids in splits.values() for p in ids}
        data = self.data + ([self.test2d] if images else [])
        return collect_held_out(pred, data, wanted, seen)

    def collect(
        self,
        name: str,
        pred: Any,
        splits: dict[str, Any],
        seed: int,
        *,
        test: bool,
        oof_repeat: int | None,
    ) -> None:
        """Collect test-split figures (``test``) and/or out-of-fold risks of the val fold."""
        test_ids, val_ids = set(splits["test"]), set(splits["val"])
        wanted = (test_ids if test else set()) | (val_ids if oof_repeat is not None else set())
        t0 = time.perf_counter()
        held = self.held_out(pred, splits, wanted, images=test)
        log.info("collected %s seed %d in %.0f s", name, seed, time.perf_counter() - t0)
        if oof_repeat is not None:
            for p, r in held.risk.items():
                if p in val_ids:
                    self.put("oof", name, (oof_repeat, p), r)
        if not test:
            return
        self.add_images(("seg", "slices", "images"), name, seed, held, test_ids)
        if name not in self.ms and held.case_ids:
            self.ms[name] = self.time_inference(pred, held.case_ids[0])

    def collect_curve(self, name: str, pred: Any, splits: dict[str, Any], fraction: float) -> None:
        """Learning-curve figures of one snapshot on the fixed curve subset."""
        held = self.held_out(pred, splits, set(self.curve_ids), images=True)
        kinds = ("curve_seg", "curve_slices", "curve_images")
        self.add_images(kinds, name, fraction, held, set(self.curve_ids))

    def add_images(
        self, kinds: tuple[str, str, str], name: str, key: Any, held: Any, patients: set[str]
    ) -> None:
        seg, slices, images = kinds
        for pid, d, du, h in zip(
            held.case_ids, held.dice, held.dice_ungated, held.hd95, strict=True
        ):
            if pid in patients:
                self.put(seg, name, (key, pid), d, du, h)
        for i, (pid, z) in enumerate(zip(held.slice_patient, held.slice_index, strict=True)):
            if pid in patients:
                self.put(slices, name, (key, pid, z), held.slice_prob[i], held.slice_label[i])
        for i, iid in enumerate(held.image_ids):
            if iid in self.strata:  # the fixed 2D test set only
                self.put(images, name, (key, iid), held.image_prob[i], held.image_label[i])

    def time_inference(self, pred: Any, pid: str) -> float:
        from tumorscope.data.layout import discover, load_case
        from tumorscope.data.transforms import preprocess_volume

        case = next(c for c in discover(self.data).cases if c.patient_id == pid)
        loaded = load_case(case, pred.spec.channels)
        slices = preprocess_volume(loaded, pred.spec, source=case.source, all_slices=True)
        return ms_per_slice(pred.forward_slices, slices.images[:TIMED_SLICES])

    def read_strata(self) -> None:
        from tumorscope.synthetic import read_strata

        for row in read_strata(self.test2d / "strata.csv"):
            iid = str(Path(row["file"]).with_suffix("").as_posix())
            self.strata[iid] = {
                "contrast": row["contrast"],
                "plane": row["plane"],
                "skull": "yes" if row["skull"] else "no",
                "offset": offset_stratum(float(row["offset_mm"])),
            }

    def run(self, *, survival_only: bool = False) -> None:
        """Train and collect every peer: the image peers, or (``survival_only``) the
        survival peers (:mod:`survival_lib`)."""
        if survival_only:
            self.run_survival()
            return
        from tumorscope.training.data import StageData

        self.read_strata()
        demo = self.cfg("demo", seed=0, fold=0)
        self.gate = float(demo.calibration.gate_threshold)
        # Build the shared preprocessing cache first: no model's training time includes it.
        # Its fixed test split names the curve patients before seed 0's snapshots are read.
        shared = StageData.build(data=self.data, cfg=demo, cache=self.cache)
        b = self.b
        self.curve_ids = sorted(shared.split_patients()["test"])[: b.curve_patients]
        t0 = time.perf_counter()
        for seed in range(b.seeds):
            fold = seed % b.folds
            pred, splits = self.train_tumorscope("demo", seed=seed, fold=fold)
            self.collect("tumorscope", pred, splits, seed, test=True, oof_repeat=None)
            if seed == 0:
                self.target_cpu = self.timer.last("tumorscope")
                t_plan = time.perf_counter()
                self.plan(PLANNED)
                self.phases["plan"] = round(time.perf_counter() - t_plan, 1)
            for config in ("seg_only", "cls_only"):
                pred, splits = self.train_tumorscope(config, seed=seed, fold=fold)
                self.collect(config, pred, splits, seed, test=True, oof_repeat=None)
            for kind in MONAI:
                pred, splits = self.train_peer(kind, seed)
                self.collect(kind, pred, splits, seed, test=True, oof_repeat=None)
        self.phases["image_seeds"] = round(time.perf_counter() - t0 - self.phases.get("plan", 0), 1)

    def run_survival(self) -> None:
        """Every patient out of fold, ``folds`` × ``repeats``.

        The image models are trained on the first repeat's folds only: per fold
        tumorscope's run (its survival model on its own masks, and its survival head alone)
        and a BasicUNet trained for the same CPU seconds. Every patient's predicted-mask
        features thus come from models that did not see it. Every repeat then fits the Cox
        peers on the ground-truth features of its folds' training patients and applies
        them to those features; in repeats after the first, ``tumorscope`` is its survival
        design refitted the same way (as training fits it), and ``tumorscope_deep_only``
        is scored on the first repeat alone (its risk needs a trained network)."""
        from tumorscope.training.data import StageData

        self.mode = ["data.test_fraction=0", *PROFILES[self.profile]["overrides"]]
        demo = self.cfg("demo", seed=0, fold=0)
        self.gate = float(demo.calibration.gate_threshold)
        StageData.build(data=self.data, cfg=demo, cache=self.cache)  # untimed, shared
        gt = ground_truth_table(demo, self.data)
        volumes = gt["rows"]  # the splits also hold the 2D images' "patients"
        times = np.asarray([r.time for r in volumes.values()], dtype=np.float64)
        grid = grid_of(times)
        self.grid = grid.tolist()
        b = self.b
        own: dict[str, dict[str, float]] = {}  # tumorscope's predicted-mask features, OOF
        unet: dict[str, dict[str, float]] = {}  # BasicUNet's, OOF
        t0 = time.perf_counter()
        for repeat in range(b.repeats):
            for fold in range(b.folds):
                if repeat == 0:
                    splits = self.survival_fold(fold, gt, grid, own, unet)
                else:
                    cfg = self.cfg("demo", seed=fold, fold=fold, split_seed=repeat)
                    splits = StageData.build(
                        data=self.data, cfg=cfg, cache=self.cache
                    ).split_patients()
                val = [p for p in splits["val"] if p in volumes]
                train = [p for p in splits["train"] if p in volumes]
                self.folds.append((repeat, train, val))
                fitted = fold_peers(
                    gt, demo, repeat, train, val, unet, grid, own=own if repeat else None
                )
                for name, by_pid in fitted.items():
                    for p, (risk, surv) in by_pid.items():
                        self.put("oof", name, (repeat, p), risk, surv)
                log.info("survival repeat %d fold %d done", repeat, fold)
        for repeat, _, val in self.folds:
            for p in val:
                for name, known in (
                    ("observable_ceiling", gt["observable_risk"]),
                    ("oracle", gt["true_risk"]),
                ):
                    if p in known:
                        self.put("oof", name, (repeat, p), known[p], [])
        self.table = {p: {"time": r.time, "event": float(r.event)} for p, r in volumes.items()}
        self.phases["survival"] = round(time.perf_counter() - t0, 1)

    def survival_fold(
        self,
        fold: int,
        gt: dict[str, Any],
        grid: np.ndarray,
        own: dict[str, dict[str, float]],
        unet: dict[str, dict[str, float]],
    ) -> dict[str, Any]:
        """One fold of the first repeat: train tumorscope and BasicUNet, store tumorscope's
        risks, add both models' predicted-mask features of the fold's validation patients to
        ``own`` / ``unet``; the fold's splits."""
        pred, splits = self.train_tumorscope("demo", seed=fold, fold=fold, split_seed=0)
        if not self.target_cpu:
            self.target_cpu = self.timer.last("tumorscope")
            self.plan(("monai_basicunet",))
        val = [p for p in splits["val"] if p in gt["rows"]]
        held = self.held_out(pred, splits, set(val), images=False)
        base = pred.calibration.baseline_hazard
        for p in val:
            if p not in held.risk:
                continue
            surv = survival_at(
                base["times"],
                np.exp(-np.asarray(base["cumulative"]) * np.exp(held.risk[p])).tolist(),
                grid,
            )
            self.put("oof", "tumorscope", (0, p), held.risk[p], surv)
            if p in held.deep_risk:
                self.put("oof", "tumorscope_deep_only", (0, p), held.deep_risk[p], [])
            if p in held.features:
                own[p] = dict(held.features[p])
        net, cfg, unet_splits = self.timed(
            "monai_basicunet",
            lambda: self.fit_monai(
                "monai_basicunet",
                seed=fold,
                fold=fold,
                split_seed=0,
                steps=int(self.plans["monai_basicunet"]["steps"]),
            ),
        )
        if sorted(unet_splits["val"]) != sorted(splits["val"]):
            raise RuntimeError(f"fold {fold}: the peers' folds differ")
        peer = self.peer_predictor("monai_basicunet", net, cfg)
        unet.update(predicted_features(peer, cfg, self.data, val))
        return dict(splits)


def summarise(bench: Bench) -> dict[str, Any]:
    """Per-peer figures, paired comparisons, learning curve and goals from the predictions."""
    from tumorscope.metrics.classification import roc_auc

    nb = bench.b.n_boot
    mean = per_seed_mean(lambda x: float(np.mean(x)))
    auc = per_seed_mean(roc_auc)
    st = bench.store

    def keys_of(kind: str, names: Sequence[str]) -> list[Any]:
        sets = [set(st[kind].get(n, {})) for n in names]
        return sorted(set.intersection(*sets)) if sets else []

    def column(kind: str, name: str, keys: list[Any], col: int, dtype: Any = np.float64) -> Any:
        return np.asarray([st[kind][name][k][col] for k in keys], dtype=dtype)

    def seeds_groups(keys: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray([k[0] for k in keys]), np.asarray([k[1] for k in keys], dtype=object)

    peers: dict[str, dict[str, Any]] = {n: {"label": LABELS[n]} for n in LABELS}
    comparisons: list[dict[str, Any]] = []
    image_peers = bool(st["seg"])  # False for a --survival-only run
    seg_cols = (("dice", 0), ("dice_ungated", 1), ("hd95_mm", 2))
    # ---- segmentation
    for name in SEG_PEERS if image_peers else ():
        keys = keys_of("seg", [name])
        seeds, groups = seeds_groups(keys)
        for key, col in seg_cols:
            peers[name][key] = figure_ci(mean, [column("seg", name, keys, col), seeds], groups, nb)
    for peer in ("monai_basicunet", "seg_only") if image_peers else ():
        keys = keys_of("seg", ["tumorscope", peer])
        seeds, groups = seeds_groups(keys)
        for key, col in seg_cols:
            a, b = column("seg", "tumorscope", keys, col), column("seg", peer, keys, col)
            c = compare(
                mean,
                a,
                b,
                [seeds],
                groups,
                n_boot=nb,
                margin=MARGINS[key],
                lower_is_better=key == "hd95_mm",
            )
            comparisons.append({"metric": key, "peer": peer, **c})
    # ---- classification: slices of test volumes, and the fixed 2D test set
    stores = (("slices", "slice_auc"), ("images", "kaggle_auc")) if image_peers else ()
    for kind, key in stores:
        for name in CLS_PEERS:
            keys = keys_of(kind, [name])
            seeds, groups = seeds_groups(keys)
            lab = column(kind, name, keys, 1, np.int64)
            prob = column(kind, name, keys, 0)
            peers[name][key] = figure_ci(auc, [prob, lab, seeds], groups, nb)
            if kind == "images":
                peers[name]["kaggle_auc_by_stratum"] = by_stratum(
                    bench, keys, prob, lab, seeds, groups, auc, nb
                )
        for peer in ("monai_densenet121", "cls_only"):
            keys = keys_of(kind, ["tumorscope", peer])
            seeds, groups = seeds_groups(keys)
            lab = column(kind, "tumorscope", keys, 1, np.int64)
            a, b = column(kind, "tumorscope", keys, 0), column(kind, peer, keys, 0)
            c = compare(auc, a, b, [lab, seeds], groups, n_boot=nb, margin=MARGINS[key])
            comparisons.append({"metric": key, "peer": peer, **c})
    # ---- survival: out-of-fold risks, one figure per repeat, averaged
    survival = survival_figures(bench, peers, comparisons, keys_of, column, seeds_groups)
    for name, secs in bench.train_s.items():
        peers[name]["train_seconds"] = round(float(np.mean(secs)), 1)
        peers[name]["train_cpu_seconds"] = round(float(np.mean(bench.train_cpu[name])), 1)
        if bench.target_cpu:
            peers[name]["budget_ratio"] = round(
                float(np.mean(bench.train_cpu[name])) / bench.target_cpu, 3
            )
    for name, plan in bench.plans.items():
        peers[name]["steps"] = plan["steps"]
    if bench.target_cpu:
        peers["tumorscope"]["steps"] = bench.b.total_steps
    for name, ms in bench.ms.items():
        peers[name]["infer_ms_per_slice"] = round(ms, 2)

    def cmp(metric: str, peer: str) -> dict[str, Any]:
        found = (c for c in comparisons if c["metric"] == metric and c["peer"] == peer)
        return next(found, {})  # absent in a --survival-only run: its goals are None

    goals = {
        "dice_ge_monai_basicunet": cmp("dice", "monai_basicunet").get("non_inferior"),
        "slice_auc_ge_densenet121": cmp("slice_auc", "monai_densenet121").get("non_inferior"),
        "kaggle_auc_ge_densenet121": cmp("kaggle_auc", "monai_densenet121").get("non_inferior"),
        "c_index_above_clinical_cox": lower_above(cmp("c_index_harrell", "clinical_cox"), 0.0),
        "c_index_above_radiomics_cox_basicunet": lower_above(
            cmp("c_index_harrell", "radiomics_cox_basicunet"), 0.0
        ),
        "c_index_non_inferior_radiomics_cox_gt": lower_above(
            cmp("c_index_harrell", "radiomics_cox_gt"), -0.03
        ),
        "c_index_ratio_to_observable_ceiling": survival.get("ratio_to_observable_ceiling"),
        "multitask_dice_non_inferior": cmp("dice", "seg_only").get("non_inferior"),
        "multitask_slice_auc_ge_cls_only": cmp("slice_auc", "cls_only").get("non_inferior"),
        "multitask_kaggle_auc_ge_cls_only": cmp("kaggle_auc", "cls_only").get("non_inferior"),
    }
    return {
        "peers": peers,
        "comparisons": comparisons,
        "goals": goals,
        "curve": learning_curve(bench) if image_peers else [],
        **{k: v for k, v in survival.items() if k != "ratio_to_observable_ceiling"},
    }


def lower_above(comparison: dict[str, Any], bound: float) -> bool | None:
    """Whether a comparison's Δ CI lies above ``bound`` (None: not compared in this run)."""
    ci = comparison.get("delta_ci95")
    return None if not ci else bool(ci[0] > bound)


def survival_figures(
    bench: Bench,
    peers: dict[str, dict[str, Any]],
    comparisons: list[dict[str, Any]],
    keys_of: Callable[..., list[Any]],
    column: Callable[..., Any],
    seeds_groups: Callable[..., tuple[np.ndarray, np.ndarray]],
) -> dict[str, Any]:
    """Harrell's and Uno's C, IBS and td-AUC of every survival peer (out of fold, the mean
    over repeats), paired comparisons of tumorscope with each, and the ceiling ratio."""
    from tumorscope.metrics.survival import (
        harrell_c_index,
        integrated_brier_score,
        time_dependent_auc,
        uno_c_index,
    )

    oof = bench.store["oof"]
    if "tumorscope" not in oof:
        return {}
    nb = bench.b.n_boot
    keys = keys_of("oof", ["tumorscope"])
    t_all = np.asarray([bench.table[k[1]]["time"] for k in keys])
    e_all = np.asarray([bench.table[k[1]]["event"] for k in keys]).astype(bool)
    tau = float(np.quantile(t_all, 0.8))
    full = np.asarray(bench.grid, dtype=np.float64)
    inside = full < t_all.max()
    grid = full[inside]
    horizons = np.quantile(t_all, HORIZON_QUANTILES)

    def safe(fn: Callable[..., float]) -> Callable[..., float]:
        """NaN where a resample leaves a metric undefined (one class, times outside it)."""

        def at(*a: np.ndarray) -> float:
            try:
                return float(fn(*a))
            except ValueError:
                return float("nan")

        return per_seed_mean(at)

    def uno(r: np.ndarray, tt: np.ndarray, ee: np.ndarray) -> float:
        return uno_c_index(r, tt, ee, t_all, e_all, tau=tau)

    def td_auc(h: float) -> Callable[..., float]:
        def at(r: np.ndarray, tt: np.ndarray, ee: np.ndarray) -> float:
            return float(time_dependent_auc(r, tt, ee, t_all, e_all, [h])[0][0])

        return safe(at)

    def ibs_of(surv: np.ndarray) -> Callable[..., float]:
        def at(i: np.ndarray, tt: np.ndarray, ee: np.ndarray) -> float:
            curves = surv[i.astype(int)][:, inside]
            return integrated_brier_score(curves, tt, ee, t_all, e_all, grid)

        return safe(at)

    harrell = per_seed_mean(harrell_c_index)

    def arrays(names: Sequence[str]) -> tuple[list[Any], np.ndarray, np.ndarray, Any, Any]:
        ks = keys_of("oof", names)
        t = np.asarray([bench.table[k[1]]["time"] for k in ks])
        e = np.asarray([bench.table[k[1]]["event"] for k in ks]).astype(bool)
        rep, groups = seeds_groups(ks)
        return ks, t, e, rep, groups

    for name in [n for n in SURVIVAL_LABELS if n in oof]:
        ks, t, e, rep, groups = arrays([name])
        r = column("oof", name, ks, 0)
        f = peers.setdefault(name, {"label": SURVIVAL_LABELS[name]})
        f["label"] = SURVIVAL_LABELS[name]
        f["c_index_harrell"] = figure_ci(harrell, [r, t, e, rep], groups, nb)
        f["c_index_uno"] = figure_ci(safe(uno), [r, t, e, rep], groups, nb)
        f["td_auc"] = {
            f"{h:.0f}d": figure_ci(td_auc(h), [r, t, e, rep], groups, nb) for h in horizons
        }
        curves = [oof[name][k][1] for k in ks]
        if grid.size >= 2 and all(len(c) == len(full) for c in curves):
            surv = np.asarray(curves, dtype=np.float64)
            idx = np.arange(len(ks), dtype=np.float64)
            f["ibs"] = figure_ci(ibs_of(surv), [idx, t, e, rep], groups, nb)
    for peer in [n for n in SURVIVAL_COMPARISONS if n in oof]:
        ks, t, e, rep, groups = arrays(["tumorscope", peer])
        a, b = column("oof", "tumorscope", ks, 0), column("oof", peer, ks, 0)
        c = compare(
            harrell, a, b, [t, e, rep], groups, n_boot=nb, margin=MARGINS["c_index_harrell"]
        )
        comparisons.append({"metric": "c_index_harrell", "peer": peer, **c})
    ceiling = next((c for c in comparisons if c["peer"] == "observable_ceiling"), None)
    return {
        "survival_patients": len({k[1] for k in keys}),
        "survival_rows": len(keys),
        "survival_tau_days": round(tau, 1),
        "survival_grid_days": [round(g, 1) for g in grid.tolist()],
        "survival_horizons_days": [round(float(h), 1) for h in horizons],
        "ratio_to_observable_ceiling": None
        if ceiling is None
        else {"value": ceiling["ratio"], "ci95": ceiling["ratio_ci95"]},
    }


def by_stratum(
    bench: Bench,
    keys: list[Any],
    prob: np.ndarray,
    lab: np.ndarray,
    seeds: np.ndarray,
    groups: np.ndarray,
    auc: Callable[..., float],
    nb: int,
) -> dict[str, dict[str, Any]]:
    """Kaggle AUC per value of each ``strata.csv`` column (None where one class is absent)."""
    out: dict[str, dict[str, Any]] = {}
    for col in STRATA:
        values = np.asarray([bench.strata[k[1]][col] for k in keys], dtype=object)
        out[col] = {}
        for v in sorted(set(values.tolist())):
            m = values == v
            if len(set(lab[m].tolist())) < 2:
                out[col][v] = {"value": None, "ci95": None, "n": int(np.unique(groups[m]).size)}
                continue
            out[col][v] = figure_ci(auc, [prob[m], lab[m], seeds[m]], groups[m], nb)
    return out


def learning_curve(bench: Bench) -> list[dict[str, Any]]:
    """Dice, slice AUC and Kaggle AUC of seed 0 at each curve fraction, on the curve
    patients and the 2D test set (point estimates; the last point is the finished model)."""
    from tumorscope.metrics.classification import roc_auc

    st = bench.store
    ids = set(bench.curve_ids)

    def figures(name: str, kinds: tuple[str, str, str], key: Any) -> dict[str, float | None]:
        seg, slices, images = (st[k].get(name, {}) for k in kinds)
        out: dict[str, float | None] = {}
        if name in SEG_PEERS:
            dice = [v[0] for k, v in seg.items() if k[0] == key and k[1] in ids]
            out["dice"] = round(float(np.mean(dice)), 4) if dice else None
        for metric, store in (("slice_auc", slices), ("kaggle_auc", images)):
            if name not in CLS_PEERS:
                continue
            rows = [v for k, v in store.items() if k[0] == key and (store is images or k[1] in ids)]
            score = np.asarray([v[0] for v in rows], dtype=np.float64)
            label = np.asarray([v[1] for v in rows], dtype=np.int64)
            both = np.unique(label).size == 2
            out[metric] = round(float(roc_auc(score, label)), 4) if both else None
        return out

    models = [n for n in LABELS if n in st["seg"]]
    points = sorted(
        {k[0] for kind in ("curve_seg", "curve_images") for m in st[kind].values() for k in m}
    )
    curve = []
    for fraction in [*points, 1.0]:
        last = fraction == 1.0
        kinds = (
            ("seg", "slices", "images") if last else ("curve_seg", "curve_slices", "curve_images")
        )
        key = 0 if last else fraction
        curve.append({"fraction": fraction, "peers": {n: figures(n, kinds, key) for n in models}})
    return curve


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (wall time on a
    shared machine says little; CPU time says what the benchmark costs on an idle one)."""
    import resource

    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--work", type=Path, default=None, help="keep runs here (default: temp)")
    parser.add_argument(
        "--from-state",
        type=Path,
        default=None,
        help="re-summarise the peers-state.json of an earlier run (no data, no training)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override of tumorscope's multi-task runs (repeatable)",
    )
    parser.add_argument(
        "--survival-only",
        action="store_true",
        help="the survival peers alone (survival_lib.py), every patient out of fold",
    )
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="brain-mri",
        help="with --survival-only: brain MRI (BraTS layout) or PET/CT (HECKTOR layout)",
    )
    args = parser.parse_args()
    if args.profile != "brain-mri" and not args.survival_only:
        parser.error("--profile petct needs --survival-only (the image peers are brain MRI)")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    log.setLevel(logging.INFO)
    if args.survival_only:
        budget = SURVIVAL_QUICK if args.quick else SURVIVAL_FULL
    else:
        budget = QUICK if args.quick else FULL
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        bench = Bench(budget, work, extra=args.set, profile=args.profile)
        if args.from_state is not None:
            bench.load_state(args.from_state)
            return report(args, bench, summarise(bench), t0)
        work.mkdir(parents=True, exist_ok=True)
        bench.synthesize_data(survival=args.survival_only)
        bench.phases["data"] = round(time.perf_counter() - t0, 1)
        bench.run(survival_only=args.survival_only)
        bench.save_state(args.out / f"{stem_of(args)}-state.json")
        result = summarise(bench)
    return report(args, bench, result, t0)


def stem_of(args: argparse.Namespace) -> str:
    """Output file stem of a mode: ``peers``, ``peers-survival``, ``peers-survival-petct``
    (the modes run one after the other into one ``--out`` folder)."""
    if not args.survival_only:
        return "peers"
    return "peers-survival" + ("" if args.profile == "brain-mri" else f"-{args.profile}")


def report(args: argparse.Namespace, bench: Bench, result: dict[str, Any], t0: float) -> int:
    """Write ``peers.json`` / ``peers.md``, print the tables and the JSON line."""
    from tumorscope.runtime import cpu_description, resolve_precision

    budget = bench.b
    model, flags = cpu_description()
    result = {
        "benchmark": "peers",
        "quick": args.quick,
        "cpu": {"model": model, "flags": flags},
        "tumorscope_overrides": args.set,
        "survival_only": args.survival_only,
        "data": {
            "preset": "standard",
            "profile": bench.profile,
            "channels": PROFILES[bench.profile]["channels"],
            "patients": budget.patients,
            "kaggle_images": budget.kaggle,
            "kaggle_test_images": budget.kaggle_test,
            "shape": list(budget.shape),
            "image_size": budget.image_size,
            "test_patients": len({k[1] for m in bench.store["seg"].values() for k in m}),
            "curve_patients": bench.curve_ids,
        },
        "budget": {
            "cpu_seconds": round(bench.target_cpu, 1),
            "clock": "process CPU seconds (user + system, all threads) of each whole training",
            "plans": bench.plans,
            "steps_per_image_model": budget.image_steps,
            "tumorscope_stages": {s: budget.steps(s) for s in DEMO_STEPS},
            "surv_head_refit_steps": budget.steps("surv_head"),
            "batch_size": {"segmentation": 8, "classification": 16},
            "precision": resolve_precision("auto"),
            "warmup_fraction": WARMUP_FRACTION,
            "learning_rates": "each recipe's own; no LR sweep for any model",
            "gate_threshold": bench.gate,
            "curve_fractions": list(CURVE_FRACTIONS),
            "seeds": budget.seeds,
            "survival_folds": budget.folds,
            "survival_repeats": budget.repeats,
            "step_scale_of_demo_recipe": budget.step_scale,
            "margins": MARGINS,
        },
        **result,
        "phases_seconds": bench.phases,
        "seconds": round(time.perf_counter() - t0, 1),
        "cpu_seconds": round(_cpu_seconds(), 1),
    }
    (args.out / f"{stem_of(args)}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    (args.out / f"{stem_of(args)}.md").write_text(md)
    print(md, flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
