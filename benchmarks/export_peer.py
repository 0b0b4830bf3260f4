"""The peer of ``export.py``: a stock MONAI ``BasicUNet`` in the same deployment formats
(eager, ONNX Runtime FP32 and INT8) on one 256² slice, and a whole 240×240×155 volume
through BasicUNet eager against tumorscope INT8."""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from export_lib import (
    count_gflop,
    figures,
    interleaved,
    phantom_slices,
    quantise_like_export,
    quiet,
    round_ratio,
    seconds,
)

from tumorscope.runs.onnx import ORT_PROVIDERS, OnnxBackend, session_options

FEATURES = (32, 32, 64, 128, 256, 32)
SIDE = 256
GRAPH = "basicunet.onnx"
VOLUME_SHAPE = (240, 240, 155)  # BraTS grid, 1 mm isotropic
VOLUME_BATCH = 16


def basic_unet() -> torch.nn.Module:
    """``BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=FEATURES)``,
    seeded, in eval mode."""
    from monai.networks.nets import BasicUNet  # deferred: only the peer needs it

    torch.manual_seed(0)
    with contextlib.redirect_stdout(sys.stderr):  # BasicUNet prints its features
        net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=FEATURES)
    return net.eval()


def peer(
    folder: Path,
    int8: OnnxBackend,
    side: int,
    rounds: int,
    cap_s: float,
    volume_slices: int,
    peak_gflop_s: float,
) -> dict[str, Any]:
    """BasicUNet eager / ORT FP32 / ORT INT8 on one :data:`SIDE`² slice (graphs written
    into ``folder``), and :func:`volume` against tumorscope's INT8 backend ``int8``."""
    import onnxruntime as ort  # deferred: as in tumorscope.runs.onnx

    net = basic_unet()
    (folder / "fp32").mkdir(parents=True)
    x = phantom_slices(1, SIDE, seed=7)
    xt = torch.from_numpy(x)
    t0 = time.perf_counter()
    with quiet():
        torch.onnx.export(
            net, (xt,), str(folder / "fp32" / GRAPH), input_names=["image"],
            output_names=["logits"], dynamo=True, opset_version=18, external_data=False,
            verbose=False,
        )  # fmt: skip
    exported = time.perf_counter() - t0
    feeds = [{"image": phantom_slices(1, SIDE, seed=200 + k)} for k in range(4)]
    t1 = time.perf_counter()
    described = quantise_like_export(folder / "fp32", folder / "int8", {GRAPH: feeds})
    quantised = time.perf_counter() - t1
    opts = session_options()
    sessions = {
        k: ort.InferenceSession(str(folder / k / GRAPH), opts, providers=ORT_PROVIDERS)
        for k in ("fp32", "int8")
    }
    calls: dict[str, Callable[[], Any]] = {
        "eager": lambda: _no_grad(net, xt),
        "ort_fp32": lambda: sessions["fp32"].run(None, {"image": x}),
        "ort_int8": lambda: sessions["int8"].run(None, {"image": x}),
    }
    got = interleaved(calls, rounds, cap_s)
    gflop = count_gflop(lambda: net(xt))
    with tempfile.TemporaryDirectory() as tmp:
        from safetensors.torch import save_model

        save_model(net, str(Path(tmp) / "model.safetensors"))
        weights = (Path(tmp) / "model.safetensors").stat().st_size
    nbytes = {
        "eager": weights,
        "ort_fp32": (folder / "fp32" / GRAPH).stat().st_size,
        "ort_int8": (folder / "int8" / GRAPH).stat().st_size,
    }
    return {
        "model": f"monai BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, "
        f"features={FEATURES}), seeded random weights",
        "parameters": sum(p.numel() for p in net.parameters()),
        "export_s": round(exported, 1),
        "quantise_s": round(quantised, 1),
        "int8_kept_float": described[GRAPH]["kept_float"],
        f"slice_{SIDE}": {
            k: figures(got, k, 1, nbytes[k], gflop, peak_gflop_s) for k in got.seconds
        },
        "int8_over_ort_fp32": round_ratio(got.seconds, "ort_int8", "ort_fp32"),
        "ort_int8_over_eager": round_ratio(got.seconds, "ort_int8", "eager"),
        "volume": volume(net, int8, side, volume_slices),
    }


def _no_grad(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(x)


def volume(net: torch.nn.Module, int8: OnnxBackend, side: int, slices: int) -> dict[str, Any]:
    """A volume's ``slices`` axial slices in batches of :data:`VOLUME_BATCH`: BasicUNet eager
    on the 240² grid and at ``side``², tumorscope INT8 on its ``side``² slices. Each batch
    runs all three in turn (the same load for all); seconds are summed over the batches."""
    grid = phantom_slices(slices, VOLUME_SHAPE[0], seed=3)
    small = phantom_slices(slices, side, seed=3)
    int8.batch_size = VOLUME_BATCH

    def batch(images: np.ndarray, start: int) -> torch.Tensor:
        return torch.from_numpy(images[start : start + VOLUME_BATCH])

    calls: dict[str, Callable[[int], Any]] = {
        "basicunet_eager_240": lambda s: _no_grad(net, batch(grid, s)),
        f"basicunet_eager_{side}": lambda s: _no_grad(net, batch(small, s)),
        "tumorscope_ort_int8": lambda s: int8.forward_slices(small[s : s + VOLUME_BATCH]),
    }
    for fn in calls.values():
        fn(0)  # warm-up on one batch
    total = dict.fromkeys(calls, 0.0)
    for start in range(0, slices, VOLUME_BATCH):
        for key, fn in calls.items():
            total[key] += seconds(partial(fn, start))
    ratio = total["tumorscope_ort_int8"] / total["basicunet_eager_240"]
    scale = VOLUME_SHAPE[2] / slices
    return {
        "shape": list(VOLUME_SHAPE),
        "slices": slices,
        "note": None
        if slices == VOLUME_SHAPE[2]
        else f"--quick: {slices} of {VOLUME_SHAPE[2]} slices; volume_s scaled to all",
        "seconds": {k: round(v, 2) for k, v in total.items()},
        "volume_s": {k: round(v * scale, 2) for k, v in total.items()},
        "tumorscope_int8_over_basicunet_eager": round(ratio, 4),
        f"tumorscope_int8_over_basicunet_eager_{side}": round(
            total["tumorscope_ort_int8"] / total[f"basicunet_eager_{side}"], 4
        ),
        "goal": "tumorscope_int8_over_basicunet_eager <= 0.5",
        "met": ratio <= 0.5,
        "what": f"network only: BasicUNet on the volume's 240² slices, tumorscope on its "
        f"{side}² preprocessed slices (its predictor resizes to them; that step excluded)",
    }
