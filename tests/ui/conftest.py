"""A real service for the UI's tests (the serving suite's starter), and the app script."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))
from conftest import KEY, Server, start_server

__all__ = ["KEY", "Server"]


@pytest.fixture(scope="session")
def ui_report(tiny_run: Path, synth_brain: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tumorscope evaluate --out`` of the tiny run (what ``--report`` takes), ~2 s."""
    from tumorscope.evaluation.evaluate import evaluate_run

    out = tmp_path_factory.mktemp("ui-report")
    evaluate_run(run=tiny_run, data=[synth_brain], out=out, n_boot=20, overwrite=True)
    return out


@pytest.fixture(scope="session")
def ui_server(
    tiny_run: Path, ui_report: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A service on the tiny run and its report for the UI (its own process, two slots)."""
    log = tmp_path_factory.mktemp("ui-server") / "log"
    s = start_server(tiny_run, log, "--report", str(ui_report), concurrency="2")
    yield s
    s.stop()
