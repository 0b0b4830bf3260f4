"""Which folders ``tumorscope train`` may start a run in, or continue with ``--resume``.

A new run needs an absent or empty folder. ``--resume`` needs a folder tumorscope started
as a run, recognised by what tumorscope itself wrote there: the record
``tumorscope-outputs.json`` listing ``config.yaml`` with the sha256 it still has (written
before anything else when a run starts), or a hash-verified resume manifest
(``progress/manifest.json``) or run manifest (``manifest.json``), as runs started before
the record existed have. A user's folder that merely holds a ``config.yaml`` is neither.

The preprocessing cache lives inside the run (``RUN/cache/``) unless the user names one.
``RUN/seen.json`` records the content identity of every unit per split (:func:`write_seen`),
so that evaluation tells a seen unit by its content, not by its file name.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from tumorscope.config import Config, save_config
from tumorscope.data.cache import cache_marker
from tumorscope.data.identity import SEEN_FILE, seen_units
from tumorscope.data.layout import discover
from tumorscope.data.prepared import PreparedData
from tumorscope.fileio import OutputExistsError, OutputFolder, atomic_write_via, sha256_file
from tumorscope.training.checkpoint import CheckpointError, read_manifest

log = logging.getLogger(__name__)

RUN_CONFIG = "config.yaml"
CACHE_DIR = "cache"


class RunError(RuntimeError):
    """The run folder cannot be used as asked (exists, or nothing to resume)."""


def default_cache(run_dir: Path) -> Path:
    """The preprocessing cache of a run when the user names none: ``RUN/cache``."""
    return Path(run_dir) / CACHE_DIR


def run_problem(run_dir: Path) -> str | None:
    """Why ``run_dir`` is not a run tumorscope started; None when it is one."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return "folder does not exist"
    try:
        recorded = OutputFolder(run_dir).written().get(RUN_CONFIG)
    except OutputExistsError as err:
        return f"{err.path.name} {err.fault}"
    config = run_dir / RUN_CONFIG
    if recorded is not None and config.is_file() and sha256_file(config) == recorded:
        return None
    for folder in (run_dir / "progress", run_dir):
        try:
            read_manifest(folder)
            return None
        except CheckpointError:
            continue
    return (
        f"no {RUN_CONFIG} recorded in tumorscope-outputs.json and no verified "
        "progress/manifest.json or manifest.json"
    )


def open_run_dir(run_dir: Path, resume: bool, *, cache: Path | None = None) -> None:
    """Check that a new run may start in ``run_dir``, or that ``--resume`` may continue it.

    Args:
        run_dir: The run folder.
        resume: ``--resume``.
        cache: The run's cache folder, checked too (before anything is written).

    Raises:
        RunError: A new run in a folder that is not empty, or ``--resume`` on a folder that
            does not exist or is not a run (naming what is missing).
        DataError: ``cache`` is not a cache folder tumorscope made.
    """
    run_dir = Path(run_dir)
    if not resume:
        if os.path.lexists(run_dir) and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise RunError(
                f"{run_dir}: run folder is not empty; use --resume to continue it or choose "
                "a new --out"
            )
    elif not run_dir.is_dir():
        raise RunError(f"{run_dir}: nothing to resume (folder does not exist)")
    elif (problem := run_problem(run_dir)) is not None:
        raise RunError(
            f"{run_dir}: not a tumorscope run ({problem}); --resume continues only a run "
            "tumorscope started"
        )
    if cache is not None:
        cache_marker(Path(cache))


def write_run_config(run_dir: Path, cfg: Config, resume: bool) -> None:
    """Write ``RUN/config.yaml`` (atomically, recorded in the folder's record).

    On ``--resume`` the file is replaced only when the record lists it unchanged; a run
    started before the record existed keeps the ``config.yaml`` it has.

    Raises:
        RunError: ``config.yaml`` was changed since tumorscope wrote it.
    """
    folder = OutputFolder(run_dir, overwrite=resume)
    if resume and RUN_CONFIG not in folder.written() and os.path.lexists(run_dir / RUN_CONFIG):
        return
    try:
        folder.write_with(RUN_CONFIG, lambda p: atomic_write_via(p, lambda t: save_config(cfg, t)))
    except OutputExistsError as err:
        raise RunError(str(err)) from None


def write_seen(
    run_dir: Path, data: Sequence[str | Path], prepared: PreparedData, resume: bool
) -> None:
    """Write ``RUN/seen.json``: the ``(source, content id)`` of every unit per split
    (:class:`~tumorscope.data.identity.SeenUnits`), recorded in the folder's record.

    Args:
        run_dir: The run folder.
        data: The data folders ``prepared`` was made from.
        prepared: The prepared data (its slice table names each unit's split).
        resume: ``--resume`` (an earlier ``seen.json`` of this run is replaced).

    Raises:
        RunError: ``seen.json`` exists and was not written by this run as it is now.
        DataError: A unit's file cannot be read.
    """
    t0 = time.perf_counter()
    index = discover(list(data), max_voxels=prepared.cfg.data.max_voxels)
    seen = seen_units(index, prepared.slices)
    try:
        OutputFolder(run_dir, overwrite=resume).write_json(SEEN_FILE, seen.to_dict())
    except OutputExistsError as err:
        raise RunError(str(err)) from None
    n = sum(len(units) for units in seen.splits.values())
    log.info("%s: content identities of %d units (%.1f s)", SEEN_FILE, n, time.perf_counter() - t0)
