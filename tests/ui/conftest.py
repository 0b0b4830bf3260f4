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
def ui_server(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A service on the tiny run for the UI (its own process, two inference slots)."""
    s = start_server(tiny_run, tmp_path_factory.mktemp("ui-server") / "log", concurrency="2")
    yield s
    s.stop()
