"""tumorscope against peers trained in the same run, on the same data, with the same steps.

Prints one JSON object on its last stdout line and writes ``bench-out/peers.json`` and
``bench-out/peers.md``. ``--quick`` runs a small version (tiny volumes, few steps, one
seed, two folds).

    python benchmarks/peers.py [--quick] [--out bench-out] [--work DIR]

Data: the ``standard`` synthetic preset, brain MRI (FLAIR only, as the demo) + a
Kaggle-style folder. Peers (all on the same training patients of each seed):

1. tumorscope multi-task (``configs/demo.yaml``, stages scaled by ``step_scale``);
2. MONAI ``BasicUNet`` + ``DiceCELoss``, segmentation only;
3. MONAI ``DenseNet121``, tumour presence, on the same labelled slices and images;
4. radiomics + Cox: lifelines ``CoxPHFitter`` on ground-truth volume, enhancing fraction, age;
5. tumorscope single-task runs (``seg_only``, ``cls_only``, ``surv_only``);
6. the oracle C-index (true log-hazard of the generator).

Every image model gets ``image_steps`` optimisation steps (the demo's seg_warmup + cls_head
+ joint) at the same batch size and precision (bf16 autocast where supported); survival
refits get the demo's ``surv_head`` steps. Survival figures are out-of-fold over
``folds`` patient-level folds (seed 0); the others are over ``seeds`` seeds on each seed's
test split, compared as paired patient-level bootstraps.
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from peers_lib import (  # noqa: E402
    Budget,
    PeerPredictor,
    compare,
    cox_risk,
    figure_ci,
    markdown,
    ms_per_slice,
    per_seed_mean,
    radiomics_table,
    recipe_overrides,
    train_monai,
)

log = logging.getLogger("peers")

QUICK = Budget(
    patients=16,
    kaggle=40,
    shape=(48, 56, 40),
    image_size=32,
    step_scale=0.01,
    seeds=1,
    folds=2,
    n_boot=200,
)
FULL = Budget(
    patients=200,
    kaggle=200,
    shape=(120, 144, 96),
    image_size=128,
    step_scale=0.12,
    seeds=3,
    folds=5,
    n_boot=500,
)
TIMED_SLICES = 16  # slices of one test volume timed per peer (best of 3 passes)
NI_MARGIN = 0.02  # non-inferiority margin on Dice (multi-task vs seg_only)
LABELS = {
    "tumorscope": "tumorscope multi-task (one model)",
    "monai_basicunet": "MONAI BasicUNet + DiceCELoss",
    "monai_densenet121": "MONAI DenseNet121 classifier",
    "radiomics_cox": "radiomics + Cox (GT volume, ET fraction, age)",
    "seg_only": "tumorscope seg_only",
    "cls_only": "tumorscope cls_only",
    "surv_only": "tumorscope surv_only",
    "oracle": "oracle (true hazard)",
}


class Bench:
    """State of one benchmark run: data, cache and every collected prediction."""

    def __init__(self, budget: Budget, work: Path, extra: Sequence[str] = ()) -> None:
        self.b = budget
        self.extra = list(extra)  # --set overrides of tumorscope's multi-task runs
        self.work = work
        self.data = [work / "data"]
        self.cache = work / "cache"
        self.seg: dict[str, dict[tuple[int, str], tuple[float, float, float]]] = {}
        self.slices: dict[str, dict[tuple[int, str, int], tuple[float, int]]] = {}
        self.images: dict[str, dict[tuple[int, str], tuple[float, int]]] = {}
        self.oof: dict[str, dict[str, float]] = {}
        self.train_s: dict[str, list[float]] = {}
        self.train_cpu: dict[str, list[float]] = {}
        self.ms: dict[str, float] = {}
        self.folds: list[tuple[list[str], list[str]]] = []
        self.table: dict[str, dict[str, float]] = {}

    # ------------------------------------------------------------------ state
    KEYED = ("seg", "slices", "images")  # stores keyed by tuples
    PLAIN = ("oof", "train_s", "train_cpu", "ms", "folds", "table")

    def save_state(self, path: Path) -> None:
        """Write every collected prediction as JSON (re-summarise with ``--from-state``)."""
        state: dict[str, Any] = {k: getattr(self, k) for k in self.PLAIN}
        for k in self.KEYED:
            store = getattr(self, k)
            state[k] = {n: [[list(key), list(v)] for key, v in d.items()] for n, d in store.items()}
        path.write_text(json.dumps(state))

    def load_state(self, path: Path) -> None:
        """Read what :meth:`save_state` wrote."""
        state = json.loads(path.read_text())
        for k in self.PLAIN:
            setattr(self, k, state[k])
        self.folds = [(list(a), list(b)) for a, b in self.folds]
        for k in self.KEYED:
            setattr(
                self,
                k,
                {n: {tuple(key): tuple(v) for key, v in rows} for n, rows in state[k].items()},
            )

    # ------------------------------------------------------------------ training
    def cfg(self, config: str, seed: int, fold: int) -> Any:
        from tumorscope.config import load_config

        path = ROOT / "configs" / f"{config}.yaml"
        overrides = recipe_overrides(config, self.b, seed=seed, fold=fold)
        return load_config(path, overrides=overrides + (self.extra if config == "demo" else []))

    def train_tumorscope(self, config: str, seed: int, fold: int) -> tuple[Any, dict[str, Any]]:
        from tumorscope.inference.predictor import Predictor
        from tumorscope.training.run import train_run

        run = self.work / "runs" / f"{config}-s{seed}-f{fold}"
        t0, c0 = time.perf_counter(), time.process_time()
        train_run(cfg=self.cfg(config, seed, fold), data=self.data, out=run, cache=self.cache)
        name = "tumorscope" if config == "demo" else config
        self.train_s.setdefault(name, []).append(time.perf_counter() - t0)
        self.train_cpu.setdefault(name, []).append(time.process_time() - c0)
        log.info("trained %s seed %d fold %d in %.0f s", config, seed, fold, self.train_s[name][-1])
        pred = Predictor.from_run(run)
        if config != "demo":
            pred = PeerPredictor(pred, keep_base=True)
        return pred, pred.manifest.splits

    def train_peer(self, kind: str, seed: int) -> tuple[Any, dict[str, Any]]:
        import torch
        from monai.networks.nets import BasicUNet, DenseNet121

        from tumorscope.inference.predictor import Predictor
        from tumorscope.runtime import resolve_precision, seed_everything
        from tumorscope.training.data import StageData

        config = "seg_only" if kind == "monai_basicunet" else "cls_only"
        cfg = self.cfg(config, seed, 0)
        data = StageData.build(data=self.data, cfg=cfg, cache=self.cache)
        stage = cfg.stages[0]
        seed_everything(seed)
        channels = len(cfg.data.channels)
        net: torch.nn.Module
        if kind == "monai_basicunet":
            net = BasicUNet(
                spatial_dims=2, in_channels=channels, out_channels=len(cfg.model.regions)
            )
            target, pos_weight = "segmentation", 1.0
        else:
            net = DenseNet121(spatial_dims=2, in_channels=channels, out_channels=1)
            target, pos_weight = "tumour", data.tumour_pos_weight()
        c0 = time.process_time()
        secs = train_monai(
            net,
            data.train_batches(stage, seed=seed),
            stage,
            target=target,
            precision=resolve_precision(cfg.runtime.precision),
            pos_weight=pos_weight,
        )
        self.train_s.setdefault(kind, []).append(secs)
        self.train_cpu.setdefault(kind, []).append(time.process_time() - c0)
        log.info("trained %s seed %d: %d steps in %.0f s", kind, seed, stage.max_steps, secs)
        base = Predictor.from_config(cfg)
        if kind == "monai_basicunet":
            return PeerPredictor(base, seg_net=net), data.split_patients()
        return PeerPredictor(base, cls_net=net), data.split_patients()

    # ------------------------------------------------------------------ collection
    def collect(
        self, name: str, pred: Any, splits: dict[str, Any], seed: int, *, test: bool, oof: bool
    ) -> None:
        from tumorscope.evaluation.collect import collect_held_out

        test_ids, val_ids = set(splits["test"]), set(splits["val"])
        seen = {p for ids in splits.values() for p in ids}
        wanted = (test_ids if test else set()) | (val_ids if oof else set())
        t0 = time.perf_counter()
        held = collect_held_out(pred, self.data, wanted, seen)
        log.info("collected %s seed %d in %.0f s", name, seed, time.perf_counter() - t0)
        if oof:
            self.oof.setdefault(name, {}).update(
                {p: r for p, r in held.risk.items() if p in val_ids}
            )
        if not test:
            return
        seg = self.seg.setdefault(name, {})
        for pid, d, h in zip(held.case_ids, held.dice, held.hd95, strict=True):
            if pid in test_ids:
                seg[(seed, pid)] = (d, h, 0.0)
        for i, (pid, z) in enumerate(zip(held.slice_patient, held.slice_index, strict=True)):
            if pid in test_ids:
                key = (seed, pid, z)
                self.slices.setdefault(name, {})[key] = (held.slice_prob[i], held.slice_label[i])
        for i, iid in enumerate(held.image_ids):
            if iid in test_ids or iid not in seen:
                key2 = (seed, f"{held.image_source[i]}:{iid}")
                self.images.setdefault(name, {})[key2] = (held.image_prob[i], held.image_label[i])
        if name not in self.ms and held.case_ids:
            self.ms[name] = self.time_inference(pred, held.case_ids[0])

    def time_inference(self, pred: Any, pid: str) -> float:
        from tumorscope.data.layout import discover, load_case
        from tumorscope.data.transforms import preprocess_volume

        case = next(c for c in discover(self.data).cases if c.patient_id == pid)
        loaded = load_case(case, pred.spec.channels)
        slices = preprocess_volume(loaded, pred.spec, source=case.source, all_slices=True)
        return ms_per_slice(pred.forward_slices, slices.images[:TIMED_SLICES])

    def run(self, *, survival_only: bool = False) -> None:
        """Train and collect every peer; ``survival_only``: tumorscope's folds and the
        survival references alone (no image peers, no single-task runs)."""
        from tumorscope.training.data import StageData

        # Build the shared preprocessing cache first: no peer's training time includes it.
        StageData.build(data=self.data, cfg=self.cfg("demo", 0, 0), cache=self.cache)
        for seed in range(0 if survival_only else self.b.seeds):
            for config in ("demo", "seg_only", "cls_only"):
                pred, splits = self.train_tumorscope(config, seed, 0)
                name = "tumorscope" if config == "demo" else config
                self.collect(
                    name, pred, splits, seed, test=True, oof=config == "demo" and seed == 0
                )
                if config == "demo" and seed == 0:
                    self.folds.append((list(splits["train"]), list(splits["val"])))
            for kind in ("monai_basicunet", "monai_densenet121"):
                pred, splits = self.train_peer(kind, seed)
                self.collect(kind, pred, splits, seed, test=True, oof=False)
        for fold in range(self.b.folds):
            if fold > 0 or survival_only:
                pred, splits = self.train_tumorscope("demo", 0, fold)
                self.collect("tumorscope", pred, splits, 0, test=False, oof=True)
                self.folds.append((list(splits["train"]), list(splits["val"])))
            if survival_only:
                continue
            pred, splits = self.train_tumorscope("surv_only", 0, fold)
            self.collect("surv_only", pred, splits, 0, test=False, oof=True)
        table = radiomics_table(self.data)
        cox: dict[str, float] = {}
        for train, val in self.folds:
            cox.update(cox_risk(table, train, val))
        self.oof["radiomics_cox"] = cox
        self.oof["oracle"] = {p: r["true_risk"] for p, r in table.items()}
        self.table = table


def summarise(bench: Bench) -> dict[str, Any]:
    """Per-peer figures, paired comparisons and goals from the collected predictions."""
    from tumorscope.metrics.classification import roc_auc
    from tumorscope.metrics.survival import harrell_c_index, uno_c_index

    nb = bench.b.n_boot
    mean = per_seed_mean(lambda x: float(np.mean(x)))
    auc = per_seed_mean(roc_auc)

    def seg_arrays(name: str, keys: list[Any], col: int) -> np.ndarray:
        return np.asarray([bench.seg[name][k][col] for k in keys], dtype=np.float64)

    def cls_arrays(store: dict[str, Any], name: str, keys: list[Any]) -> np.ndarray:
        return np.asarray([store[name][k][0] for k in keys], dtype=np.float64)

    def keys_of(store: dict[str, Any], names: list[str]) -> list[Any]:
        common = set.intersection(*(set(store.get(n, {})) for n in names))
        return sorted(common)

    peers: dict[str, dict[str, Any]] = {n: {"label": LABELS[n]} for n in LABELS}
    comparisons: list[dict[str, Any]] = []
    image_peers = bool(bench.seg)  # False for a --survival-only run
    # ---- segmentation
    for name in ("tumorscope", "seg_only", "monai_basicunet") if image_peers else ():
        keys = keys_of(bench.seg, [name])
        seeds = np.asarray([k[0] for k in keys])
        groups = np.asarray([k[1] for k in keys], dtype=object)
        for col, key in ((0, "dice"), (1, "hd95_mm")):
            peers[name][key] = figure_ci(mean, [seg_arrays(name, keys, col), seeds], groups, nb)
    for peer in ("monai_basicunet", "seg_only") if image_peers else ():
        keys = keys_of(bench.seg, ["tumorscope", peer])
        seeds = np.asarray([k[0] for k in keys])
        groups = np.asarray([k[1] for k in keys], dtype=object)
        for col, key in ((0, "dice"), (1, "hd95_mm")):
            a, b = seg_arrays("tumorscope", keys, col), seg_arrays(peer, keys, col)
            c = compare(mean, a, b, [seeds], groups, n_boot=nb, lower_is_better=col == 1)
            if peer == "seg_only" and key == "dice":
                c["non_inferior"] = bool(
                    np.isfinite(c["delta_ci95"][0]) and c["delta_ci95"][0] > -NI_MARGIN
                )
            comparisons.append({"metric": key, "peer": peer, **c})
    # ---- classification: slices of test volumes, and the Kaggle-style folder
    stores = ((bench.slices, "slice_auc"), (bench.images, "kaggle_auc")) if image_peers else ()
    for store, key in stores:
        for name in ("tumorscope", "cls_only", "monai_densenet121"):
            keys = keys_of(store, [name])
            lab = np.asarray([store[name][k][1] for k in keys])
            seeds = np.asarray([k[0] for k in keys])
            groups = np.asarray([k[1] for k in keys], dtype=object)
            peers[name][key] = figure_ci(
                auc, [cls_arrays(store, name, keys), lab, seeds], groups, nb
            )
        for peer in ("monai_densenet121", "cls_only"):
            keys = keys_of(store, ["tumorscope", peer])
            lab = np.asarray([store["tumorscope"][k][1] for k in keys])
            seeds = np.asarray([k[0] for k in keys])
            groups = np.asarray([k[1] for k in keys], dtype=object)
            a, b = cls_arrays(store, "tumorscope", keys), cls_arrays(store, peer, keys)
            comparisons.append(
                {"metric": key, "peer": peer, **compare(auc, a, b, [lab, seeds], groups, n_boot=nb)}
            )
    # ---- survival: out-of-fold risks
    pids = sorted(set.intersection(*(set(v) for v in bench.oof.values())))
    t = np.asarray([bench.table[p]["time"] for p in pids])
    e = np.asarray([bench.table[p]["event"] for p in pids]).astype(bool)
    tau = float(np.quantile(t, 0.8)) if t.size else 0.0
    groups = np.asarray(pids, dtype=object)

    def uno(r: np.ndarray, tt: np.ndarray, ee: np.ndarray) -> float:
        return uno_c_index(r, tt, ee, t, e, tau=tau)

    risks = {n: np.asarray([bench.oof[n][p] for p in pids]) for n in bench.oof}
    for name, r in risks.items():
        peers[name]["c_index_harrell"] = figure_ci(harrell_c_index, [r, t, e], groups, nb)
        peers[name]["c_index_uno"] = figure_ci(uno, [r, t, e], groups, nb)
    for peer in [n for n in ("radiomics_cox", "surv_only", "oracle") if n in risks]:
        c = compare(harrell_c_index, risks["tumorscope"], risks[peer], [t, e], groups, n_boot=nb)
        comparisons.append({"metric": "c_index_harrell", "peer": peer, **c})
    for name, secs in bench.train_s.items():
        peers[name]["train_seconds"] = round(float(np.mean(secs)), 1)
        peers[name]["train_cpu_seconds"] = round(float(np.mean(bench.train_cpu[name])), 1)
    for name, ms in bench.ms.items():
        peers[name]["infer_ms_per_slice"] = round(ms, 2)

    def cmp(metric: str, peer: str) -> dict[str, Any]:
        found = (c for c in comparisons if c["metric"] == metric and c["peer"] == peer)
        return next(found, {})  # absent in a --survival-only run: its goals are None

    goals = {
        "dice_ge_monai_basicunet": cmp("dice", "monai_basicunet").get("a_better"),
        "slice_auc_ge_densenet121": cmp("slice_auc", "monai_densenet121").get("a_better"),
        "kaggle_auc_ge_densenet121": cmp("kaggle_auc", "monai_densenet121").get("a_better"),
        "c_index_ge_radiomics_cox": cmp("c_index_harrell", "radiomics_cox").get("a_better"),
        "multitask_dice_non_inferior": cmp("dice", "seg_only").get("non_inferior"),
        "multitask_slice_auc_ge_cls_only": cmp("slice_auc", "cls_only").get("a_better"),
        "multitask_kaggle_auc_ge_cls_only": cmp("kaggle_auc", "cls_only").get("a_better"),
    }
    return {
        "peers": peers,
        "comparisons": comparisons,
        "goals": goals,
        "survival_patients": len(pids),
        "survival_tau_days": round(tau, 1),
    }


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
        help="tumorscope's survival folds, radiomics + Cox and the oracle alone",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    log.setLevel(logging.INFO)
    budget = QUICK if args.quick else FULL
    from tumorscope.synthetic import synthesize

    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        bench = Bench(budget, work, extra=args.set)
        if args.from_state is not None:
            bench.load_state(args.from_state)
            return report(args, budget, summarise(bench), t0)
        work.mkdir(parents=True, exist_ok=True)
        if not (work / "data" / "brats").is_dir():  # a kept --work folder reuses its data
            synthesize(
                profile="brain-mri",
                patients=budget.patients,
                out=work / "data",
                kaggle=budget.kaggle,
                difficulty="standard",
                seed=0,
                shape=budget.shape,
                workers=2,
            )
        bench.run(survival_only=args.survival_only)
        bench.save_state(args.out / "peers-state.json")
        result = summarise(bench)
    return report(args, budget, result, t0)


def report(args: argparse.Namespace, budget: Budget, result: dict[str, Any], t0: float) -> int:
    """Write ``peers.json`` / ``peers.md``, print the table and the JSON line."""
    from tumorscope.runtime import resolve_precision

    result = {
        "benchmark": "peers",
        "quick": args.quick,
        "tumorscope_overrides": args.set,
        "survival_only": args.survival_only,
        "data": {
            "preset": "standard",
            "profile": "brain-mri",
            "channels": ["flair"],
            "patients": budget.patients,
            "kaggle_images": budget.kaggle,
            "shape": list(budget.shape),
            "image_size": budget.image_size,
        },
        "budget": {
            "steps_per_image_model": budget.image_steps,
            "tumorscope_stages": {
                s: budget.steps(s) for s in ("seg_warmup", "cls_head", "joint", "surv_head")
            },
            "surv_head_refit_steps": budget.steps("surv_head"),
            "batch_size": {"segmentation": 8, "classification": 16},
            "precision": resolve_precision("auto"),
            "seeds": budget.seeds,
            "survival_folds": budget.folds,
            "step_scale_of_demo_recipe": budget.step_scale,
        },
        **result,
        "seconds": round(time.perf_counter() - t0, 1),
        "cpu_seconds": round(_cpu_seconds(), 1),
    }
    (args.out / "peers.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    (args.out / "peers.md").write_text(md)
    print(md, flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
