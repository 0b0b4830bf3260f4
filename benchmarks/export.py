"""Deployment formats on this CPU: PyTorch eager, ``torch.compile``, ONNX Runtime FP32 and
INT8, for the demo recipe's network, with a stock MONAI ``BasicUNet`` as a peer.

The network is ``configs/demo.yaml``'s model with seeded random weights (speed and size do
not depend on the weights; INT8 accuracy is measured by ``tumorscope export`` on a trained
run), or ``--run RUN``'s. Variants:

- ``eager``: ``TorchBackend(model).forward_slices`` (``torch.no_grad``, eval mode);
- ``compiled``: the same over ``torch.compile(model)`` (mode default), compiled input by
  input until :data:`COMPILE_BUDGET_S` is spent (the inputs left, or a compiler failure,
  are reported in ``compile.not_compiled``); not with ``--quick`` (20-60 s per input
  shape on this machine, cold);
- ``ort_fp32``: ``export_graphs`` (trunk, tail, patient) run by ``OnnxBackend``, exported
  once per slice side (the graphs have a fixed side);
- ``ort_int8``: trunk and tail quantised by ``quantise`` (MinMax, U8S8 QDQ, per channel),
  profiled, and quantised again with the nodes ONNX Runtime ran in float kept in float,
  as ``tumorscope export`` does; calibrated on synthetic head-like slices.

Inputs: one slice at 128² and at 256², a batch of 32 slices at the demo size (96², padded
to the network's size multiple) and a 240×240×155 volume's worth of slices (155 at the
demo size through ``forward_slices`` in batches of 16; ``--quick``: 48). Per variant and
input: p50/p95 latency, slices/s, graph or weights bytes, peak RSS during the input's
calls (``VmHWM`` reset before each call, as ``dataset.py`` does; in-process, so it counts
every variant loaded) and its growth over the RSS before the call, the GFLOP counted by
``torch.utils.flop_counter`` and the achieved GFLOP/s (FP32-equivalent for INT8) against
the machine's FP32 matmul peak (2048² ``torch.matmul``). Variants run in interleaved
rounds, so that a burst of load from other processes hits all of them alike; ratios are
the median over rounds of each round's ratio. ``standalone_peak_rss_mib``: a fresh
process per variant running the volume (what a deployment holds).

Also: MC dropout (20 samples, trunk once) over one pass on PyTorch, ORT FP32 and INT8
(goal ≤ 2×), with one tail's share of a pass; BasicUNet in the same formats and a volume
through BasicUNet eager against tumorscope INT8 (``export_peer.py``; goal ≤ 0.5×).
One intra-op thread by default (see ``--threads``). Prints one JSON object on its last
stdout line.

    python benchmarks/export.py [--quick] [--run RUN] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from export_lib import (
    count_gflop,
    fastest,
    figures,
    interleaved,
    matmul_peak,
    phantom_slices,
    quantise_like_export,
    quiet,
    round_ratio,
)
from export_peer import peer
from machine import cpu, status_mib

from tumorscope.config import load_config
from tumorscope.export.graphs import export_graphs
from tumorscope.inference.uncertainty import mc_dropout
from tumorscope.models.multitask import MultiTaskNet
from tumorscope.models.registry import create_model
from tumorscope.runs import MODEL_FILE, TorchBackend, load_run
from tumorscope.runs.onnx import TAIL_FILE, TRUNK_FILE, DropoutMask, OnnxBackend, graph_bytes

ROOT = Path(__file__).resolve().parents[1]
VOLUME_SLICES = 155  # a 240×240×155 BraTS volume's axial slices
VOLUME_BATCH = 16
MC_SAMPLES = 20
MC_TASKS = ("segmentation", "tumour")
COMPILE_BUDGET_S = 240.0
CALIBRATION_BATCH = 8
VARIANTS = ("eager", "compiled", "ort_fp32", "ort_int8")

log = logging.getLogger("benchmarks.export")


@dataclass(frozen=True)
class Input:
    """One input of the table: ``slices`` slices of side ``side`` in batches of ``batch``."""

    name: str
    side: int
    slices: int
    batch: int


@dataclass(frozen=True)
class Sizes:
    """What ``--quick`` shrinks: timing rounds per input, slices, calibration batches."""

    rounds: Mapping[str, int]
    round_cap_s: float
    volume_slices: int
    peer_volume_slices: int
    calibration_batches: int
    mc_slices: int
    mc_rounds: int
    rss_slices: int
    compile_inputs: tuple[str, ...]
    compile_budget_s: float


FULL = Sizes(
    rounds={"slice_128": 30, "slice_256": 20, "batch_32": 10, "volume": 3},
    round_cap_s=75.0,
    volume_slices=VOLUME_SLICES,
    peer_volume_slices=VOLUME_SLICES,
    calibration_batches=4,
    mc_slices=VOLUME_BATCH,
    mc_rounds=3,
    rss_slices=VOLUME_SLICES,
    # Most telling inputs first: a budget that runs out leaves the single slices.
    compile_inputs=("batch_32", "volume", "slice_128", "slice_256"),
    compile_budget_s=COMPILE_BUDGET_S,
)
QUICK = Sizes(
    rounds={"slice_128": 8, "slice_256": 5, "batch_32": 3, "volume": 2},
    round_cap_s=15.0,
    volume_slices=48,
    peer_volume_slices=8,
    calibration_batches=1,
    mc_slices=8,
    mc_rounds=1,
    rss_slices=16,
    # Cold, compiling takes 20-60 s per input shape on this machine: over --quick's 2 min.
    compile_inputs=(),
    compile_budget_s=0.0,
)


def build_model(run: Path | None) -> tuple[MultiTaskNet, int, str, int]:
    """The network, its preprocessed slice side, a description and its weights' bytes."""
    if run is not None:
        loaded = load_run(run)
        return (
            loaded.model.eval(),
            int(loaded.spec.image_size),
            f"run {run}",
            (run / MODEL_FILE).stat().st_size,
        )
    from safetensors.torch import save_model

    cfg = load_config(ROOT / "configs" / "demo.yaml")
    torch.manual_seed(0)
    model = create_model(cfg.model).eval()
    with tempfile.TemporaryDirectory() as tmp:
        save_model(model, str(Path(tmp) / MODEL_FILE))
        size = (Path(tmp) / MODEL_FILE).stat().st_size
    desc = "configs/demo.yaml model, seeded random weights (speed does not depend on them)"
    return model, int(cfg.data.image_size), desc, size


def export_side(
    model: MultiTaskNet, folder: Path, side: int, calibration_batches: int
) -> tuple[OnnxBackend, OnnxBackend, dict[str, Any]]:
    """FP32 and INT8 backends of ``model`` for slices of side ``side`` (graphs in
    ``folder``), and what it took."""
    (folder / "fp32").mkdir(parents=True)
    t0 = time.perf_counter()
    with quiet():
        masks = export_graphs(model, folder / "fp32", side)
    exported = time.perf_counter() - t0

    def backend(where: Path) -> OnnxBackend:
        return OnnxBackend.of_network(where, model, side, masks)

    fp32 = backend(folder / "fp32")
    trunk_feeds, tail_feeds = [], []
    for k in range(calibration_batches):
        images = phantom_slices(CALIBRATION_BATCH, side, seed=100 + k)
        state, _ = fp32.run_trunk(images)
        trunk_feeds.append({"image": images})
        tail_feeds.append(
            {
                "mid": state["mid"],
                "readout": state["readout"],
                **{m.name: m.ones(len(images)) for m in masks},
            }
        )
    t1 = time.perf_counter()
    described = quantise_like_export(
        folder / "fp32", folder / "int8", {TRUNK_FILE: trunk_feeds, TAIL_FILE: tail_feeds}
    )
    int8 = backend(folder / "int8")
    # What an ONNX-only process needs to open the graphs (standalone_rss's children).
    opened = {
        "side": side,
        "tasks": list(model.tasks),
        "channels": model.cfg.in_channels,
        "clinical_features": model.cfg.clinical_features,
        "masks": [m.to_dict() for m in masks],
    }
    (folder / "bench.json").write_text(json.dumps(opened))
    facts = {
        "export_s": round(exported, 1),
        "quantise_s": round(time.perf_counter() - t1, 1),
        "calibration_slices": CALIBRATION_BATCH * calibration_batches,
        "graphs": described,
        "bytes": {
            v: graph_bytes(folder / v.removeprefix("ort_")) for v in ("ort_fp32", "ort_int8")
        },
    }
    return fp32, int8, facts


def compile_backend(
    model: MultiTaskNet, warm: Sequence[tuple[Input, np.ndarray]], sizes: Sizes
) -> tuple[TorchBackend | None, dict[str, Any]]:
    """``torch.compile(model)`` warmed on each of ``sizes.compile_inputs`` in turn while
    ``sizes.compile_budget_s`` lasts: the backend (None if nothing compiled) and
    ``{input: compile seconds}`` or why not."""
    compiled = TorchBackend(torch.compile(model))  # type: ignore[arg-type]
    seconds: dict[str, float] = {}
    missing: dict[str, str] = {}
    spent, budget_s = 0.0, sizes.compile_budget_s
    by_name = {inp.name: (inp, images) for inp, images in warm}
    for name in sizes.compile_inputs:
        inp, images = by_name[name]
        if spent > budget_s:
            missing[inp.name] = f"compile budget of {budget_s:.0f} s spent"
            continue
        compiled.batch_size = inp.batch
        t0 = time.perf_counter()
        try:
            with quiet():
                compiled.forward_slices(images)
        except Exception as exc:  # a compiler failure is a figure, not a crash
            missing[inp.name] = f"{type(exc).__name__}: {str(exc)[:300]}"
        else:
            seconds[inp.name] = round(time.perf_counter() - t0, 1)
        spent += time.perf_counter() - t0
    for name in by_name.keys() - set(sizes.compile_inputs):
        missing[name] = "--quick: not compiled (20-60 s per input shape); the full run does"
    described = {
        "mode": "default",
        "compile_s": seconds,
        "not_compiled": missing,
        "note": "compile_s: the first call per input, Inductor's on-disk cache of earlier "
        "runs included (cold: 20-60 s per input shape on this machine)",
    }
    return (compiled if seconds else None), described


def variant_table(
    inputs: Sequence[tuple[Input, np.ndarray]],
    backends: Mapping[str, Callable[[Input], Any]],
    eager: TorchBackend,
    bytes_of: Callable[[str, int], int],
    sizes: Sizes,
    peak: float,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Variant × input figures and each input's ratios. ``backends[variant](input)`` is the
    backend for that input (None where the variant has none)."""
    table: dict[str, dict[str, Any]] = {v: {} for v in backends}
    ratios: dict[str, dict[str, Any]] = {}
    for inp, images in inputs:
        # Convolution and matrix-product FLOPs grow linearly with the slices.
        gflop = count_gflop(partial(eager.forward_slices, images[:1])) * inp.slices
        calls: dict[str, Callable[[], Any]] = {}
        for variant, get in backends.items():
            backend = get(inp)
            if backend is None:
                continue

            def call(
                backend: Any = backend, images: np.ndarray = images, n: int = inp.batch
            ) -> Any:
                backend.batch_size = n
                return backend.forward_slices(images)

            calls[variant] = call
        log.info("timing %s: %s", inp.name, list(calls))
        got = interleaved(calls, sizes.rounds[inp.name], sizes.round_cap_s)
        for variant in VARIANTS:
            table[variant][inp.name] = (
                figures(got, variant, inp.slices, bytes_of(variant, inp.side), gflop, peak)
                if variant in got.seconds
                else {"skipped": "not compiled for this input (see compile.not_compiled)"}
            )
        best_fp32 = fastest(got.seconds, among=("compiled", "ort_fp32"))
        best = fastest(got.seconds)
        ratios[inp.name] = {
            "best_fp32": best_fp32,
            "int8_over_best_fp32": None
            if best_fp32 is None
            else round_ratio(got.seconds, "ort_int8", best_fp32),
            "int8_over_ort_fp32": round_ratio(got.seconds, "ort_int8", "ort_fp32"),
            "fastest": best,
            "fastest_over_eager": None if best is None else round_ratio(got.seconds, best, "eager"),
        }
    return table, ratios


def mc_costs(
    backends: Mapping[str, Any], images: np.ndarray, rounds: int
) -> dict[str, dict[str, Any]]:
    """MC dropout (:data:`MC_SAMPLES` samples, trunk once) over one deterministic pass of
    the same slices (segmentation and tumour), per backend, and one tail alone (what each
    further sample costs); rounds interleaved."""
    calls: dict[str, Callable[[], Any]] = {}
    for name, b in backends.items():
        b.batch_size = len(images)
        calls[f"{name}/one"] = partial(b.forward_slices, images, tasks=MC_TASKS)
        if isinstance(b, TorchBackend):
            with torch.no_grad():
                trunk = b.model.trunk(torch.from_numpy(images), MC_TASKS)
            calls[f"{name}/tail"] = partial(_no_grad_tail, b.model, trunk)
            target: Any = b.model
        else:
            state = b.run_trunk(images)[0]
            calls[f"{name}/tail"] = partial(b.run_tail, state)
            target = b
        calls[f"{name}/mc"] = partial(
            mc_dropout, target, images, samples=MC_SAMPLES, tasks=MC_TASKS, batch_size=len(images)
        )
    got = interleaved(calls, rounds, cap_s=120.0, min_rounds=1)
    out = {}
    for name in backends:
        tail = round_ratio(got.seconds, f"{name}/tail", f"{name}/one")
        out[name] = {
            "one_pass_ms": round(1000 * float(np.median(got.seconds[f"{name}/one"])), 1),
            "tail_ms": round(1000 * float(np.median(got.seconds[f"{name}/tail"])), 1),
            "mc_ms": round(1000 * float(np.median(got.seconds[f"{name}/mc"])), 1),
            "mc_over_one_pass": round_ratio(got.seconds, f"{name}/mc", f"{name}/one"),
            "tail_over_one_pass": tail,
            # One pass plus the further samples' tails; the rest of mc_over_one_pass is
            # mc_dropout's own work (masks, moments, copies).
            "pass_plus_tails_over_one_pass": None
            if tail is None
            else round(1 + (MC_SAMPLES - 1) * tail, 3),
        }
    return out


def _no_grad_tail(model: MultiTaskNet, trunk: Any) -> Any:
    with torch.no_grad():
        return model.tail(trunk, MC_TASKS)


def standalone_rss(folder: Path, run: Path | None, slices: int, threads: int) -> dict[str, Any]:
    """Peak RSS (MiB) of a fresh process per variant running ``slices`` volume slices. The
    processes run side by side: nothing is timed meanwhile, and they share no memory."""
    procs = {}
    for variant in ("eager", "ort_fp32", "ort_int8"):
        cmd = [sys.executable, __file__, "--rss-child", variant, str(folder), str(slices)]
        cmd += ["--threads", str(threads), *(["--run", str(run)] if run else [])]
        procs[variant] = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
    out: dict[str, Any] = {}
    for variant, proc in procs.items():
        try:
            stdout, _ = proc.communicate(timeout=300)
            out[variant] = round(float(stdout.strip().splitlines()[-1]), 1)
        except (subprocess.TimeoutExpired, ValueError, IndexError) as exc:
            proc.kill()
            proc.wait()
            out[variant] = f"failed: {type(exc).__name__} (exit {proc.returncode})"
    out["what"] = (
        f"VmHWM of a process that loads one variant and runs {slices} slices twice "
        "(it imports torch: tumorscope's backends need it)"
    )
    return out


def rss_child(variant: str, folder: Path, slices: int, run: Path | None) -> float:
    """Peak RSS (MiB) of this process after running ``variant`` on ``slices`` slices."""
    meta = json.loads((folder / "bench.json").read_text())
    if variant == "eager":
        backend: Any = TorchBackend(build_model(run)[0], batch_size=VOLUME_BATCH)
    else:  # no PyTorch network: what an ONNX Runtime deployment holds
        backend = OnnxBackend(
            folder / variant.removeprefix("ort_"),
            tasks=tuple(meta["tasks"]),
            size=int(meta["side"]),
            channels=int(meta["channels"]),
            masks=[DropoutMask.from_dict(m) for m in meta["masks"]],
            clinical_features=int(meta["clinical_features"]),
            batch_size=VOLUME_BATCH,
        )
    images = phantom_slices(slices, int(meta["side"]), seed=2)
    for _ in range(2):
        backend.forward_slices(images)
    # Not ru_maxrss: Linux carries the parent's peak across fork and exec into it.
    return status_mib("VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and slices")
    parser.add_argument("--run", type=Path, default=None, help="trained run (default: seeded)")
    # One thread by default, as model_size.py: on this shared 2-core machine two intra-op
    # threads make eager PyTorch 5-50x slower whenever another process holds a core (its
    # OpenMP barriers wait on a descheduled thread); pass --threads on a dedicated machine.
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (torch, ORT)")
    parser.add_argument("--rss-child", nargs=3, metavar=("VARIANT", "FOLDER", "SLICES"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # Progress on stderr; the exporter's and the quantiser's warnings (per layer) off.
    logging.basicConfig(
        level=logging.ERROR, format="[%(relativeCreated)7.0f ms] %(message)s", stream=sys.stderr
    )
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    log.setLevel(logging.INFO)
    if args.rss_child:
        variant, folder, n = args.rss_child
        print(rss_child(variant, Path(folder), int(n), args.run))
        return
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    load_before = round(os.getloadavg()[0], 2)
    peak = matmul_peak()
    model, image_size, desc, weight_bytes = build_model(args.run)
    side = image_size + (-image_size % model.size_multiple)
    inputs = [
        Input("slice_128", 128, 1, 1),
        Input("slice_256", 256, 1, 1),
        Input("batch_32", side, 32, 32),
        Input("volume", side, sizes.volume_slices, VOLUME_BATCH),
    ]
    data = [(inp, phantom_slices(inp.slices, inp.side, seed=k)) for k, inp in enumerate(inputs)]
    with tempfile.TemporaryDirectory(prefix="tumorscope-bench-export-") as tmp:
        root = Path(tmp)
        ort: dict[int, tuple[OnnxBackend, OnnxBackend]] = {}
        setup: dict[str, Any] = {}
        for s in sorted({inp.side for inp in inputs}):
            log.info("export and quantise at %d²", s)
            fp32, int8, setup[f"{s}px"] = export_side(
                model, root / f"{s}px", s, sizes.calibration_batches
            )
            ort[s] = (fp32, int8)
        eager = TorchBackend(model)
        log.info("torch.compile")
        compiled, compile_figs = compile_backend(model, data, sizes)
        done = set(compile_figs.get("compile_s", {}))
        backends: dict[str, Callable[[Input], Any]] = {
            "eager": lambda inp: eager,
            "compiled": lambda inp: compiled if inp.name in done else None,
            "ort_fp32": lambda inp: ort[inp.side][0],
            "ort_int8": lambda inp: ort[inp.side][1],
        }

        def bytes_of(variant: str, s: int) -> int:
            if variant in ("eager", "compiled"):
                return weight_bytes
            return int(setup[f"{s}px"]["bytes"][variant])

        table, ratios = variant_table(data, backends, eager, bytes_of, sizes, peak["gflop_per_s"])
        log.info("MC dropout")
        mc_images = phantom_slices(sizes.mc_slices, side, seed=11)
        mc = mc_costs(
            {"eager": TorchBackend(model), "ort_fp32": ort[side][0], "ort_int8": ort[side][1]},
            mc_images,
            sizes.mc_rounds,
        )
        log.info("BasicUNet peer")
        basic_unet = peer(
            root / "basicunet",
            ort[side][1],
            side,
            rounds=sizes.rounds["slice_256"],
            cap_s=sizes.round_cap_s,
            volume_slices=sizes.peer_volume_slices,
            peak_gflop_s=peak["gflop_per_s"],
        )
        log.info("standalone RSS")
        rss = standalone_rss(root / f"{side}px", args.run, sizes.rss_slices, args.threads)
    peak_end = matmul_peak()
    result = {
        "model": desc,
        "quick": args.quick,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        # Other processes share the CPU: the load average says how much the figures suffer.
        "load_average_1min_before_after": [load_before, round(os.getloadavg()[0], 2)],
        "image_size": image_size,
        "network_side": side,
        "matmul_peak": {**peak, "gflop_per_s_at_end": peak_end["gflop_per_s"]},
        "inputs": {i.name: {"side": i.side, "slices": i.slices, "batch": i.batch} for i in inputs},
        "volume_note": None
        if sizes.volume_slices == VOLUME_SLICES
        else f"--quick: {sizes.volume_slices} of {VOLUME_SLICES} slices",
        "export": setup,
        "compile": compile_figs,
        "variants": table,
        "ratios": ratios,
        # The deployment default: the fastest variant on a whole volume.
        "deployment_default": {
            "variant": ratios["volume"]["fastest"],
            "volume_over_eager": ratios["volume"]["fastest_over_eager"],
        },
        "mc_dropout": {
            "samples": MC_SAMPLES,
            "slices": sizes.mc_slices,
            "side": side,
            "tasks": list(MC_TASKS),
            **mc,
            "goal": "mc_over_one_pass <= 2",
        },
        "basic_unet": basic_unet,
        "standalone_peak_rss_mib": rss,
        "seconds": round(time.perf_counter() - started, 1),
        "cpu": cpu(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
