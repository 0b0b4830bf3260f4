"""Run ``tumorscope`` in a subprocess and measure what a hostile input costs.

``run_cli`` returns the exit code, stdout, stderr and the child's peak RSS (its own
``ru_maxrss``, measured with :mod:`resource` inside it), so tests can assert "one line
naming the file, no traceback, bounded memory" without timing anything.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

TRACEBACK = "Traceback (most recent call last)"
# Bound on the peak RSS of any one validation/prediction (README "Limits"), with the 2×
# margin a test may assert.
PEAK_RSS_BOUND_MB = 2048


@dataclass(frozen=True)
class CliRun:
    """What one ``tumorscope`` invocation did."""

    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def error_lines(self) -> list[str]:
        """Lines that start with ``error:`` (the CLI's one-line failures)."""
        return [line for line in self.output.splitlines() if line.startswith("error:")]


# Runs the CLI as ``python -m tumorscope.cli`` would and records its own peak RSS (KiB on
# Linux) in the file named by argv[1], whatever way it exits.
_WRAPPER = """
import resource, runpy, sys
out = sys.argv.pop(1)
sys.argv[0] = "tumorscope"
try:
    runpy.run_module("tumorscope.cli", run_name="__main__", alter_sys=True)
finally:
    with open(out, "w") as f:
        f.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""


def _limit_memory(limit_mb: int) -> None:
    # An address-space cap makes a runaway allocation fail fast instead of swapping.
    cap = limit_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def run_cli(
    args: list[str],
    *,
    cwd: Path | None = None,
    timeout: float = 600,
    address_space_mb: int = 16384,
    env: dict[str, str] | None = None,
) -> CliRun:
    """``python -m tumorscope.cli ARGS`` in a fresh process; returns a :class:`CliRun`.

    The child is given an address-space cap (``address_space_mb``, generous: torch maps
    much more than it touches) so a runaway allocation fails instead of swapping; the
    peak RSS reported is the child's own ``ru_maxrss``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        rss_file = Path(tmp) / "rss"
        proc = subprocess.run(
            [sys.executable, "-c", _WRAPPER, str(rss_file), *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            errors="backslashreplace",
            timeout=timeout,
            env={**os.environ, "COLUMNS": "200", **(env or {})},
            preexec_fn=lambda: _limit_memory(address_space_mb),
            check=False,
        )
        peak_kib = float(rss_file.read_text()) if rss_file.is_file() else float("nan")
    return CliRun(proc.returncode, proc.stdout, proc.stderr, peak_kib / 1024)
