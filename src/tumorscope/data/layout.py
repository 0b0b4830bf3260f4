"""Layout detection, discovery into a :class:`DatasetIndex`, and case loading.

A data folder may be a dataset root or a folder up to two levels above one; every layout
found under it is read (BraTS, Kaggle yes/no, Kaggle 4-class, HECKTOR, DICOM series
folders can sit side by side). Discovery is cheap: file names, CSV rows and NIfTI headers.
:func:`load_case` reads voxels, checks that channels and mask share one grid, and
:func:`region_masks` turns raw labels into binary region masks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to

from tumorscope.data import brats, hecktor, imagefolder
from tumorscope.data.dicom import dicom_files, read_dicom_series, series_channel
from tumorscope.data.errors import (
    DuplicatePatientError,
    EmptyFileError,
    GeometryMismatchError,
    LabelValueError,
    MissingChannelError,
    MissingFileError,
    SurvivalValueError,
)
from tumorscope.data.readers import (
    DEFAULT_MAX_VOXELS,
    read_csv_table,
    read_nifti,
    read_nifti_header,
)
from tumorscope.data.types import Case, DataError, DatasetIndex, ImageMeta, LoadedCase

logger = logging.getLogger(__name__)

MAX_DEPTH = 2
TRUE_RISK_FILE = "true_risk.csv"
LAYOUT_NAMES = ("brats", "kaggle", "kaggle4", "hecktor", "dicom")
#: Geometry tolerance (mm for spacing/origin, unitless for direction), as nnU-Net's check.
GEOMETRY_TOL = 1e-3


def find_layouts(root: str | Path) -> list[tuple[str, Path]]:
    """Find dataset roots at ``root`` or up to two levels below it.

    Returns:
        ``(layout name, dataset root)`` pairs in search order; empty if nothing matched.
    """
    found: list[tuple[str, Path]] = []
    frontier = [Path(root)]
    for depth in range(MAX_DEPTH + 1):
        nxt: list[Path] = []
        for folder in frontier:
            claimed: set[Path] = set()
            cases = brats.case_folders(folder)
            if cases:
                found.append(("brats", folder))
                claimed.update(cases)
            if imagefolder.is_kaggle_root(folder):
                found.append(("kaggle", folder))
                claimed.update(imagefolder.claimed_subfolders(folder))
            elif imagefolder.kaggle4_splits(folder):
                found.append(("kaggle4", folder))
                claimed.update(imagefolder.claimed_subfolders(folder))
            if hecktor.is_hecktor_root(folder):
                found.append(("hecktor", folder))
                claimed.update(hecktor.claimed_subfolders(folder))
            series = dicom_series_under(folder)
            if series:
                found.append(("dicom", folder))
                claimed.update(series)
            if depth < MAX_DEPTH:
                nxt.extend(p for p in subdirs(folder) if p not in claimed)
        frontier = nxt
    return found


def dicom_series_under(folder: Path) -> list[Path]:
    """``[folder]`` if it holds DICOM files, else its subfolders that do (one series each)."""
    if dicom_files(folder):
        return [folder]
    return [p for p in subdirs(folder) if dicom_files(p)]


def subdirs(folder: Path) -> list[Path]:
    try:
        return [p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []


def read_true_risk(path: Path) -> tuple[dict[str, float], list[DataError]]:
    """Read a synthetic ``true_risk.csv`` sidecar (``patient_id,true_log_hazard``)."""
    rows, problems = read_csv_table(path, ("patient_id", "true_log_hazard"))
    out: dict[str, float] = {}
    for line, row in rows:
        pid = row["patient_id"]
        if pid in out:
            problems.append(
                DuplicatePatientError(path, f"line {line} ({pid}): patient listed twice")
            )
            continue
        try:
            value = float(row["true_log_hazard"])
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            problems.append(
                SurvivalValueError(
                    path,
                    f"line {line} ({pid}): true_log_hazard {row['true_log_hazard']!r} is not a finite number",
                )
            )
            continue
        out[pid] = value
    return out, problems


def discover(roots: Sequence[str | Path], *, max_voxels: int = DEFAULT_MAX_VOXELS) -> DatasetIndex:
    """Discover every layout under ``roots`` without loading voxels.

    Per-file faults (bad headers, bad CSV rows, duplicate patients) go to
    ``index.problems``; cases whose NIfTI headers fail are left out of ``index.cases``.
    ``index.layouts`` maps each layout name to its (first) root; further roots of the same
    layout are keyed ``"name#2"``, ``"name#3"``…

    Args:
        roots: Data folders (dataset roots or up to two levels above).
        max_voxels: Largest volume accepted, checked from each header.

    Returns:
        The :class:`DatasetIndex`.

    Raises:
        MissingFileError: A root does not exist or is not a folder.
    """
    index = DatasetIndex(roots=[Path(r) for r in roots])
    for root in index.roots:
        if not root.is_dir():
            fault = (
                "is a file, not a data folder" if root.exists() else "data folder does not exist"
            )
            raise MissingFileError(root, fault)
    for root in index.roots:
        for name, layout_root in find_layouts(root):
            if layout_root in index.layouts.values():
                continue
            key, k = name, 1
            while key in index.layouts:
                k += 1
                key = f"{name}#{k}"
            index.layouts[key] = layout_root
            _discover_one(index, name, layout_root, max_voxels)
    _check_duplicates(index)
    return index


def _discover_one(index: DatasetIndex, name: str, root: Path, max_voxels: int) -> None:
    if name in ("kaggle", "kaggle4"):
        items, probs = (
            imagefolder.discover_kaggle if name == "kaggle" else imagefolder.discover_kaggle4
        )(root)
        empty = {it.path for it in items if it.path.stat().st_size == 0}
        probs += [EmptyFileError(p, "file is empty (0 bytes)") for p in sorted(empty)]
        index.images.extend(it for it in items if it.path not in empty)
        index.problems.extend(probs)
        return
    if name == "dicom":
        for folder in dicom_series_under(root):
            channel = series_channel(folder)
            index.cases.append(
                Case(patient_id=folder.name, source="dicom", channels={channel: folder})
            )
        return
    cases, outcomes, probs = (
        brats.discover_brats if name == "brats" else hecktor.discover_hecktor
    )(root)
    index.problems.extend(probs)
    for case in cases:
        bad = _header_problems(case, max_voxels)
        index.problems.extend(bad)
        if bad:
            logger.debug("%s: left out (%d problem(s) in its headers)", case.patient_id, len(bad))
        else:
            index.cases.append(case)
    for pid, outcome in outcomes.items():
        if pid in index.outcomes:
            index.problems.append(
                DuplicatePatientError(
                    outcome.source_file or root,
                    f"patient {pid} also has an outcome in {index.outcomes[pid].source_file}",
                )
            )
        else:
            index.outcomes[pid] = outcome
    sidecar = root / TRUE_RISK_FILE
    if sidecar.is_file():
        risk, probs = read_true_risk(sidecar)
        index.problems.extend(probs)
        index.true_risk.update(risk)


def _header_problems(case: Case, max_voxels: int) -> list[DataError]:
    problems: list[DataError] = []
    for path in [*case.channels.values(), *([case.mask] if case.mask else [])]:
        try:
            read_nifti_header(path, max_voxels=max_voxels)
        except DataError as e:
            problems.append(e)
    return problems


def _check_duplicates(index: DatasetIndex) -> None:
    seen: dict[str, Path] = {}
    for pid, path in [
        *((c.patient_id, case_folder(c)) for c in index.cases),
        *((i.patient_id, i.path) for i in index.images),
    ]:
        if pid in seen:
            index.problems.append(
                DuplicatePatientError(path, f"patient {pid} also found at {seen[pid]}")
            )
        else:
            seen[pid] = path


def case_folder(case: Case) -> Path:
    """Folder that holds a case (BraTS case folder, HECKTOR images folder, DICOM series)."""
    first = next(iter(case.channels.values()), case.mask)
    if first is None:
        return Path(case.patient_id)
    return first if case.source == "dicom" else first.parent


def allowed_labels(case: Case) -> frozenset[int]:
    """Raw label values a case's mask may hold: 0 plus the keys of its label map."""
    return frozenset({0, *case.label_map})


def load_case(
    case: Case,
    channels: Sequence[str],
    *,
    missing: str = "error",
    max_voxels: int = DEFAULT_MAX_VOXELS,
    with_mask: bool = True,
) -> LoadedCase:
    """Read a case's channels (and mask) into canonical RAS arrays on one grid.

    Args:
        case: A case from :func:`discover`.
        channels: Canonical channel names, in the order wanted (e.g. ``["flair"]``, ``["ct", "pet"]``).
        missing: ``"error"`` raises for an absent channel; ``"zero_fill"`` fills it with zeros.
        max_voxels: Largest volume accepted, checked from each header.
        with_mask: Read the mask if the case has one.

    Returns:
        :class:`LoadedCase`: image ``(C, X, Y, Z)`` float32, mask ``(X, Y, Z)`` uint8 of raw labels.

    Raises:
        MissingChannelError: A channel is absent and ``missing="error"`` (names folder and channel).
        GeometryMismatchError: Channels or mask disagree in shape/spacing/affine (names both files).
        LabelValueError: The mask holds labels outside the layout's set.
        DataError: Any reader fault.
    """
    if missing not in ("error", "zero_fill"):
        raise ValueError(f"missing must be 'error' or 'zero_fill', got {missing!r}")
    absent = [ch for ch in channels if ch not in case.channels]
    if absent and missing == "error":
        raise MissingChannelError(
            case_folder(case),
            f"case {case.patient_id} has no {', '.join(absent)} channel (has {sorted(case.channels)})",
        )
    arrays: dict[str, np.ndarray] = {}
    metas: dict[str, ImageMeta] = {}
    ref_name = (
        "ct"
        if case.source == "hecktor" and "ct" in case.channels
        else next((c for c in channels if c in case.channels), None)
    )
    if ref_name is None and case.channels:
        ref_name = next(iter(case.channels))
    wanted = [c for c in channels if c in case.channels]
    for ch in ([ref_name] if ref_name and ref_name not in wanted else []) + wanted:
        arrays[ch], metas[ch] = _read_volume(case, case.channels[ch], max_voxels)
    mask_arr: np.ndarray | None = None
    mask_meta: ImageMeta | None = None
    if with_mask and case.mask is not None:
        raw, mask_meta = read_nifti(case.mask, max_voxels=max_voxels)
        mask_arr = check_mask_labels(raw, case)
    ref = metas[ref_name] if ref_name else mask_meta
    if ref is None:
        raise MissingChannelError(case_folder(case), f"case {case.patient_id} has no image files")
    for ch in wanted:
        if ch == "pet" and case.source == "hecktor" and not same_grid(metas[ch], ref):
            arrays[ch] = resample_to(arrays[ch], metas[ch], ref)
            continue
        check_same_grid(metas[ch], ref)
    if mask_meta is not None:
        check_same_grid(mask_meta, ref)
    image = np.zeros((len(channels), *ref.shape), dtype=np.float32)
    for i, ch in enumerate(channels):
        if ch in arrays:
            image[i] = arrays[ch]
    present = tuple(ch in case.channels for ch in channels)
    return LoadedCase(image=image, mask=mask_arr, meta=ref, channel_present=present)


def _read_volume(case: Case, path: Path, max_voxels: int) -> tuple[np.ndarray, ImageMeta]:
    if case.source == "dicom":
        return read_dicom_series(path, max_voxels=max_voxels)
    arr, meta = read_nifti(path, max_voxels=max_voxels)
    return arr.astype(np.float32, copy=False), meta


def check_mask_labels(raw: np.ndarray, case: Case) -> np.ndarray:
    """Check a mask's values against the case's label map and return it as uint8.

    Args:
        raw: ``(X, Y, Z)`` mask as read (any numeric dtype).
        case: The case the mask belongs to (its ``label_map`` gives the allowed labels).

    Returns:
        ``(X, Y, Z)`` uint8 of raw label values.

    Raises:
        LabelValueError: Non-integer values or labels outside ``{0} ∪ label_map``.
    """
    path = case.mask if case.mask is not None else case_folder(case)
    values = np.unique(raw)
    if values.dtype.kind in "fc" and not np.all(values == np.round(values)):
        raise LabelValueError(
            path, f"non-integer label values {values[values != np.round(values)][:5].tolist()}"
        )
    allowed = allowed_labels(case)
    unexpected = sorted(int(v) for v in values if int(v) not in allowed)
    if unexpected:
        raise LabelValueError(
            path, f"unexpected label values {unexpected}; allowed {sorted(allowed)}"
        )
    return raw.astype(np.uint8)


def same_grid(a: ImageMeta, b: ImageMeta) -> bool:
    """True if two canonical geometries agree in shape, spacing and affine (within 1e-3)."""
    return (
        tuple(a.shape) == tuple(b.shape)
        and np.allclose(a.spacing, b.spacing, rtol=0, atol=GEOMETRY_TOL)
        and np.allclose(a.affine, b.affine, rtol=0, atol=GEOMETRY_TOL)
    )


def check_same_grid(a: ImageMeta, b: ImageMeta) -> None:
    """Raise :class:`GeometryMismatchError` naming both files if the grids differ."""
    if tuple(a.shape) != tuple(b.shape):
        raise GeometryMismatchError(
            a.path, b.path, f"shape {tuple(a.shape)} does not match {tuple(b.shape)}"
        )
    if not np.allclose(a.spacing, b.spacing, rtol=0, atol=GEOMETRY_TOL):
        sa = tuple(round(s, 4) for s in a.spacing)
        sb = tuple(round(s, 4) for s in b.spacing)
        raise GeometryMismatchError(a.path, b.path, f"spacing {sa} mm does not match {sb} mm")
    if not np.allclose(a.affine, b.affine, rtol=0, atol=GEOMETRY_TOL):
        raise GeometryMismatchError(a.path, b.path, "affine (origin/direction) does not match")


def resample_to(array: np.ndarray, meta: ImageMeta, ref: ImageMeta) -> np.ndarray:
    """Resample a canonical volume onto another grid (trilinear, nibabel/scipy), e.g. PET → CT.

    Returns:
        ``ref.shape`` float32 array; outside the source field of view 0.
    """
    src = nib.Nifti1Image(np.asarray(array, dtype=np.float32), meta.affine)
    out = resample_from_to(src, (tuple(ref.shape), ref.affine), order=1, mode="constant", cval=0.0)
    return np.asarray(out.dataobj, dtype=np.float32)


def region_masks(mask: np.ndarray, source: str, regions: Sequence[str]) -> np.ndarray:
    """Binary region masks from a raw label mask.

    BraTS (``source`` ``brats``): ``WT`` = {1,2,4} (2023: {1,2,3}), ``TC`` = {1,4} (2023:
    {1,3}), ``ET`` = {4} (2023: {3}). HECKTOR: ``GTVp`` = {1}, ``GTVn`` = {2}.

    Args:
        mask: ``(...)`` integer array of raw labels.
        source: Layout name of the case (``brats``, ``brats2023`` or ``hecktor``).
        regions: Region names, in output order.

    Returns:
        ``(R, ...)`` uint8 array of 0/1.

    Raises:
        ValueError: A region is unknown for the source.
    """
    table = (
        hecktor.REGION_LABELS
        if source == "hecktor"
        else brats.REGION_LABELS
        if source.startswith("brats")
        else {}
    )
    unknown = [r for r in regions if r not in table]
    if unknown:
        raise ValueError(f"regions {unknown} unknown for source {source!r}; known: {sorted(table)}")
    return np.stack([np.isin(mask, sorted(table[r])) for r in regions]).astype(np.uint8)
