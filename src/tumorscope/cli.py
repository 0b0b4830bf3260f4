"""Command-line interface: thin wrappers over typed library functions.

Every command parses its options, calls one library function with keyword arguments,
and renders the result. Known errors (bad config, bad data) end with exit code 2 and a
one-line message naming the file and the fault, never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from tumorscope import DISCLAIMER

app = typer.Typer(
    name="tumorscope",
    help=f"Find, outline and predict the outcome of tumours in medical images. {DISCLAIMER}",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Synthesise, inspect, validate and prepare data.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _console() -> Console:
    """stderr console, created per call so redirected streams (tests, pipes) are honoured."""
    return Console(stderr=True)


def _out() -> Console:
    """stdout console; soft-wrapped so long problem lines stay greppable."""
    return Console(soft_wrap=True)


F = TypeVar("F", bound=Callable[..., Any])


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=_console(), show_path=False, show_time=False)],
        force=True,
    )
    for noisy in ("numexpr", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _friendly_errors(fn: F) -> F:
    """Turn known user-facing errors into a one-line message and exit code 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # deferred: the command's own modules (torch, nibabel) load only when it runs
        from tumorscope.config import ConfigError
        from tumorscope.data.types import DataError
        from tumorscope.runs import CheckpointError
        from tumorscope.training.run import RunError

        try:
            return fn(*args, **kwargs)
        except (ConfigError, DataError, RunError, CheckpointError, FileNotFoundError) as e:
            _console().print(
                f"[bold red]error:[/] {e}", soft_wrap=True, highlight=False, markup=True
            )
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    _setup_logging(verbose)


ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="YAML experiment config.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value: section.key=value (repeatable)."),
]


@app.command()
@_friendly_errors
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
        _out().print_json(json.dumps({"runtime": facts, "config": resolved}))
        return
    table = Table(title="tumorscope", show_header=False)
    for k, v in facts.items():
        table.add_row(k, str(v))
    _out().print(table)
    if resolved is not None:
        # deferred: the command's own modules (torch, nibabel) load only when it runs
        import yaml

        _out().print(yaml.safe_dump(resolved, sort_keys=False))
    _out().print(f"[dim]{DISCLAIMER}[/]")


@app.command()
@_friendly_errors
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
    _print_mapping("training finished", result.summary())
    _out().print(f"run written to [bold]{out_dir}[/]")


@app.command()
@_friendly_errors
def evaluate(
    run: Annotated[Path, typer.Option("--run", help="Run folder.")],
    data: Annotated[list[Path], typer.Option("--data", "-d", help="Data folder(s).")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Report folder.")],
    split: Annotated[
        str, typer.Option("--split", help="Split of the run's own patients to evaluate.")
    ] = "test",
) -> None:
    """Evaluate a run on data; write metrics.json, report.md and plots."""
    # deferred: the command's own modules (torch, nibabel) load only when it runs
    from tumorscope.evaluation.evaluate import evaluate_run

    report = evaluate_run(run=run, data=data, out=out_dir, split=split)
    _print_mapping("evaluation", report.summary())
    _out().print(f"report written to [bold]{out_dir}[/]")


@app.command()
@_friendly_errors
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
) -> None:
    """Compare runs side by side with paired tests (DeLong, paired bootstrap, non-inferiority)."""
    # deferred: the command's own modules (torch, nibabel) load only when it runs
    from tumorscope.evaluation.compare import compare_runs

    result = compare_runs(runs=runs, out=out_dir, data=data, split=split, margin=margin)
    _out().print(result.markdown())


@app.command()
@_friendly_errors
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
) -> None:
    """Predict tumour probability, mask and risk for each input."""
    # deferred: the command's own modules (torch, nibabel) load only when it runs
    from tumorscope.inference.cli import predict_inputs

    lines = predict_inputs(
        run=run, inputs=inputs, out=out_dir, gate_threshold=gate_threshold,
        mc_samples=mc_samples, gradcam=gradcam, figure=figure, truth=truth,
    )  # fmt: skip
    for line in lines:
        _out().print(line)


@data_app.command("synth")
@_friendly_errors
def data_synth(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder to write.")],
    profile: Annotated[str, typer.Option("--profile", help="brain-mri or petct.")] = "brain-mri",
    patients: Annotated[int, typer.Option("--patients", min=1, help="Volume patients.")] = 10,
    kaggle: Annotated[
        int, typer.Option("--kaggle", min=0, help="Kaggle-style 2D images (brain-mri).")
    ] = 0,
    difficulty: Annotated[
        str, typer.Option("--difficulty", help="easy, standard or hard.")
    ] = "standard",
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    shape: Annotated[
        str | None, typer.Option("--shape", help="Volume shape X,Y,Z (default full size).")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Parallel processes.")] = 1,
) -> None:
    """Write synthetic patients in the real on-disk layouts (BraTS, Kaggle, HECKTOR)."""
    # deferred: the command's own modules (torch, nibabel) load only when it runs
    from tumorscope.synthetic import synthesize

    if profile not in ("brain-mri", "petct"):
        raise typer.BadParameter(f"--profile must be brain-mri or petct, got {profile!r}")
    if difficulty not in ("easy", "standard", "hard"):
        raise typer.BadParameter(f"--difficulty must be easy, standard or hard, got {difficulty!r}")
    parsed: tuple[int, int, int] | None = None
    if shape:
        try:
            x, y, z = (int(v) for v in shape.split(","))
        except ValueError:
            raise typer.BadParameter(
                f"--shape must be three integers X,Y,Z, got {shape!r}"
            ) from None
        parsed = (x, y, z)
    summary = synthesize(
        profile=profile,
        patients=patients,
        out=out_dir,
        kaggle=kaggle,
        difficulty=difficulty,
        seed=seed,
        shape=parsed,
        workers=workers,
    )
    _out().print(str(summary))


@data_app.command("inspect")
@_friendly_errors
def data_inspect(
    root: Annotated[
        Path, typer.Argument(help="Dataset root or a folder up to two levels above one.")
    ],
    max_voxels: Annotated[int, typer.Option("--max-voxels", help="Largest volume accepted.")] = 2
    ** 27,
) -> None:
    """Say which layouts a folder holds, then patients, slices, labels, spacing and problems."""
    # deferred: the command's own modules (torch, nibabel) load only when it runs
    from tumorscope.data.inspect import inspect_dataset

    _out().print(
        inspect_dataset(root, max_voxels=max_voxels).render(), highlight=False, markup=False
    )


@data_app.command("validate")
@_friendly_errors
def data_validate(
    roots: Annotated[list[Path], typer.Argument(help="Dataset folders.")],
    max_voxels: Annotated[int, typer.Option("--max-voxels", help="Largest volume accepted.")] = 2
    ** 27,
) -> None:
    """Check every file; print every problem as `PATH: fault`; exit 1 if any."""
    # deferred: the command's own modules (torch, nibabel) load only when it runs
    from tumorscope.data.inspect import validate_dataset

    problems = validate_dataset(roots, max_voxels=max_voxels)
    for p in problems:
        sys.stdout.write(f"{p}\n")
    if problems:
        _console().print(f"[red]{len(problems)} problem(s) found[/]")
        raise typer.Exit(1)
    _console().print("[green]no problems found[/]")


@data_app.command("prepare")
@_friendly_errors
def data_prepare(
    roots: Annotated[list[Path], typer.Argument(help="Dataset folders.")],
    config: ConfigOpt,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Cache folder.")],
    set_: SetOpt = None,
) -> None:
    """Preprocess slices into a memory-mapped cache and write splits.json."""
    # deferred: the command's own modules (torch, nibabel) load only when it runs
    from tumorscope.config import load_config
    from tumorscope.data.cache import prepare

    cfg = load_config(config, set_ or [])
    prepared = prepare(roots, cfg, out_dir)
    _out().print(str(prepared))


def _print_mapping(title: str, mapping: dict[str, Any]) -> None:
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for k, v in mapping.items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    _out().print(table)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
