"""``tumorscope data``: synthesise, inspect, validate and prepare data."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from tumorscope.cli.boundary import friendly_errors, say, stderr_console
from tumorscope.cli.options import ConfigOpt, SetOpt
from tumorscope.data.limits import MAX_VOXELS
from tumorscope.text import printable

data_app = typer.Typer(help="Synthesise, inspect, validate and prepare data.", no_args_is_help=True)


@data_app.command("synth")
@friendly_errors
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
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**32 - 1, help="Random seed.")] = 0,
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
    if kaggle and profile != "brain-mri":
        raise typer.BadParameter("--kaggle images exist for the brain-mri profile only")
    parsed = _parse_shape(shape) if shape else None
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
    say(str(summary))


# Synthetic volumes: each axis within [MIN_AXIS, 512], and at most 2**24 voxels (the MNI
# template is 182x218x182 = 7.2 M), so a typo cannot ask for terabytes.
MAX_SYNTH_AXIS = 512
MAX_SYNTH_VOXELS = 2**24


def _parse_shape(shape: str) -> tuple[int, int, int]:
    from tumorscope.synthetic.generate import MIN_AXIS  # deferred: nilearn, nibabel

    try:
        x, y, z = (int(v) for v in shape.split(","))
    except ValueError:
        raise typer.BadParameter(f"--shape must be three integers X,Y,Z, got {shape!r}") from None
    if not all(MIN_AXIS <= n <= MAX_SYNTH_AXIS for n in (x, y, z)) or x * y * z > MAX_SYNTH_VOXELS:
        raise typer.BadParameter(
            f"--shape {x},{y},{z}: each axis must be in [{MIN_AXIS}, {MAX_SYNTH_AXIS}] "
            f"and the volume at most {MAX_SYNTH_VOXELS} voxels"
        )
    return x, y, z


@data_app.command("inspect")
@friendly_errors
def data_inspect(
    root: Annotated[
        Path, typer.Argument(help="Dataset root or a folder up to two levels above one.")
    ],
    max_voxels: Annotated[
        int, typer.Option("--max-voxels", min=1, help="Largest volume accepted.")
    ] = MAX_VOXELS,
) -> None:
    """Say which layouts a folder holds, then patients, slices, labels, spacing and problems."""
    # deferred: the command's own modules (torch, nibabel) load only when it runs
    from tumorscope.data.inspect import inspect_dataset

    say(inspect_dataset(root, max_voxels=max_voxels).render())


@data_app.command("validate")
@friendly_errors
def data_validate(
    roots: Annotated[list[Path], typer.Argument(help="Dataset folders.")],
    max_voxels: Annotated[
        int, typer.Option("--max-voxels", min=1, help="Largest volume accepted.")
    ] = MAX_VOXELS,
) -> None:
    """Check every file; print every problem as `PATH: fault`; exit 1 if any."""
    # deferred: the command's own modules (torch, nibabel) load only when it runs
    from tumorscope.data.inspect import validate_dataset

    problems = validate_dataset(roots, max_voxels=max_voxels)
    for p in problems:  # escaped: a newline in a file name must not forge a second line
        sys.stdout.write(f"{printable(str(p))}\n")
    if problems:
        stderr_console().print(f"[red]{len(problems)} problem(s) found[/]")
        raise typer.Exit(1)
    stderr_console().print("[green]no problems found[/]")


@data_app.command("prepare")
@friendly_errors
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
    say(str(prepared))
