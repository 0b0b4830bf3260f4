"""Options several commands share, and the longer ones of one command: one definition each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="YAML experiment config.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value: section.key=value (repeatable)."),
]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace the files an earlier run of this command wrote in --out, if unchanged "
        "since (never any other file).",
    ),
]
ClinicalOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--clinical",
        metavar="NAME=VALUE",
        help="Clinical covariate for every volume's survival risk, e.g. Age=61 (repeatable; "
        "NAME=NA: missing, imputed from the run's training value). 2D images ignore it.",
    ),
]
ClinicalTableOpt = Annotated[
    Path | None,
    typer.Option(
        "--clinical-table",
        help="CSV/TSV of clinical covariates, one row per patient (id column Brats20ID, "
        "PatientID, patient_id, ID or subject), matched to each case by its id; a case "
        "without a row gets every covariate imputed.",
    ),
]
