"""Command-line interface: thin wrappers over typed library functions.

Every command parses its options, calls one library function with keyword arguments,
and renders the result. Known errors (bad config, bad data, a file that cannot be read or
written, too little memory, a bad option) end with exit code 2 and one line
``error: PATH: fault``; an unexpected one with exit code 1, one line and the traceback in
a private log file. Never a traceback on the terminal. Every piece of data printed (paths,
table values, error texts) passes through :func:`tumorscope.text.printable` and is never
read as rich markup.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from tumorscope import DISCLAIMER
from tumorscope.cli.boundary import (
    friendly_errors,
    print_error,
    print_mapping,
    report_unexpected,
    say,
    setup_logging,
    stdout_console,
)
from tumorscope.cli.data import data_app
from tumorscope.cli.options import ClinicalOpt, ClinicalTableOpt, ConfigOpt, OverwriteOpt, SetOpt
from tumorscope.text import printable

app = typer.Typer(
    name="tumorscope",
    help=f"Find, outline and predict the outcome of tumours in medical images. {DISCLAIMER}",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    setup_logging(verbose)


@app.command()
@friendly_errors
def info(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Also print this config, resolved.")
    ] = None,
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Versions, threads, bf16 support and (optionally) a resolved config."""
    # deferred: the command's own modules (torch, nibabel) load only when it runs
    from tumorscope.config import load_config
    from tumorscope.runtime import runtime_info

    facts = runtime_info().as_dict()
    resolved = load_config(config, set_ or []).to_dict() if config else None
    if as_json:
        stdout_console().print_json(json.dumps({"runtime": facts, "config": resolved}))
        return
    table = Table(title="tumorscope", show_header=False)
    for k, v in facts.items():
        table.add_row(Text(printable(k)), Text(printable(str(v))))
    stdout_console().print(table)
    if resolved is not None:
        # deferred: the command's own modules (torch, nibabel) load only when it runs
        import yaml

        say(yaml.safe_dump(resolved, sort_keys=False))
    stdout_console().print(f"[dim]{DISCLAIMER}[/]")


@app.command()
@friendly_errors
def train(
    config: ConfigOpt,
    data: Annotated[list[Path], typer.Option("--data", "-d", help="Data folder(s); repeatable.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write.")],
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue a stopped run in --out.")
    ] = False,
    set_: SetOpt = None,
    nproc: Annotated[
        int, typer.Option("--nproc", help="Training processes (DDP on CPU: gloo).")
    ] = 1,
    cache: Annotated[
        Path | None, typer.Option("--cache", help="Preprocessing cache folder.")
    ] = None,
) -> None:
    """Train the configured stages into RUN_DIR (validates the config before reading data)."""
    # deferred: the command's own modules (torch, nibabel) load only when it runs
    from tumorscope.config import load_config

    cfg = load_config(config, set_ or [])  # fail fast, before touching the data
    # deferred: the command's own modules (torch, nibabel) load only when it runs
    from tumorscope.progress import training_progress
    from tumorscope.training.run import train_run

    with training_progress() as progress:
        result = train_run(
            cfg=cfg,
            data=data,
            out=out_dir,
            resume=resume,
            cache=cache,
            nproc=nproc,
            progress=progress,
        )
    print_mapping("training finished", result.summary())
    say(f"run written to {out_dir}")


@app.command()
@friendly_errors
def evaluate(
    run: Annotated[Path, typer.Option("--run", help="Run folder.")],
    data: Annotated[list[Path], typer.Option("--data", "-d", help="Data folder(s).")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Report folder.")],
    split: Annotated[
        str, typer.Option("--split", help="Split of the run's own patients to evaluate.")
    ] = "test",
    overwrite: OverwriteOpt = False,
    allow_inside_input: Annotated[
        bool,
        typer.Option(
            "--allow-inside-input",
            help="Allow --out inside a --data folder (its files are still never replaced).",
        ),
    ] = False,
) -> None:
    """Evaluate a run on data; write metrics.json, report.md and plots."""
    # deferred: the command's own modules (torch, nibabel) load only when it runs
    from tumorscope.evaluation.evaluate import evaluate_run

    report = evaluate_run(
        run=run, data=data, out=out_dir, split=split, overwrite=overwrite,
        allow_inside_input=allow_inside_input,
    )  # fmt: skip
    print_mapping("evaluation", report.summary())
    say(f"report written to {out_dir}")


@app.command()
@friendly_errors
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Report or run folders to compare.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    data: Annotated[
        list[Path] | None,
        typer.Option("--data", "-d", help="Data folder(s), to evaluate run folders first."),
    ] = None,
    split: Annotated[
        str, typer.Option("--split", help="Split evaluated for run folders.")
    ] = "test",
    margin: Annotated[
        float, typer.Option("--margin", min=0.0, help="Non-inferiority margin for Dice.")
    ] = 0.02,
    overwrite: OverwriteOpt = False,
) -> None:
    """Compare runs side by side with paired tests (DeLong, paired bootstrap, non-inferiority)."""
    # deferred: the command's own modules (torch, nibabel) load only when it runs
    from tumorscope.evaluation.compare import compare_runs

    result = compare_runs(
        runs=runs, out=out_dir, data=data, split=split, margin=margin, overwrite=overwrite
    )
    say(result.markdown())


@app.command()
@friendly_errors
def predict(
    inputs: Annotated[
        list[Path], typer.Argument(help="Images, NIfTI files, case folders or DICOM folders.")
    ],
    run: Annotated[Path, typer.Option("--run", help="Run folder.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    gate_threshold: Annotated[
        float | None,
        typer.Option(
            "--gate-threshold",
            min=0.0,
            max=1.0,
            help="Tumour probability under which no mask is returned (default: the run's, 0.3).",
        ),
    ] = None,
    mc_samples: Annotated[
        int,
        typer.Option(
            "--mc-samples", min=0, help="MC-dropout samples for uncertainty maps (0 = off)."
        ),
    ] = 0,
    tta: Annotated[
        int,
        typer.Option(
            "--tta",
            min=0,
            max=8,
            help="Test-time-augmentation views (flips, small rotations and scales; 0 = off); "
            "merged with --mc-samples.",
        ),
    ] = 0,
    gradcam: Annotated[
        bool, typer.Option("--gradcam", help="Write a Grad-CAM map per input.")
    ] = False,
    figure: Annotated[
        bool, typer.Option("--figure", help="Write the six-panel figure per input.")
    ] = False,
    truth: Annotated[
        list[Path] | None,
        typer.Option("--truth", help="Ground-truth mask per input, in order (for --figure)."),
    ] = None,
    overwrite: OverwriteOpt = False,
    allow_inside_input: Annotated[
        bool,
        typer.Option(
            "--allow-inside-input",
            help="Allow --out to be an input's folder (its files are still never replaced).",
        ),
    ] = False,
    clinical: ClinicalOpt = None,
    clinical_table: ClinicalTableOpt = None,
) -> None:
    """Predict tumour probability, mask and risk for each input."""
    # deferred: the command's own modules (torch, nibabel) load only when it runs
    from tumorscope.inference.cli import predict_inputs

    lines = predict_inputs(
        run=run, inputs=inputs, out=out_dir, gate_threshold=gate_threshold, clinical=clinical,
        mc_samples=mc_samples, gradcam=gradcam, figure=figure, tta_views=tta, truth=truth,
        overwrite=overwrite, allow_inside_input=allow_inside_input, clinical_table=clinical_table,
    )  # fmt: skip
    for line in lines:
        say(line)


@app.command()
@friendly_errors
def export(
    run: Annotated[Path, typer.Option("--run", help="A finished run folder.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Export folder (new or empty).")],
    format_: Annotated[
        str,
        typer.Option(
            "--format", help="onnx (FP32) or onnx-int8 (static INT8, calibrated on real slices)."
        ),
    ] = "onnx",
    data: Annotated[
        list[Path] | None,
        typer.Option(
            "--data", "-d", help="Data folder(s) (default: the ones the run was trained on)."
        ),
    ] = None,
    calibration_slices: Annotated[
        int | None,
        typer.Option(
            "--calibration-slices",
            min=1,
            help="Training slices INT8 is calibrated on (default: export.calibration_slices).",
        ),
    ] = None,
    max_accuracy_change: Annotated[
        float | None,
        typer.Option(
            "--max-accuracy-change",
            min=0.0,
            max=1.0,
            help="Largest validation Dice/AUC change allowed (default: export.max_accuracy_change).",
        ),
    ] = None,
    prune: Annotated[
        float | None,
        typer.Option(
            "--prune",
            min=0.0,
            max=1.0,
            help="Remove this share of channels first, fine-tune and refit the calibration.",
        ),
    ] = None,
    prune_steps: Annotated[
        int, typer.Option("--prune-steps", min=0, help="Fine-tune steps after --prune.")
    ] = 150,
    cache: Annotated[
        Path | None,
        typer.Option(
            "--cache", help="Preprocessing cache for the fine-tune (default <run>-cache)."
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier export in --out.")
    ] = False,
) -> None:
    """Export a run for ONNX Runtime: parity-checked FP32, or INT8 within an accuracy budget."""
    # deferred: the command's own modules (torch, onnxruntime) load only when it runs
    from tumorscope.export.run import export_run

    result = export_run(
        run=run, out=out_dir, format=format_, data=data, calibration_slices=calibration_slices,
        max_accuracy_change=max_accuracy_change, prune=prune, prune_steps=prune_steps,
        cache=cache, overwrite=overwrite,
    )  # fmt: skip
    report = result.report
    chosen = report["variants"][report["chosen"]]
    torch_ms = report["variants"]["pytorch"]["latency"]["p50_ms"]
    rows = {
        "variant": report["chosen"],
        "max probability difference (FP32 parity)": report["parity"].get(
            "max_probability_difference"
        ),
        "mask agreement (FP32 parity)": report["parity"]["mask_agreement"],
        **{f"validation {k} change": v for k, v in chosen.get("change", {}).items()},
        "batch latency ms (PyTorch)": torch_ms,
        "batch latency ms (export)": chosen["latency"]["p50_ms"],
        "graph MB": chosen["bytes"] / 1e6,
    }
    if report.get("pruning"):
        pr = report["pruning"]
        rows["pruned: parameters"] = (
            f"{pr['parameters_before']:.0f} -> {pr['parameters_after']:.0f}"
        )
        rows["pruned: MMAC per slice"] = (
            f"{pr['macs_before'] / 1e6:.0f} -> {pr['macs_after'] / 1e6:.0f}"
        )
    print_mapping("export", rows)
    say(f"export written to {out_dir} (export.md has the tables)")


@app.command()
@friendly_errors
def serve(
    run: Annotated[
        Path | None, typer.Option("--run", help="Run folder to serve (or TUMORSCOPE_RUN).")
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="An `evaluate --out` folder whose metrics the card shows."),
    ] = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Address to bind (default 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=0, max=65535, help="TCP port (default 8000).")
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Worker processes (each loads the model).")
    ] = 1,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="No API key (loopback addresses only).")
    ] = False,
) -> None:
    """Serve a run over HTTP (FastAPI + uvicorn); other settings from TUMORSCOPE_* / .env."""
    # deferred: the command's own modules (torch, fastapi) load only when it runs
    from pydantic import ValidationError

    from tumorscope.serving.modelcard import ReportError
    from tumorscope.serving.server import ServeError
    from tumorscope.serving.server import serve as serve_app
    from tumorscope.serving.settings import ServiceSettings

    given = {"run": run, "report": report, "host": host, "port": port}
    overrides = {k: v for k, v in given.items() if v is not None}
    if no_auth:
        overrides["no_auth"] = True
    try:
        settings = ServiceSettings(**overrides)  # type: ignore[arg-type]
        serve_app(settings, workers=workers, announce=say)
    except ValidationError as e:
        faults = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in e.errors()
        )
        print_error(f"settings: {faults}")
        raise typer.Exit(2) from None
    except (ServeError, ReportError) as e:
        print_error(str(e))
        raise typer.Exit(2) from None


@app.command()
@friendly_errors
def ui(
    api: Annotated[
        str, typer.Option("--api", help="The service's URL (its key: TUMORSCOPE_API_KEY).")
    ] = "http://127.0.0.1:8000",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="UI port.")] = 8501,
) -> None:
    """The web UI (Streamlit) in front of a running `tumorscope serve`."""
    # deferred: the command's own modules load only when it runs
    from tumorscope.cli.launch import LaunchError, run_ui

    try:
        code = run_ui(api=api, port=port)
    except LaunchError as e:
        print_error(str(e))
        raise typer.Exit(2) from None
    raise typer.Exit(code)


@app.command(name="app")
@friendly_errors
def app_(
    run: Annotated[Path, typer.Option("--run", help="Run folder to serve.")],
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="UI port.")] = 8501,
    api_port: Annotated[
        int, typer.Option("--api-port", min=1, max=65535, help="Service port.")
    ] = 8000,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="An `evaluate --out` folder for the model card."),
    ] = None,
) -> None:
    """The service and the web UI together; both stop on Ctrl-C / SIGTERM."""
    # deferred: the command's own modules load only when it runs
    from tumorscope.cli.launch import LaunchError, run_app

    try:
        run_app(run=run, port=port, api_port=api_port, report=report, announce=say)
    except LaunchError as e:
        print_error(str(e))
        raise typer.Exit(2) from None


def main() -> None:
    """Console-script entry point: option errors too are one ``error:`` line, exit 2."""
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as e:  # click's usage errors; the help page printed itself
        if e.format_message():
            print_error(e.format_message())
        sys.exit(e.exit_code)
    except typer.Abort:
        print_error("aborted")
        sys.exit(1)
    except Exception as e:  # a failure outside a command (option parsing): still one line
        report_unexpected(e)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
