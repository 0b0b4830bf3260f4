"""``make demo``: synthesise data, train the standard recipe, evaluate held-out patients.

The results table (:func:`evaluate_held_out`) is read from the report of
:func:`~tumorscope.evaluation.evaluate.evaluate_run`, so it shows the same figures as
``tumorscope evaluate``.

Usage: ``python -m tumorscope.demo --config configs/demo.yaml --out runs/demo``.

Beside ``runs/demo`` it keeps ``runs/demo-data`` (synthetic data, reused while
``demo-params.json`` matches), ``runs/demo-cache`` (the preprocessing cache, reused) and
``runs/demo-report``. It replaces only what it made itself: a run folder only when it is a
tumorscope run, a data folder only when it holds the demo's ``demo-params.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from tumorscope import DISCLAIMER
from tumorscope.config import load_config
from tumorscope.evaluation.domain import domain_summary
from tumorscope.evaluation.evaluate import evaluate_run
from tumorscope.evaluation.report import REPORT_FILES
from tumorscope.evaluation.survival_cv import survival_cross_validation
from tumorscope.fileio import OutputExistsError, OutputFolder, atomic_write_bytes, atomic_write_json
from tumorscope.inference.predictor import Predictor
from tumorscope.progress import training_progress
from tumorscope.synthetic import synthesize
from tumorscope.training.run import train_run
from tumorscope.training.runfolder import run_problem

log = logging.getLogger("tumorscope.demo")

# Synthetic cohort per profile: enough patients for the CPU budget, easy preset (issue: demo).
DEMO_DATA: dict[str, dict[str, Any]] = {
    "brain-mri": {"patients": 40, "kaggle": 200, "difficulty": "easy", "shape": (160, 192, 144)},
    "petct": {"patients": 40, "kaggle": 0, "difficulty": "easy", "shape": (128, 128, 96)},
}

# Demo table rows: label → metrics.json key.
DEMO_TABLE = {
    "3D whole-tumour Dice": "segmentation.dice",
    "3D Dice, ungated": "segmentation.dice_ungated",
    "HD95": "segmentation.hd95_mm",
    "slice ROC-AUC": "classification.slice_roc_auc",
    "image-folder ROC-AUC": "classification.image_roc_auc",
    "ECE after temperature": "calibration.ece_after_temperature",
    "review rate at the run's cut-off, slices": "selective.slices.review_rate",
    "error of the decisions not flagged, slices": "selective.slices.accepted_error",
    "uncertainty AUROC for wrong slice decisions": "selective.slices.uncertainty_auroc",
}
# Survival rows: out-of-fold over every demo patient (8 test patients measure no C-index).
SURVIVAL_TABLE = {
    "C-index, out of fold (survival model on predicted masks)": "c_index",
    "C-index, same model on ground-truth masks": "c_index_gt_features",
    "C-index, clinical covariates alone": "c_index_clinical",
    "C-index, observable ceiling (true coefficients, exact features)": "c_index_observable",
    "C-index, oracle (true hazard)": "c_index_oracle",
}


def synthesize_demo_data(profile: str, out: Path, seed: int, workers: int) -> Path:
    """Write (or reuse) the demo's synthetic data set and return its folder."""
    params = {**DEMO_DATA[profile], "profile": profile, "seed": seed}
    marker = out / "demo-params.json"
    try:
        found = json.loads(marker.read_bytes()) if marker.is_file() else None
    except ValueError:  # JSON or UTF-8: not the marker the demo writes
        found = None
    if found == {**params, "shape": list(params["shape"])}:
        log.info("reusing synthetic data in %s", out)
        return out
    if out.exists() and any(out.iterdir()):
        if not isinstance(found, dict) or found.get("profile") not in DEMO_DATA:
            raise SystemExit(
                f"{out}: exists and is not the demo's synthetic data (no demo-params.json); "
                "refusing to replace it"
            )
        shutil.rmtree(out)
    t0 = time.perf_counter()
    synthesize(
        profile=profile,
        patients=params["patients"],
        out=out,
        kaggle=params["kaggle"],
        difficulty=params["difficulty"],
        seed=seed,
        shape=tuple(params["shape"]),
        workers=workers,
    )
    atomic_write_bytes(marker, json.dumps({**params, "shape": list(params["shape"])}).encode())
    log.info("synthesised %d patients in %.0f s", params["patients"], time.perf_counter() - t0)
    return out


def evaluate_held_out(
    *,
    run: str | Path,
    data: Sequence[str | Path],
    split: str = "test",
    out: str | Path | None = None,
    n_boot: int = 1000,
    overwrite: bool = False,
) -> dict[str, Any]:
    """The demo's results table, read from :func:`~tumorscope.evaluation.evaluate.evaluate_run`.

    Args:
        run: Run folder.
        data: Data folders.
        split: The run's split to evaluate (unseen patients are always evaluated).
        out: Report folder (default ``<run>-report`` beside the run; never inside it).
        n_boot: Bootstrap replicates.
        overwrite: Replace an earlier report tumorscope wrote in ``out`` (never other files).

    Returns:
        ``{"split", "table": label → figure, "patients", "report", "domain"}``: ``domain``
        is the report's ``metrics.json`` ``domain`` section (the out-of-domain flags of the
        held-out volumes and images).
    """
    run_dir = Path(run)
    report_dir = Path(out) if out is not None else run_dir.parent / f"{run_dir.name}-report"
    report = evaluate_run(
        run=run_dir, data=[Path(d) for d in data], out=report_dir, split=split, n_boot=n_boot,
        overwrite=overwrite,
    )  # fmt: skip
    table = {label: report.figure(key) for label, key in DEMO_TABLE.items()}
    for src in report.metrics["calibration"].get("by_source", {}):  # ECE of each source
        table[f"ECE after temperature, {src}"] = report.figure(
            f"calibration.by_source.{src}.ece_after_temperature"
        )
    return {
        "split": split,
        "table": table,
        "patients": list(report.held.case_ids),
        "report": str(report_dir),
        "domain": report.metrics["domain"],
    }


def run_demo(
    *, config: Path, out: Path, data: Path | None = None, workers: int = 2
) -> dict[str, Any]:
    """The whole main job; returns the results table as a mapping.

    ``data``: an existing data folder, used as it is (no synthesis).
    """
    cfg = load_config(config)
    data_dir = data or out.parent / f"{out.name}-data"
    if out.exists() and (problem := run_problem(out)) is not None:
        raise SystemExit(
            f"{out}: exists and is not a tumorscope run ({problem}); refusing to replace it"
        )
    report_dir = out.parent / f"{out.name}-report"
    try:  # before hours of work: the report folder must take an earlier demo report only
        OutputFolder(report_dir, overwrite=True).check_all(REPORT_FILES)
    except OutputExistsError as err:
        raise SystemExit(str(err)) from None
    t0 = time.perf_counter()
    if data is None:
        synthesize_demo_data(cfg.profile, data_dir, cfg.runtime.seed, workers)
    t_data = time.perf_counter() - t0
    if out.exists():
        shutil.rmtree(out)
    cache = out.parent / f"{out.name}-cache"
    with training_progress() as progress:
        result = train_run(cfg=cfg, data=[data_dir], out=out, cache=cache, progress=progress)
    t_train = time.perf_counter() - t0 - t_data
    figures = evaluate_held_out(run=out, data=[data_dir], out=report_dir, overwrite=True)
    cv = survival_cross_validation(Predictor.from_run(out), [data_dir])
    figures["survival_cv"] = cv
    for label, key in SURVIVAL_TABLE.items():
        figures["table"][label] = cv[key]
    figures["seconds_data"] = round(t_data, 1)
    figures["seconds_train"] = round(t_train, 1)
    figures["seconds_total"] = round(time.perf_counter() - t0, 1)
    figures["stages"] = {
        k: v.get("best_metrics", v.get("skipped")) for k, v in result.stages.items()
    }
    atomic_write_json(out / "demo-results.json", figures)
    return figures


def domain_line(figures: dict[str, Any]) -> str:
    """The demo's line of out-of-domain flags on held-out inputs (false alarms: they are
    the run's own kind of data), from the report's ``domain`` section."""
    section = figures.get("domain")
    found = "not measured" if section is None else domain_summary(section)
    return f"out-of-domain flags on held-out inputs: {found}"


def _print_table(figures: dict[str, Any], out: Path) -> None:
    console = Console()
    table = Table(title="tumorscope demo — held-out synthetic patients")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("n", justify="right")
    for key, item in figures.get("table", {}).items():
        value = item["value"]
        ci = item.get("ci95")
        shown = "n/a" if value is None else f"{value:.3f}"
        if ci and None not in ci:
            shown += f"  [{ci[0]:.3f}, {ci[1]:.3f}]"
        table.add_row(key, shown, str(item.get("n", "")))
    table.add_row(
        "time: data / train / total (s)",
        f"{figures['seconds_data']} / {figures['seconds_train']} / {figures['seconds_total']}",
        "",
    )
    console.print(table)
    console.print(domain_line(figures))
    console.print(
        f"run: [bold]{out}[/]  (model.safetensors + manifest.json; figures in {out / 'demo-results.json'})"
    )
    console.print(
        f"try it in a browser: [bold].venv/bin/tumorscope app --run {out} "
        f"--report {figures['report']}[/]  "
        "(the HTTP service and the web UI; Ctrl-C stops both)"
    )
    console.print(f"[dim]{DISCLAIMER}[/]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--data", type=Path, default=None, help="Existing data folder (skip synthesis)."
    )
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False, show_time=False)],
    )
    for noisy in ("numexpr", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    figures = run_demo(config=args.config, out=args.out, data=args.data, workers=args.workers)
    _print_table(figures, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
