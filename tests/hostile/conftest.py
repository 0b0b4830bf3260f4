"""The hostile-input suite: case generators (``cases_*.py``) and a subprocess runner.

The generators are plain importable functions (``sys.path`` gets this folder), so other
suites — the HTTP service's, later — can replay the same cases.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
