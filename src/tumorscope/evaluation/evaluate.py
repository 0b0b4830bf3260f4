"""``tumorscope evaluate``: every figure of a run on held-out data, with patient-level CIs.

:func:`evaluate_run` loads a run (or one of its stage checkpoints), predicts the held-out
patients through the :class:`~tumorscope.inference.predictor.Predictor` (so it measures
exactly what users get), and writes ``metrics.json``, ``predictions.json``, ``report.md``
and the plots into a report folder; it never writes into the run, never into a data
folder (unless ``allow_inside_input``), and never over a file it did not write itself
(:class:`~tumorscope.fileio.OutputFolder`; its own earlier report only with ``overwrite``).

Which units are held out is decided by content where the run recorded it
(:mod:`~tumorscope.evaluation.seen`; ``RUN/seen.json``), by name for older runs, and the
report says how many were left out as seen and why.

The steps live one layer down each: :mod:`~tumorscope.evaluation.seen` (which units),
:mod:`~tumorscope.evaluation.collect` (held-out outputs),
:mod:`~tumorscope.evaluation.sections` (the figures) and
:mod:`~tumorscope.evaluation.report` (the files).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tumorscope.data.identity import SEEN_FILE
from tumorscope.data.layout import discover
from tumorscope.evaluation.collect import HeldOut, collect_units
from tumorscope.evaluation.report import REPORT_FILES, write_report
from tumorscope.evaluation.sections import compute_metrics
from tumorscope.evaluation.seen import read_run_seen, run_seen_file, select_held_out
from tumorscope.evaluation.strata import NEAR_MM
from tumorscope.fileio import OutputFolder, is_inside
from tumorscope.inference.predictor import Predictor
from tumorscope.runs import CheckpointError, load_run

log = logging.getLogger(__name__)


class EvaluationError(Exception):
    """A run or report folder that cannot be evaluated; ``str(err)`` is ``"PATH: fault"``."""

    def __init__(self, path: str | Path, fault: str) -> None:
        self.path = Path(path)
        self.fault = fault
        super().__init__(f"{path}: {fault}")


def load_predictor(run: str | Path) -> Predictor:
    """A Predictor for a finished run, or for a stage checkpoint ``RUN/stages/<name>``.

    A stage checkpoint has no calibration: it is evaluated with temperature 1, threshold
    0.5 and the configured gate (0.3 by default); the parent run's splits, training
    survival data, ``tau`` and clinical imputation (data properties, not model ones) are
    used, and the Breslow baseline and risk quantiles (fitted to the final model) are not
    (:func:`tumorscope.runs.load.stage_calibration`).

    Raises:
        EvaluationError: The folder is not a readable run or checkpoint.
    """
    run_dir = Path(run)
    try:
        return Predictor.from_loaded(load_run(run_dir))
    except CheckpointError as err:
        raise EvaluationError(run_dir, f"not a readable run or stage checkpoint ({err})") from None


@dataclass
class EvaluationReport:
    """What ``tumorscope evaluate`` wrote.

    Attributes:
        out: Report folder.
        metrics: The ``metrics.json`` content.
        held: The collected per-patient/per-slice outputs.
        plots: Plot name → PNG path.
    """

    out: Path
    metrics: dict[str, Any]
    held: HeldOut
    plots: dict[str, Path] = field(default_factory=dict)

    def figure(self, key: str) -> dict[str, Any]:
        """The figure at a dotted key, e.g. ``"segmentation.by_region.WT.dice"``."""
        node: Any = self.metrics
        for part in key.split("."):
            node = node[part]
        return dict(node)

    def summary(self) -> dict[str, float | None]:
        """Flat mapping dotted key → value of every figure."""
        flat: dict[str, float | None] = {}

        def walk(node: Mapping[str, Any], prefix: str) -> None:
            for k, v in node.items():
                if isinstance(v, Mapping) and "value" in v and "ci95" in v:
                    flat[prefix + k] = v["value"]
                elif isinstance(v, Mapping) and k != "meta":
                    walk(v, f"{prefix}{k}.")

        walk(self.metrics, "")
        return flat


def evaluate_predictor(
    predictor: Predictor,
    *,
    data: Sequence[str | Path],
    out: str | Path,
    split: str = "test",
    n_boot: int = 1000,
    seed: int = 0,
    run: str | Path | None = None,
    overwrite: bool = False,
) -> EvaluationReport:
    """Evaluate a Predictor on the held-out units of ``data`` and write the report.

    Args:
        predictor: A Predictor (its manifest gives the splits and calibration).
        data: Data folders.
        out: Report folder (created).
        split: The run's split to evaluate; units in none of its splits are always evaluated.
        n_boot: Bootstrap replicates per figure.
        seed: Bootstrap seed.
        run: Run folder, recorded in the report; its ``seen.json`` (if any) decides which
            units are seen, by content; without one they are told by name.
        overwrite: Replace the files of an earlier report in ``out`` (never other files).

    Raises:
        EvaluationError: ``split`` is not one of the run's splits.
        OutputExistsError: A report file would replace one it may not (checked first).
        DataError: The run's ``seen.json`` or a folder's ``strata.csv`` is malformed.
    """
    manifest = predictor.manifest
    splits = manifest.splits or {}
    if splits and split not in splits:
        raise EvaluationError(
            run or "<predictor>", f"split {split!r} not in the run's splits {sorted(splits)}"
        )
    OutputFolder(out, overwrite=overwrite).check_all(REPORT_FILES)  # before the work
    seen = None if run is None else read_run_seen(run)
    index = discover(data)
    chosen = select_held_out(
        index,
        split=split,
        splits=splits,
        seen=seen,
        seen_file=SEEN_FILE if run is None else run_seen_file(run),
    )
    held = collect_units(predictor, index, chosen)
    calibration = predictor.calibration
    metrics = compute_metrics(held, calibration, n_boot=n_boot, seed=seed)
    metrics["meta"] = {
        "run": None if run is None else str(run),
        "data": [str(d) for d in data],
        "split": split,
        "temperature": held.temperature,
        "threshold": held.threshold,
        "gate_threshold": float(predictor.gate_threshold),
        "regions": held.regions,
        "n_boot": n_boot,
        "stage": manifest.stage,
        "held_out": held.held_out,
    }
    if held.strata_files:
        metrics["meta"]["strata"] = {
            "files": held.strata_files,
            "warnings": held.strata_warnings,
            "near_mm": NEAR_MM,
        }
    plot_files = write_report(Path(out), metrics, held, calibration, overwrite=overwrite)
    return EvaluationReport(out=Path(out), metrics=metrics, held=held, plots=plot_files)


def evaluate_run(
    *,
    run: Path,
    data: list[Path],
    out: Path,
    split: str = "test",
    n_boot: int = 1000,
    seed: int = 0,
    overwrite: bool = False,
    allow_inside_input: bool = False,
) -> EvaluationReport:
    """``tumorscope evaluate``: evaluate a run (or stage checkpoint) into ``out``.

    Args:
        run: Run folder or stage checkpoint ``RUN/stages/<name>``.
        data: Data folders.
        out: Report folder.
        split: The run's split to evaluate.
        n_boot: Bootstrap replicates per figure.
        seed: Bootstrap seed.
        overwrite: Replace the files of an earlier report in ``out`` (never other files).
        allow_inside_input: Allow ``out`` inside a data folder (its files are still never
            replaced).

    Raises:
        EvaluationError: ``out`` is inside the run folder or (unless
            ``allow_inside_input``) a data folder, or the run is unreadable.
        OutputExistsError: A report file would replace one it may not (checked first).
    """
    run, out = Path(run), Path(out)
    owner = run.parent.parent if run.parent.name == "stages" else run
    if is_inside(out, owner):
        raise EvaluationError(
            out, f"is inside the run folder {run}; evaluate never writes into a run"
        )
    for d in data if not allow_inside_input else []:
        if is_inside(out, Path(d) if Path(d).is_dir() else Path(d).parent):
            raise EvaluationError(
                out,
                f"is inside the data folder {d}; reports never go into a data folder "
                "(choose another --out, or pass --allow-inside-input)",
            )
    predictor = load_predictor(run)
    return evaluate_predictor(
        predictor, data=data, out=out, split=split, n_boot=n_boot, seed=seed, run=run,
        overwrite=overwrite,
    )  # fmt: skip
