"""Synthetic patients on real anatomy, written in the real on-disk layouts.

Public API:

- :func:`synthesize` — sample, render and write a cohort (BraTS / Kaggle / HECKTOR layouts).
- :func:`synthesize_kaggle` — the fixed 2D test set: a Kaggle-style folder with ``strata.csv``.
- :func:`read_strata` — read a Kaggle folder's ``strata.csv`` (per-image contrast, plane, ...).
- :func:`sample_cohort` — per-patient parameters, true hazards and outcomes, no rendering.
- :func:`oracle_c_index` — Harrell's C of the true log-hazard against the sampled outcomes.
- :func:`example_grid` — the PNG grid of example slices shown in ``docs/synthetic.md``.

Presets (``easy``, ``standard``, ``hard``) are described in :mod:`.presets` and
``docs/synthetic.md``.
"""

from __future__ import annotations

from tumorscope.synthetic.cohort import sample_cohort
from tumorscope.synthetic.generate import SynthSummary, synthesize, synthesize_kaggle
from tumorscope.synthetic.grid import example_grid
from tumorscope.synthetic.kaggle import read_strata
from tumorscope.synthetic.outcomes import oracle_c_index
from tumorscope.synthetic.params import AnatomyParams, LesionParams, PatientParams
from tumorscope.synthetic.presets import DIFFICULTIES, PRESETS, PROFILES, Preset, get_preset

__all__ = [
    "DIFFICULTIES",
    "PRESETS",
    "PROFILES",
    "AnatomyParams",
    "LesionParams",
    "PatientParams",
    "Preset",
    "SynthSummary",
    "example_grid",
    "get_preset",
    "oracle_c_index",
    "read_strata",
    "sample_cohort",
    "synthesize",
    "synthesize_kaggle",
]
