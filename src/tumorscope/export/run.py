"""``tumorscope export``: a trained run as a self-describing ONNX Runtime folder.

:func:`export_run` traces the run's network into its three graphs
(:mod:`tumorscope.export.graphs`), checks them against PyTorch on real slices of the run's
own data before anything else (parity), for ``onnx-int8`` quantises them on real training
slices and keeps the variant that is fastest within the accuracy budget on the validation
split (:mod:`tumorscope.export.quantise`), and writes the folder: the graphs, the run's
manifest with an ``export`` entry (preprocessing, calibration, labels, splits — the same
file a run has), its out-of-domain model and seen-units record, ``export.json`` and
``export.md``, and the sha256 of every file. ``Predictor.from_run(DIR)`` loads it on the
ONNX Runtime backend, so ``predict``, ``evaluate`` and ``serve`` run on it unchanged.

Nothing is written unless the export succeeds: the folder is built beside its destination
and renamed into place at the end; a refused export (parity or accuracy over its budget)
leaves no folder.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tumorscope.data.layout import discover
from tumorscope.data.transforms import preprocess_volume
from tumorscope.data.types import DatasetIndex
from tumorscope.evaluation.collect import collect_units
from tumorscope.evaluation.sections import compute_metrics
from tumorscope.evaluation.seen import read_run_seen, run_seen_file, select_held_out
from tumorscope.export.graphs import OPSET, export_graphs
from tumorscope.export.prune import prune_run
from tumorscope.export.quantise import METHODS, by_op, float_fallbacks, kernel_profile, quantise
from tumorscope.fileio import (
    atomic_save_tensors,
    atomic_write_bytes,
    atomic_write_json,
    sha256_file,
)
from tumorscope.inference.inputs import cut, read_2d
from tumorscope.inference.ood import DomainCheck
from tumorscope.inference.predictor import Predictor
from tumorscope.runs import Backend, LoadedRun, TorchBackend, load_run
from tumorscope.runs.files import DOMAIN_FILE, MANIFEST_FILE, read_manifest
from tumorscope.runs.onnx import PATIENT_FILE, TAIL_FILE, TRUNK_FILE, DropoutMask, OnnxBackend
from tumorscope.runtime import runtime_info

log = logging.getLogger(__name__)

FORMATS = ("onnx", "onnx-int8")
EXPORT_JSON = "export.json"
EXPORT_MD = "export.md"
SEEN_FILE = "seen.json"
# Validation figures compared against the PyTorch run; the budgeted ones must stay within
# export.max_accuracy_change.
FIGURES = {
    "dice": "segmentation.dice",
    "hd95_mm": "segmentation.hd95_mm",
    "slice_auc": "classification.slice_roc_auc",
    "image_auc": "classification.image_roc_auc",
    "c_index": "survival.c_index",
    "ece": "calibration.ece",
}
BUDGETED = ("dice", "slice_auc", "image_auc")
LATENCY_BATCH = 16
LATENCY_RUNS = 5
VALIDATION_BOOT = 50
PARITY_SLICES = 64
PRUNE_STEPS = 150


class ExportError(Exception):
    """An export that cannot be made or was refused; ``str(err)`` is ``"PATH: fault"``."""

    def __init__(self, path: str | Path, fault: str) -> None:
        self.path = Path(path)
        self.fault = fault
        super().__init__(f"{path}: {fault}")


@dataclass
class ExportResult:
    """What :func:`export_run` wrote.

    Attributes:
        out: The export folder.
        report: The content of ``export.json``.
    """

    out: Path
    report: dict[str, Any]


# ---------------------------------------------------------------------- checks
def _check_destination(out: Path, overwrite: bool) -> None:
    """``out`` must be absent or empty, or with ``overwrite`` an earlier export."""
    if not os.path.lexists(out):
        return
    if not out.is_dir() or out.is_symlink():
        raise ExportError(out, "exists and is not a folder; nothing written")
    if not any(out.iterdir()):
        return
    try:
        is_export = isinstance(read_manifest(out).get("export"), dict)
    except Exception:  # any unreadable manifest means "not an export we made"
        is_export = False
    if not is_export:
        raise ExportError(
            out, "exists and is not an export; nothing written (choose another --out)"
        )
    if not overwrite:
        raise ExportError(out, "holds an export already; pass --overwrite to replace it")


def _source(run: Path) -> LoadedRun:
    loaded = load_run(run)
    if loaded.manifest.export is not None:
        raise ExportError(run, "is an export already; export the run it was made from")
    if loaded.manifest.is_stage or loaded.calibration is None:
        raise ExportError(run, "is not a finished run (no calibration): train it to the end first")
    if not isinstance(loaded.backend, TorchBackend):
        raise ExportError(run, "has no PyTorch network to export")
    return loaded


def _data_roots(run: Path, loaded: LoadedRun, data: Sequence[str | Path] | None) -> list[Path]:
    roots = [Path(d) for d in data] if data else [Path(d) for d in loaded.manifest.data]
    if not roots:
        raise ExportError(
            run, "records no data folders (made before they were recorded): pass --data"
        )
    for root in roots:
        if not root.exists():
            raise ExportError(root, "data folder not found (pass --data with the run's data)")
    return roots


# ---------------------------------------------------------------------- slices
def real_slices(
    predictor: Predictor, index: DatasetIndex, patients: set[str], limit: int, seed: int = 0
) -> np.ndarray:
    """Up to ``limit`` preprocessed slices ``(N, C, S, S)`` of the given patients, as the
    network sees them: volume slices chosen as training chooses them, and 2D images, drawn
    evenly by a seeded generator."""
    spec, chunks = predictor.spec, []
    for case in index.cases:
        if case.patient_id in patients:
            loaded, src, _ = predictor.load_volume(case)
            chunks.append(preprocess_volume(loaded, spec, source=src).images)
    for item in index.images:
        if item.patient_id in patients:
            chunks.append(cut(read_2d(item.path, None, 0, 1, spec), spec)[0][None])
    if not chunks:
        raise ExportError(
            index.roots[0] if index.roots else "<data>",
            f"none of the run's {len(patients)} patients of this split is in the data",
        )
    images = np.concatenate(chunks).astype(np.float32)
    if images.shape[0] > limit:
        keep = np.random.default_rng(seed).choice(images.shape[0], size=limit, replace=False)
        images = images[np.sort(keep)]
    return images


def parity(reference: Predictor, backend: Backend, images: np.ndarray) -> dict[str, float]:
    """Figures of ``backend`` against ``reference``'s network on ``images``: the largest
    tumour-logit and calibrated-probability differences, the largest segmentation
    probability difference and the share of mask pixels (``p >= 0.5``) that agree."""
    a = reference.backend.forward_slices(images)
    b = backend.forward_slices(images)
    out = {"slices": float(images.shape[0])}
    if "tumour_logit" in a:
        out["max_logit_difference"] = float(np.abs(a["tumour_logit"] - b["tumour_logit"]).max())
        pa = reference.calibrated_probability(a["tumour_logit"])
        pb = reference.calibrated_probability(b["tumour_logit"])
        out["max_probability_difference"] = float(np.abs(pa - pb).max())
    out["max_seg_probability_difference"] = float(np.abs(a["seg_prob"] - b["seg_prob"]).max())
    out["mask_agreement"] = float(((a["seg_prob"] >= 0.5) == (b["seg_prob"] >= 0.5)).mean())
    if "embedding" in a:
        out["max_embedding_difference"] = float(np.abs(a["embedding"] - b["embedding"]).max())
    return out


# ---------------------------------------------------------------------- figures
def _figure(metrics: Mapping[str, Any], key: str) -> float | None:
    node: Any = metrics
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    value = node.get("value") if isinstance(node, Mapping) else node
    return None if value is None or not np.isfinite(value) else float(value)


class Validation:
    """The validation split of a run, scored through any backend exactly as ``evaluate``
    scores it (the same predictor, held-out selection and figures)."""

    def __init__(self, loaded: LoadedRun, run: Path, index: DatasetIndex) -> None:
        self.loaded, self.index = loaded, index
        splits = loaded.manifest.splits or {}
        self.chosen = select_held_out(
            index,
            split="val",
            splits=splits,
            seen=read_run_seen(run),
            seen_file=run_seen_file(run),
        )

    def predictor(self, backend: Backend, of: LoadedRun | None = None) -> Predictor:
        run = of or self.loaded
        return Predictor(
            backend,
            run.config,
            run.manifest,
            calibration=run.calibration,
            domain=DomainCheck(run.domain),
        )

    def figures(self, backend: Backend, of: LoadedRun | None = None) -> dict[str, float | None]:
        """The validation figures of ``backend`` with the calibration and domain model of
        ``of`` (default: the run's own)."""
        predictor = self.predictor(backend, of)
        held = collect_units(predictor, self.index, self.chosen)
        metrics = compute_metrics(held, predictor.calibration, n_boot=VALIDATION_BOOT)
        return {name: _figure(metrics, key) for name, key in FIGURES.items()}


def _changes(
    got: Mapping[str, float | None], reference: Mapping[str, float | None]
) -> dict[str, float | None]:
    return {
        k: None if got.get(k) is None or reference.get(k) is None else float(got[k] - reference[k])  # type: ignore[operator]
        for k in FIGURES
    }


def _worst_budgeted(changes: Mapping[str, float | None]) -> tuple[str, float]:
    found = [(k, abs(v)) for k, v in changes.items() if k in BUDGETED and v is not None]
    return max(found, key=lambda kv: kv[1]) if found else ("none", 0.0)


def _scored(
    figures: dict[str, float | None],
    reference: Mapping[str, float | None],
    budget: float,
    latency: dict[str, float],
    size_bytes: int,
) -> dict[str, Any]:
    """A variant's report entry: its figures, their changes against the run as trained,
    the largest budgeted change and whether it is within ``budget``."""
    changes = _changes(figures, reference)
    worst = _worst_budgeted(changes)
    return {
        "validation": figures,
        "change": changes,
        "worst": {"figure": worst[0], "change": worst[1]},
        "within_budget": worst[1] <= budget,
        "latency": latency,
        "bytes": size_bytes,
    }


def latency_ms(forward: Callable[[np.ndarray], object], images: np.ndarray) -> dict[str, float]:
    """Median and 95th-percentile milliseconds of ``forward`` on one batch of ``images``
    (after one warm-up call), and slices per second."""
    forward(images)
    times = []
    for _ in range(LATENCY_RUNS):
        t0 = time.perf_counter()
        forward(images)
        times.append((time.perf_counter() - t0) * 1000.0)
    p50 = float(np.median(times))
    return {
        "p50_ms": round(p50, 2),
        "p95_ms": round(float(np.percentile(times, 95)), 2),
        "slices_per_s": round(images.shape[0] / (p50 / 1000.0), 1),
        "batch": float(images.shape[0]),
    }


def _graph_bytes(folder: Path) -> int:
    return sum(
        (folder / f).stat().st_size
        for f in (TRUNK_FILE, TAIL_FILE, PATIENT_FILE)
        if (folder / f).is_file()
    )


# ---------------------------------------------------------------------- int8
def _feeds(
    fp32: OnnxBackend, images: np.ndarray
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """Calibration batches of the trunk (images) and of the tail (the trunk's real outputs
    with dropout off), all of one size (the histogram calibrators stack them)."""
    trunk, tail = [], []
    step = min(LATENCY_BATCH, images.shape[0])
    images = images[: images.shape[0] - images.shape[0] % step]
    for start in range(0, images.shape[0], step):
        batch = images[start : start + step]
        state, _ = fp32.run_trunk(batch)
        n = batch.shape[0]
        trunk.append({"image": fp32.pad_slices(batch)[0]})
        tail.append(
            {
                "mid": state["mid"],
                "readout": state["readout"],
                **{m.name: m.ones(n) for m in fp32.masks},
            }
        )
    return trunk, tail


def _quantised_variant(
    src: Path,
    dst: Path,
    feeds: tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]],
    method: str,
    keep_float: Mapping[str, Sequence[str]],
) -> dict[str, Any]:
    """Quantise trunk and tail into ``dst`` with ``method``, keeping ``keep_float`` nodes
    (graph → names) and every node the first profile shows falling back to float; the
    variant's description."""
    dst.mkdir(parents=True, exist_ok=True)
    if (src / PATIENT_FILE).is_file():  # the survival head stays in float: a few kB
        shutil.copy2(src / PATIENT_FILE, dst / PATIENT_FILE)
    described: dict[str, Any] = {"method": method, "graphs": {}}
    for name, graph_feeds in ((TRUNK_FILE, feeds[0]), (TAIL_FILE, feeds[1])):
        kept = list(keep_float.get(name, ()))
        quantise(src / name, dst / name, graph_feeds, method=method, exclude=kept)
        fallen = float_fallbacks(dst / name, kernel_profile(dst / name, graph_feeds[:1], runs=1))
        if fallen:
            kept = sorted({*kept, *fallen})
            quantise(src / name, dst / name, graph_feeds, method=method, exclude=kept)
        described["graphs"][name] = {"kept_float": kept, "fell_back_first": fallen}
    return described


def _head_nodes(path: Path) -> list[str]:
    """The tail's slice-head nodes (Gemm/MatMul: the linear layers of the heads)."""
    import onnx

    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type in ("Gemm", "MatMul")]


def _end_convs(path: Path) -> list[str]:
    """The trunk's first convolution (it reads the image itself)."""
    import onnx

    convs = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]
    return convs[:1]


# ---------------------------------------------------------------------- export
def export_run(
    *,
    run: str | Path,
    out: str | Path,
    format: str = "onnx",
    data: Sequence[str | Path] | None = None,
    calibration_slices: int | None = None,
    max_accuracy_change: float | None = None,
    prune: float | None = None,
    prune_steps: int = PRUNE_STEPS,
    cache: str | Path | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """``tumorscope export``: write ``out``, an ONNX Runtime export of ``run``.

    Args:
        run: A finished run folder.
        out: The export folder (absent, empty, or with ``overwrite`` an earlier export).
        format: ``onnx`` (FP32) or ``onnx-int8`` (static INT8, QDQ).
        data: Data folders for the parity check, the INT8 calibration and the accuracy
            check (default: the folders the run was trained on, from its manifest).
        calibration_slices: Training slices the INT8 ranges come from (default: the run's
            ``export.calibration_slices``).
        max_accuracy_change: Largest Dice/AUC change on the validation split (default:
            the run's ``export.max_accuracy_change``), against the run as trained.
        prune: Share of the channels of every prunable layer to remove before export
            (:mod:`tumorscope.export.prune`): the smaller network is fine-tuned for
            ``prune_steps`` steps and its calibration, survival baseline and domain model
            fitted again on the run's splits. None: no pruning.
        prune_steps: Fine-tune steps after pruning.
        cache: Preprocessing cache of the run's data for the fine-tune (default: the
            ``<run>-cache`` folder beside the run when it exists, else a temporary one).
        overwrite: Replace an earlier export in ``out``.

    Raises:
        ExportError: a bad destination, a run that cannot be exported, parity or accuracy
            over its budget (nothing is written then).
        CheckpointError, DataError: the run or its data cannot be read.
    """
    run, out = Path(run), Path(out)
    if format not in FORMATS:
        raise ExportError(out, f"format {format!r} is not one of {list(FORMATS)}")
    _check_destination(out, overwrite)
    loaded = _source(run)
    cfg = loaded.config.export
    budget = cfg.max_accuracy_change if max_accuracy_change is None else float(max_accuracy_change)
    n_cal = cfg.calibration_slices if calibration_slices is None else int(calibration_slices)
    if not 0 <= budget <= 1 or n_cal < 1:
        raise ExportError(
            out, f"accuracy budget {budget} or calibration slices {n_cal} out of range"
        )
    roots = _data_roots(run, loaded, data)
    index = discover(roots)
    splits = loaded.manifest.splits or {}
    if "val" not in splits or "train" not in splits:
        raise ExportError(run, "has no train and val splits to calibrate and check an export on")
    if prune is not None and not 0.0 < prune < 1.0:
        raise ExportError(out, f"--prune {prune} is not a share of channels in (0, 1)")
    if prune_steps < 0:
        raise ExportError(out, f"--prune-steps {prune_steps} is negative")
    side = int(loaded.spec.image_size)
    size = side + (-side % loaded.model.size_multiple)
    started = time.perf_counter()
    staging = out.parent / f".{out.name}.export-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        exported, pruning = loaded, None
        if prune is not None:
            near = run.parent / f"{run.name}-cache"
            where = (
                Path(cache) if cache is not None else near if near.is_dir() else staging / "cache"
            )
            done = prune_run(
                loaded.model, loaded.config, roots, where, ratio=prune, steps=prune_steps, size=size
            )
            exported = dataclasses.replace(
                loaded,
                backend=TorchBackend(done.model),
                calibration=done.finished.calibration,
                domain=done.finished.domain,
                manifest=loaded.manifest.replace(
                    calibration=done.finished.calibration, metrics=done.finished.metrics
                ),
            )
            pruning = done.report
        model = exported.model
        torch_predictor = Predictor.from_loaded(exported)
        fp32_dir = staging / "fp32"
        fp32_dir.mkdir()
        masks = export_graphs(model, fp32_dir, size)

        def open_backend(folder: Path) -> OnnxBackend:
            return OnnxBackend.of_network(folder, model, size, masks)

        fp32 = open_backend(fp32_dir)
        val_images = real_slices(torch_predictor, index, set(splits["val"]), PARITY_SLICES)
        checked = parity(torch_predictor, fp32, val_images)
        _check_parity(checked, cfg.parity_probability, cfg.parity_mask_agreement, out)
        validation = Validation(loaded, run, index)
        reference = validation.figures(loaded.backend)
        batch = val_images[:LATENCY_BATCH]
        report: dict[str, Any] = {
            "format": format,
            "source": str(run),
            "cpu": _cpu(),
            "parity": checked,
            "budget": {"max_accuracy_change": budget, "figures": list(BUDGETED)},
            "pruning": pruning,
            "variants": {
                "pytorch": {
                    "validation": reference,
                    "latency": latency_ms(loaded.backend.forward_slices, batch),
                    "bytes": int((run / "model.safetensors").stat().st_size),
                },
            },
        }
        if pruning is not None:
            report["variants"]["pytorch-pruned"] = _scored(
                validation.figures(exported.backend, exported),
                reference,
                budget,
                latency_ms(exported.backend.forward_slices, batch),
                sum(t.numel() * t.element_size() for t in model.state_dict().values()),
            )
        report["variants"]["onnx"] = _scored(
            validation.figures(fp32, exported),
            reference,
            budget,
            latency_ms(fp32.forward_slices, batch),
            _graph_bytes(fp32_dir),
        )
        chosen_dir, chosen_name, quantisation = fp32_dir, "onnx", None
        if format == "onnx" and not report["variants"]["onnx"]["within_budget"]:
            worst = report["variants"]["onnx"]["worst"]
            raise ExportError(
                out,
                f"refused: the export changes the validation {worst['figure']} by "
                f"{worst['change']:.4f}, over the budget of {budget:.4f} "
                "(export.max_accuracy_change); nothing written",
            )
        if format == "onnx-int8":
            cal_images = real_slices(torch_predictor, index, set(splits["train"]), n_cal, seed=1)
            chosen_dir, chosen_name, quantisation = _choose_int8(
                out,
                staging,
                fp32_dir,
                fp32,
                cal_images,
                batch,
                validation,
                exported,
                reference,
                budget,
                open_backend,
                report,
            )
        report["chosen"] = chosen_name
        chosen_backend = open_backend(chosen_dir)
        profile = kernel_profile(
            chosen_dir / TRUNK_FILE, [{"image": chosen_backend.pad_slices(batch)[0]}], runs=2
        )
        report["trunk_profile"] = by_op(profile)
        report["seconds"] = round(time.perf_counter() - started, 1)
        final = staging / "final"
        _write_folder(final, chosen_dir, run, exported, masks, size, format, report, quantisation)
        _replace(out, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(out=out, report=report)


def _check_parity(
    figures: Mapping[str, float], max_prob: float, min_agree: float, where: Path
) -> None:
    prob = figures.get("max_probability_difference", 0.0)
    if prob > max_prob:
        raise ExportError(
            where,
            f"FP32 parity failed: tumour probability differs from PyTorch by {prob:.2e} "
            f"(tolerance {max_prob:.0e}); nothing written",
        )
    if figures["mask_agreement"] < min_agree:
        raise ExportError(
            where,
            f"FP32 parity failed: {figures['mask_agreement']:.4%} of mask pixels agree with "
            f"PyTorch (at least {min_agree:.2%} needed); nothing written",
        )


def _choose_int8(
    out: Path,
    staging: Path,
    fp32_dir: Path,
    fp32: OnnxBackend,
    cal_images: np.ndarray,
    batch: np.ndarray,
    validation: Validation,
    exported: LoadedRun,
    reference: Mapping[str, float | None],
    budget: float,
    open_backend: Callable[[Path], OnnxBackend],
    report: dict[str, Any],
) -> tuple[Path, str, dict[str, Any]]:
    """Quantise with each calibration method, then with the best method and further nodes
    kept in float; the fastest variant within the budget, or :class:`ExportError`."""
    feeds = _feeds(fp32, cal_images)
    candidates: list[tuple[str, str, dict[str, list[str]]]] = [
        (f"int8-{m}", m, {}) for m in METHODS
    ]
    scored: list[tuple[str, Path, dict[str, Any]]] = []

    def score(name: str, method: str, keep: Mapping[str, Sequence[str]]) -> None:
        where = staging / name
        described = _quantised_variant(fp32_dir, where, feeds, method, keep)
        backend = open_backend(where)
        entry = {
            **described,
            **_scored(
                validation.figures(backend, exported),
                reference,
                budget,
                latency_ms(backend.forward_slices, batch),
                _graph_bytes(where),
            ),
        }
        report["variants"][name] = entry
        scored.append((name, where, entry))
        log.info(
            "%s: worst change %s %.4f, %.1f ms",
            name,
            entry["worst"]["figure"],
            entry["worst"]["change"],
            entry["latency"]["p50_ms"],
        )

    for name, method, keep in candidates:
        score(name, method, keep)
    best = min(scored, key=lambda s: s[2]["worst"]["change"])
    method = best[2]["method"]
    score(f"int8-{method}-heads-float", method, {TAIL_FILE: _head_nodes(fp32_dir / TAIL_FILE)})
    score(
        f"int8-{method}-ends-float",
        method,
        {
            TRUNK_FILE: _end_convs(fp32_dir / TRUNK_FILE),
            TAIL_FILE: _head_nodes(fp32_dir / TAIL_FILE),
        },
    )
    fine = [s for s in scored if s[2]["within_budget"]]
    if not fine:
        closest = min(scored, key=lambda s: s[2]["worst"]["change"])
        worst = closest[2]["worst"]
        raise ExportError(
            out,
            f"INT8 refused: the closest variant ({closest[0]}) changes the validation "
            f"{worst['figure']} by {worst['change']:.4f}, over the budget of {budget:.4f} "
            "(export.max_accuracy_change); nothing written",
        )
    name, where, entry = min(fine, key=lambda s: s[2]["latency"]["p50_ms"])
    return where, name, {"variant": name, "method": entry["method"], "graphs": entry["graphs"]}


def _cpu() -> dict[str, Any]:
    facts = runtime_info().as_dict()
    return {k: facts.get(k) for k in ("cpu_model", "cpu_flags", "threads", "cpu_count", "torch")}


def _write_folder(
    final: Path,
    graphs: Path,
    run: Path,
    loaded: LoadedRun,
    masks: Sequence[DropoutMask],
    size: int,
    format: str,
    report: Mapping[str, Any],
    quantisation: Mapping[str, Any] | None,
) -> None:
    """The export folder: graphs, the run's domain model and seen record, the reports and
    the manifest with every file's sha256 (written last)."""
    import onnxruntime

    from tumorscope.export.report import export_markdown

    final.mkdir()
    names = {"trunk": TRUNK_FILE, "tail": TAIL_FILE}
    if (graphs / PATIENT_FILE).is_file():
        names["patient"] = PATIENT_FILE
    for f in names.values():
        shutil.copy2(graphs / f, final / f)
    if loaded.domain is not None:  # the run's, or the one refitted after pruning
        atomic_save_tensors(final / DOMAIN_FILE, loaded.domain.to_tensors())
    if (run / SEEN_FILE).is_file():
        shutil.copy2(run / SEEN_FILE, final / SEEN_FILE)
    atomic_write_json(final / EXPORT_JSON, report)
    atomic_write_bytes(final / EXPORT_MD, export_markdown(report).encode())
    export = {
        "format": format,
        "graphs": names,
        "size": size,
        "masks": [m.to_dict() for m in masks],
        "opset": OPSET,
        "onnxruntime": onnxruntime.__version__,
        "source": {
            "run": str(run),
            "manifest_sha256": sha256_file(run / MANIFEST_FILE),
            "code_version": loaded.manifest.code_version,
        },
        "quantisation": None if quantisation is None else dict(quantisation),
        "pruning": report.get("pruning"),
        "parity": dict(report["parity"]),
        "uncertainty": {
            "mc_dropout": True,
            "gradcam": False,
            "reason": (
                "MC dropout and test-time augmentation: the tail graph takes the dropout "
                "masks as inputs; Grad-CAM needs gradients, which the graphs do not carry: "
                "ask the source run for it"
            ),
        },
    }
    files = {f.name: sha256_file(f) for f in sorted(final.iterdir()) if f.is_file()}
    manifest = loaded.manifest.replace(export=export, files={}).to_dict()
    atomic_write_json(final / MANIFEST_FILE, {**manifest, "files": files})


def _replace(out: Path, final: Path) -> None:
    """Move the finished folder to ``out`` (an earlier export there is removed first)."""
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(final, out)
