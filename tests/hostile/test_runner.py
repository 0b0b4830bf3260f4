"""The runner itself: exit codes, one-line errors and a measured peak RSS."""

from __future__ import annotations

from pathlib import Path

from runner import TRACEBACK, run_cli


def test_a_missing_folder_is_one_error_line_with_a_measured_rss(tmp_path: Path) -> None:
    run = run_cli(["data", "inspect", str(tmp_path / "absent")])
    assert run.returncode == 2, run.output
    assert TRACEBACK not in run.output
    lines = run.error_lines()
    assert len(lines) == 1 and "absent" in lines[0]
    assert 20 < run.peak_rss_mb < 2048
