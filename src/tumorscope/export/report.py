"""``export.md``: the export report as tables a reader can check at a glance."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tumorscope import DISCLAIMER

# The validation figures an export report compares, as its tables label them.
FIGURE_LABELS = {
    "dice": "Dice",
    "hd95_mm": "HD95 mm",
    "slice_auc": "slice AUC",
    "image_auc": "2D image AUC",
    "c_index": "C-index",
    "ece": "ECE",
}


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def export_markdown(report: Mapping[str, Any]) -> str:
    """The Markdown of ``export.json``'s content."""
    cpu = report.get("cpu", {})
    lines = [
        f"# Export of `{report['source']}` — {report['format']}",
        "",
        f"Chosen: **{report['chosen']}**. CPU: {cpu.get('cpu_model')} "
        f"({cpu.get('cpu_flags')}), {cpu.get('threads')} threads, torch {cpu.get('torch')}.",
        "",
        "## Parity of the FP32 graphs against PyTorch (real validation slices)",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_num(v, 6)} |" for k, v in report["parity"].items()]
    figures = list(FIGURE_LABELS)
    lines += [
        "",
        f"## Variants on the validation split (budget: ±{report['budget']['max_accuracy_change']} "
        f"on {', '.join(report['budget']['figures'])})",
        "",
        "| variant | "
        + " | ".join(FIGURE_LABELS[f] for f in figures)
        + " | p50 ms / batch | slices/s | MB |",
        "|---" * (len(figures) + 4) + "|",
    ]
    for name, v in report["variants"].items():
        vals = " | ".join(_num(v["validation"].get(f)) for f in figures)
        lat = v["latency"]
        lines.append(
            f"| {name} | {vals} | {lat['p50_ms']:.1f} | {lat['slices_per_s']:.0f} | "
            f"{v['bytes'] / 1e6:.2f} |"
        )
    lines += ["", "## Where the chosen trunk spends its time (ONNX Runtime profile)", ""]
    lines += ["| op | ms | share | nodes |", "|---|---|---|---|"]
    for op, row in report.get("trunk_profile", {}).items():
        lines.append(f"| {op} | {row['ms']:.2f} | {row['share']:.1%} | {row['nodes']} |")
    lines += ["", f"_{DISCLAIMER}_", ""]
    return "\n".join(lines)
