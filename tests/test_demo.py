"""The demo's results table: every row read from the report of ``evaluate_run``."""

from __future__ import annotations

import json
from pathlib import Path

from tumorscope.demo import DEMO_TABLE, evaluate_held_out


def test_demo_table_comes_from_the_report(
    tiny_run: Path, synth_brain: Path, tmp_path: Path
) -> None:
    figures = evaluate_held_out(run=tiny_run, data=[synth_brain], out=tmp_path / "r", n_boot=10)
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    sources = sorted(metrics["calibration"]["by_source"])
    per_source = [f"ECE after temperature, {s}" for s in sources]
    assert sources and list(figures["table"]) == [*DEMO_TABLE, *per_source]
    for label, key in DEMO_TABLE.items():
        node = metrics
        for part in key.split("."):
            node = node[part]
        assert figures["table"][label] == node
    for label, src in zip(per_source, sources, strict=True):
        by = metrics["calibration"]["by_source"][src]
        assert figures["table"][label] == by["ece_after_temperature"]
    assert figures["split"] == "test" and figures["report"] == str(tmp_path / "r")
