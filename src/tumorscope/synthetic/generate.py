"""``synthesize``: sample a cohort, render it in worker processes, write the real layouts.

Patients are rendered in a ``spawn`` process pool (each worker loads the MNI152 template
once); every patient's randomness comes from its own seed, so the bytes written do not
depend on the number of workers. :func:`synthesize_kaggle` writes the fixed 2D test set
(a Kaggle-style folder from its own seed stream, with file names that never collide).
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tumorscope.data.types import BRAIN_CHANNELS, DataError
from tumorscope.synthetic.anatomy import BRAIN_SHAPE
from tumorscope.synthetic.brain import render_brain
from tumorscope.synthetic.cohort import STREAM_KAGGLE_TEST, sample_cohort
from tumorscope.synthetic.kaggle import KaggleParams, sample_kaggle, write_kaggle, write_strata
from tumorscope.synthetic.outcomes import oracle_c_index
from tumorscope.synthetic.params import PatientParams
from tumorscope.synthetic.petct import PETCT_SHAPE, render_petct
from tumorscope.synthetic.presets import check_profile, get_preset
from tumorscope.synthetic.writers import write_brats_csvs, write_hecktor_csvs, write_nifti

logger = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
#: Smallest accepted size of any axis of ``shape`` (voxels).
MIN_AXIS = 8


@dataclass
class SynthSummary:
    """What :func:`synthesize` (or :func:`synthesize_kaggle`) wrote.

    Attributes:
        out: The output folder.
        profile: ``brain-mri`` or ``petct``.
        difficulty: Preset name.
        seed: Cohort seed.
        shape: Volume grid used (CT grid for PET/CT); ``(0, 0, 0)`` when no volumes.
        patients: Volume patients written (0 for :func:`synthesize_kaggle`).
        kaggle_images: Kaggle-style images written.
        roots: Layout name (``brats``, ``kaggle``, ``hecktor``) → dataset root.
        files: Number of files written.
        bytes: Total size of the files written, bytes.
        seconds: Wall time, s.
        oracle_c_index: Harrell's C of the true log-hazard on the written outcomes.
        paths: Every file written.
    """

    out: Path
    profile: str
    difficulty: str
    seed: int
    shape: tuple[int, int, int]
    patients: int
    kaggle_images: int
    roots: dict[str, Path] = field(default_factory=dict)
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    oracle_c_index: float | None = None
    paths: list[Path] = field(default_factory=list)

    @property
    def mb_per_patient(self) -> float:
        """Disk use per volume patient (MB, CSVs and Kaggle images excluded)."""
        vols = sum(p.stat().st_size for p in self.paths if p.name.endswith(".nii.gz"))
        return vols / 1e6 / max(self.patients, 1)

    def __str__(self) -> str:
        roots = ", ".join(f"{k}: {v}" for k, v in self.roots.items())
        oracle = "n/a" if self.oracle_c_index is None else f"{self.oracle_c_index:.3f}"
        if not self.patients:
            return (
                f"{self.kaggle_images} Kaggle images ({self.difficulty}, seed {self.seed}) → "
                f"{roots}; {self.files} files, {self.bytes / 1e6:.1f} MB, {self.seconds:.1f} s"
            )
        return (
            f"{self.patients} {self.profile} patients ({self.difficulty}, seed {self.seed}, shape "
            f"{'x'.join(map(str, self.shape))}) and {self.kaggle_images} Kaggle images → {roots}; "
            f"{self.files} files, {self.bytes / 1e6:.1f} MB, {self.seconds:.1f} s; oracle C-index {oracle}"
        )


def _write_brain(args: tuple[PatientParams, tuple[int, int, int], Path]) -> list[tuple[Path, int]]:
    params, shape, root = args
    vol = render_brain(params, shape)
    folder = root / params.patient_id
    written = []
    for name in BRAIN_CHANNELS:
        path = folder / f"{params.patient_id}_{name}.nii.gz"
        written.append((path, write_nifti(vol.images[name], vol.spacing, path, lps=True)))
    path = folder / f"{params.patient_id}_seg.nii.gz"
    written.append((path, write_nifti(vol.seg, vol.spacing, path, lps=True)))
    return written


def _write_petct(args: tuple[PatientParams, tuple[int, int, int], Path]) -> list[tuple[Path, int]]:
    params, shape, root = args
    vol = render_petct(params, shape)
    pid = params.patient_id
    items = [
        (root / "imagesTr" / f"{pid}__CT.nii.gz", vol.ct, vol.ct_spacing),
        (root / "imagesTr" / f"{pid}__PT.nii.gz", vol.pet, vol.pet_spacing),
        (root / "labelsTr" / f"{pid}.nii.gz", vol.label, vol.ct_spacing),
    ]
    return [(path, write_nifti(arr, sp, path)) for path, arr, sp in items]


def _write_kaggle_chunk(args: tuple[list[KaggleParams], Path]) -> list[tuple[Path, int]]:
    chunk, root = args
    return [write_kaggle(kp, root) for kp in chunk]


def _write_kaggle_folder(
    runner: _Runner, items: list[KaggleParams], root: Path
) -> list[tuple[Path, int]]:
    """Render ``items`` into ``root/{yes,no}`` in chunks, then write ``root/strata.csv``."""
    size = max(1, min(25, -(-len(items) // (4 * runner.workers))))
    chunks = [(items[i : i + size], root) for i in range(0, len(items), size)]
    written: list[tuple[Path, int]] = []
    for files in runner.map(_write_kaggle_chunk, chunks):
        written.extend(files)
    strata = write_strata(root, items)
    written.append((strata, strata.stat().st_size))
    return written


class _Runner:
    """Map jobs in-process (one worker) or over one shared ``spawn`` process pool."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> _Runner:
        if self.workers > 1:
            self.pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn")
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def map(self, fn: Callable[[T], R], jobs: Iterable[T]) -> Iterator[R]:
        """Results of ``fn`` over ``jobs``, in job order."""
        if self.pool is None:
            return map(fn, jobs)
        return self.pool.map(fn, jobs)


def _check_args(
    profile: str, patients: int, kaggle: int, workers: int, shape: tuple[int, int, int] | None
) -> None:
    check_profile(profile)
    if patients < 1:
        raise ValueError(f"patients must be at least 1, got {patients}")
    if kaggle < 0:
        raise ValueError(f"kaggle must be 0 or more, got {kaggle}")
    if kaggle and profile != "brain-mri":
        raise ValueError("Kaggle images exist for the brain-mri profile only")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if shape is not None and (len(shape) != 3 or any(int(n) < MIN_AXIS for n in shape)):
        raise ValueError(f"shape must be three sizes of at least {MIN_AXIS} voxels, got {shape}")


def _fresh(root: Path) -> Path:
    if root.exists() and any(root.iterdir()):
        raise DataError(root, "already exists and is not empty; choose a new --out folder")
    root.mkdir(parents=True, exist_ok=True)
    return root


def synthesize(
    *,
    profile: str,
    patients: int,
    out: str | Path,
    kaggle: int = 0,
    difficulty: str = "standard",
    seed: int = 0,
    shape: tuple[int, int, int] | None = None,
    workers: int = 1,
) -> SynthSummary:
    """Generate synthetic patients and write them in the real on-disk layouts.

    ``brain-mri`` writes ``out/brats/`` (BraTS 2020: case folders with four contrasts and
    labels 0/1/2/4, ``survival_info.csv``, ``true_risk.csv``) and, with ``kaggle > 0``,
    ``out/kaggle/{yes,no}/`` JPEGs from separate patients (and ``out/kaggle/strata.csv``,
    see :func:`~tumorscope.synthetic.kaggle.strata_rows`). ``petct`` writes
    ``out/hecktor/`` (``imagesTr``, ``labelsTr``, endpoint and clinical CSVs,
    ``true_risk.csv``).

    Args:
        profile: ``brain-mri`` or ``petct``.
        patients: Volume patients (≥ 1).
        out: Output folder (its layout subfolders must be absent or empty).
        kaggle: Kaggle-style images (brain-mri only), half with a tumour.
        difficulty: ``easy``, ``standard`` or ``hard`` (see ``docs/synthetic.md``).
        seed: Seed; the same seed writes the same bytes whatever ``workers`` is.
        shape: Volume grid ``(X, Y, Z)``; default 240×240×155 (brain, 1 mm) or
            192×192×128 (PET/CT CT grid, 2×2×2.5 mm). Smaller grids keep the field of view.
        workers: Worker processes.

    Returns:
        A :class:`SynthSummary`.

    Raises:
        ValueError: Bad profile, difficulty, counts, shape or workers.
        DataError: A layout folder under ``out`` exists and is not empty.
    """
    _check_args(profile, patients, kaggle, workers, shape)
    get_preset(difficulty)
    t0 = time.perf_counter()
    out = Path(out)
    default = BRAIN_SHAPE if profile == "brain-mri" else PETCT_SHAPE
    grid: tuple[int, int, int] = (int(shape[0]), int(shape[1]), int(shape[2])) if shape else default
    cohort = sample_cohort(profile=profile, patients=patients, difficulty=difficulty, seed=seed)
    summary = SynthSummary(
        out=out,
        profile=profile,
        difficulty=difficulty,
        seed=seed,
        shape=grid,
        patients=patients,
        kaggle_images=kaggle,
    )
    written: list[tuple[Path, int]] = []
    name = "brats" if profile == "brain-mri" else "hecktor"
    root = summary.roots[name] = _fresh(out / name)
    if kaggle:
        kroot = summary.roots["kaggle"] = _fresh(out / "kaggle")
    with _Runner(workers) as runner:
        if profile == "brain-mri":
            for files in runner.map(_write_brain, [(p, grid, root) for p in cohort]):
                written.extend(files)
            csvs = write_brats_csvs(root, cohort)
        else:
            for files in runner.map(_write_petct, [(p, grid, root) for p in cohort]):
                written.extend(files)
            csvs = write_hecktor_csvs(root, cohort)
        written.extend((p, p.stat().st_size) for p in csvs)
        if kaggle:
            items = sample_kaggle(count=kaggle, difficulty=difficulty, seed=seed)
            written.extend(_write_kaggle_folder(runner, items, kroot))
    summary.paths = [p for p, _ in written]
    summary.files = len(written)
    summary.bytes = sum(n for _, n in written)
    try:
        summary.oracle_c_index = oracle_c_index(cohort)
    except ValueError:
        summary.oracle_c_index = None
    summary.seconds = time.perf_counter() - t0
    logger.debug("%s", summary)
    return summary


def synthesize_kaggle(
    *,
    count: int,
    out: str | Path,
    difficulty: str = "standard",
    seed: int = 0,
    prefix: str = "T",
    skull_stripped: float = 0.25,
    workers: int = 1,
) -> SynthSummary:
    """Write the fixed 2D test set: a Kaggle-style ``yes/``+``no/`` folder and its ``strata.csv``.

    The images come from their own seed stream (``STREAM_KAGGLE_TEST``), so they are other
    patients than the ``kaggle`` images :func:`synthesize` writes for the same seed, and their
    names carry ``prefix`` (``TY1.jpg``, ``TN1.jpg``), so the two folders never share an
    image id.

    Args:
        count: Images (≥ 1), half with a tumour.
        out: The folder to write (absent or empty); it holds ``yes/``, ``no/``, ``strata.csv``.
        difficulty: ``easy``, ``standard`` or ``hard``.
        seed: Seed; the same seed writes the same bytes whatever ``workers`` is.
        prefix: File-name prefix (non-empty; no path separators, no leading dot).
        skull_stripped: Share of images without skull and scalp (the training images
            always show them: a stratum the model never saw).
        workers: Worker processes.

    Returns:
        A :class:`SynthSummary` with ``patients=0``, ``shape=(0, 0, 0)``,
        ``roots={"kaggle": out}`` and ``oracle_c_index=None``.

    Raises:
        ValueError: Bad count, difficulty, prefix or workers.
        DataError: ``out`` exists and is not empty.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if not prefix or prefix.startswith(".") or any(c in prefix for c in "/\\"):
        raise ValueError(
            f"prefix must be non-empty, without path separators or a leading dot, got {prefix!r}"
        )
    get_preset(difficulty)
    t0 = time.perf_counter()
    root = _fresh(Path(out))
    items = sample_kaggle(
        count=count,
        difficulty=difficulty,
        seed=seed,
        prefix=prefix,
        stream=STREAM_KAGGLE_TEST,
        skull_stripped=skull_stripped,
    )
    with _Runner(workers) as runner:
        written = _write_kaggle_folder(runner, items, root)
    summary = SynthSummary(
        out=root,
        profile="brain-mri",
        difficulty=difficulty,
        seed=seed,
        shape=(0, 0, 0),
        patients=0,
        kaggle_images=count,
        roots={"kaggle": root},
        files=len(written),
        bytes=sum(n for _, n in written),
        paths=[p for p, _ in written],
    )
    summary.seconds = time.perf_counter() - t0
    logger.debug("%s", summary)
    return summary
