"""Hostile run folders: a manifest is never trusted; every case is one line naming the run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from cases_runs import CASES
from PIL import Image
from runner import PEAK_RSS_BOUND_MB, TRACEBACK, run_cli

from tumorscope.data.types import DataError
from tumorscope.runs import CheckpointError, load_run


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_load_run_refuses_with_the_fault(case: str, tiny_run: Path, tmp_path: Path) -> None:
    make, fault = CASES[case]
    bad = make(tiny_run, tmp_path / case)
    with pytest.raises((CheckpointError, DataError), match=fault) as info:
        load_run(bad)
    assert str(bad) in str(info.value)


@pytest.mark.parametrize(
    "case",
    ["manifest_deeply_nested", "files_entry_escapes", "weights_not_listed", "weights_are_a_pickle"],
)
def test_predict_on_a_hostile_run_is_one_line(case: str, tiny_run: Path, tmp_path: Path) -> None:
    make, fault = CASES[case]
    bad = make(tiny_run, tmp_path / case)
    image = tmp_path / "slice.png"
    Image.fromarray((np.arange(64 * 64) % 251).reshape(64, 64).astype(np.uint8)).save(image)
    before = _digests(bad)
    run = run_cli(["predict", "--run", str(bad), str(image), "--out", str(tmp_path / "out")])
    assert run.returncode == 2, run.output
    assert TRACEBACK not in run.output
    lines = run.error_lines()
    assert len(lines) == 1 and fault in lines[0] and str(bad) in lines[0], run.output
    assert run.peak_rss_mb < PEAK_RSS_BOUND_MB
    assert _digests(bad) == before  # loading modifies nothing
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
