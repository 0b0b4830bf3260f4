"""INT8 static quantisation of the exported graphs (ONNX Runtime ``quantize_static``, QDQ,
per-channel weights), calibrated on real training slices, with per-node choices made from
a kernel profile.

ONNX Runtime fuses a ``DequantizeLinear → op → QuantizeLinear`` group into an integer
kernel (``QLinearConv``, ``QLinearConcat``, ...) only for the ops and types its CPU
provider has one for; any other quantised node runs in float between a dequantise and a
quantise it did not need. :func:`float_fallbacks` reads the executed kernels from a
profile of the quantised graph (:func:`kernel_profile`) and names the nodes that fell back, and the export
re-quantises with those nodes kept in float (:func:`quantise`'s ``exclude``).
Activations are ``uint8`` and weights ``int8`` (U8S8, the x86 kernels' format; S8S8
leaves half the convolutions in float on this CPU provider).
"""

from __future__ import annotations

import collections
import json
import logging
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tumorscope.runs.onnx import ORT_PROVIDERS, session_options

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile")


class FeedReader:
    """``CalibrationDataReader`` over a list of input feeds (one dict per batch)."""

    def __init__(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> None:
        self.feeds = [dict(f) for f in feeds]
        self._it = iter(self.feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.feeds)


def _method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[name]


def quantisable_nodes(path: Path) -> dict[str, str]:
    """Node name → op type of every node of the float graph at ``path``."""
    import onnx

    return {n.name: n.op_type for n in onnx.load(str(path)).graph.node}


def quantise(
    src: Path,
    dst: Path,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    method: str = "minmax",
    exclude: Iterable[str] = (),
) -> None:
    """Write the INT8 QDQ graph of the float graph ``src`` to ``dst``.

    Args:
        src: The float graph.
        dst: Where the quantised graph goes.
        feeds: Calibration batches (real slices), each ``{input name: array}``.
        method: ``minmax``, ``entropy`` or ``percentile`` (99.999th, ONNX Runtime's default).
        exclude: Node names kept in float.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="tumorscope-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        # Symbolic shape inference fails on the exporter's dynamic batch; ONNX's own suffices.
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(dst),
            FeedReader(feeds),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=_method(method),
            nodes_to_exclude=sorted(exclude),
            extra_options={"CalibTensorRangeSymmetric": False},
            calibration_providers=ORT_PROVIDERS,
        )


def kernel_profile(
    path: Path, feeds: Sequence[Mapping[str, np.ndarray]], runs: int = 3
) -> list[dict[str, Any]]:
    """The kernels ONNX Runtime executes for the graph at ``path``: one entry per executed
    node ``{node, op, ms}`` (mean milliseconds per run over ``runs`` runs of every feed,
    after one warm-up run)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="tumorscope-profile-") as tmp:
        opts = session_options()
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), opts, providers=ORT_PROVIDERS)
        for feed in feeds[:1]:
            session.run(None, dict(feed))
        for _ in range(runs):
            for feed in feeds:
                session.run(None, dict(feed))
        events = json.loads(Path(session.end_profiling()).read_text())
    total: dict[str, float] = collections.defaultdict(float)
    ops: dict[str, str] = {}
    calls = runs * len(feeds) + 1
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            node = e["name"][: -len("_kernel_time")]
            total[node] += float(e["dur"]) / 1000.0
            ops[node] = e["args"]["op_name"]
    return sorted(
        ({"node": n, "op": ops[n], "ms": t / calls} for n, t in total.items()),
        key=lambda r: -r["ms"],
    )


def by_op(profile: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """A kernel profile summed per op type: ``{op: {ms, share, nodes}}``, largest first."""
    ms: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    for row in profile:
        ms[row["op"]] += row["ms"]
        count[row["op"]] += 1
    total = sum(ms.values()) or 1.0
    return {
        op: {"ms": round(t, 3), "share": round(t / total, 4), "nodes": count[op]}
        for op, t in sorted(ms.items(), key=lambda kv: -kv[1])
    }


def float_fallbacks(quantised: Path, profile: Sequence[Mapping[str, Any]]) -> list[str]:
    """Nodes of a QDQ graph that ONNX Runtime ran in float between a dequantise and a
    quantise: a node of the file whose first input is dequantised and whose outputs are
    all quantised again, that the ``profile`` (:func:`kernel_profile` of that graph) shows
    executed under its own name and op type — an integer kernel would have replaced it."""
    import onnx

    graph = onnx.load(str(quantised)).graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = collections.defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)
    executed = {(row["node"], row["op"]) for row in profile}
    found = []
    for n in graph.node:
        if (
            n.op_type in ("QuantizeLinear", "DequantizeLinear")
            or (n.name, n.op_type) not in executed
        ):
            continue
        first = producer.get(n.input[0]) if n.input else None
        outs = [c for o in n.output for c in consumers[o]]
        if (
            first is not None
            and first.op_type == "DequantizeLinear"
            and outs
            and all(c.op_type == "QuantizeLinear" for c in outs)
        ):
            found.append(n.name)
    return found
