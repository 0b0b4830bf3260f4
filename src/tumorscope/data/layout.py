"""Discovery into a :class:`DatasetIndex`, case loading and region masks, over the registry.

A data folder may be a dataset root or a folder up to two levels above one; every layout
of :data:`~tumorscope.data.layouts.LAYOUTS` found under it is read (BraTS, Kaggle, HECKTOR,
DICOM, MSD and nnU-Net roots can sit side by side, even in one folder). Discovery is cheap:
file names, CSV rows and NIfTI headers; every entry that cannot be read is named on its own
(:mod:`tumorscope.data.walk`), and a layout that fails to list never hides the others.
:func:`load_case` reads voxels within the byte budget of :mod:`tumorscope.data.limits`,
checks that channels and mask share one grid, and :func:`region_masks` turns raw labels
into binary region masks through the case's label convention.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to

from tumorscope.data.errors import (
    DuplicatePatientError,
    GeometryMismatchError,
    LabelValueError,
    MissingChannelError,
    MissingFileError,
    SurvivalValueError,
    UnreadableFileError,
)
from tumorscope.data.layouts import LAYOUTS, Layout, get_layout, layout_labels
from tumorscope.data.layouts.base import subdirs
from tumorscope.data.limits import check_case_bytes
from tumorscope.data.readers import DEFAULT_MAX_VOXELS, read_nifti
from tumorscope.data.tables import read_csv_table
from tumorscope.data.types import (
    Case,
    DataError,
    DatasetIndex,
    ImageMeta,
    LoadedCase,
    RegionLabels,
)
from tumorscope.data.walk import unreadable_entries

logger = logging.getLogger(__name__)

MAX_DEPTH = 2
#: Levels below a layout root that hold its files (Kaggle 4-class: ``Training/glioma/x.jpg``).
LAYOUT_DEPTH = 3
TRUE_RISK_FILE = "true_risk.csv"
#: The sidecar's optional column: the true log-hazard without its unobserved term.
OBSERVABLE_COLUMN = "observable_log_hazard"
#: Geometry tolerance (mm for spacing/origin, unitless for direction), as nnU-Net's check.
GEOMETRY_TOL = 1e-3


def find_layouts(
    root: str | Path, problems: list[DataError] | None = None
) -> list[tuple[str, Path]]:
    """Find dataset roots at ``root`` or up to two levels below it.

    Every layout is asked of every folder, so one folder may be the root of several (a BraTS
    case folder beside ``yes/`` and ``no/``). A layout whose test fails on an unreadable
    entry is recorded in ``problems`` (when given) and the search goes on.

    Returns:
        ``(layout name, dataset root)`` pairs in search order; empty if nothing matched.
    """
    found: list[tuple[str, Path]] = []
    frontier = [Path(root)]
    for depth in range(MAX_DEPTH + 1):
        nxt: list[Path] = []
        for folder in frontier:
            claimed: set[Path] = set()
            for layout in LAYOUTS.values():
                try:
                    if layout.detect(folder):
                        found.append((layout.name, folder))
                        claimed |= layout.claimed(folder)
                except OSError as e:
                    if problems is not None:
                        problems.append(_unreadable(folder, layout.name, e))
            if depth < MAX_DEPTH:
                nxt.extend(p for p in subdirs(folder) if p not in claimed)
        frontier = nxt
    return found


def read_case(path: Path) -> tuple[Case | None, list[DataError]]:
    """The case a path names (a case folder or file), asked of every layout in turn.

    Returns:
        ``(case, problems)`` of the first layout that recognises ``path``; ``(None, [])`` if none.
    """
    for layout in LAYOUTS.values():
        case, problems = layout.read_case(path)
        if case is not None or problems:
            return case, problems
    return None, []


def read_true_risk(
    path: Path, column: str = "true_log_hazard"
) -> tuple[dict[str, float], list[DataError]]:
    """Read a synthetic ``true_risk.csv`` sidecar (``patient_id,true_log_hazard`` and, from
    generators that know it, ``observable_log_hazard``): ``column`` per patient."""
    rows, problems = read_csv_table(path, ("patient_id", column))
    out: dict[str, float] = {}
    for line, row in rows:
        pid = row["patient_id"]
        if pid in out:
            problems.append(
                DuplicatePatientError(path, f"line {line} ({pid}): patient listed twice")
            )
            continue
        try:
            value = float(row[column])
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            problems.append(
                SurvivalValueError(
                    path,
                    f"line {line} ({pid}): {column} {row[column]!r} is not a finite number",
                )
            )
            continue
        out[pid] = value
    return out, problems


def _header(path: Path) -> list[str]:
    """Column names of a small CSV file's first line (empty if unreadable)."""
    try:
        with path.open(encoding="utf-8-sig") as f:
            return [c.strip() for c in f.readline().split(",")]
    except (OSError, UnicodeDecodeError):
        return []


def discover(roots: Sequence[str | Path], *, max_voxels: int = DEFAULT_MAX_VOXELS) -> DatasetIndex:
    """Discover every layout under ``roots`` without loading voxels.

    Per-file faults (bad headers, bad CSV rows, duplicate patients, entries that cannot be
    read) go to ``index.problems``, each on its own; cases whose NIfTI headers fail are left
    out of ``index.cases``. ``index.layouts`` maps each layout name to its (first) root;
    further roots of the same layout are keyed ``"name#2"``, ``"name#3"``…; every layout at a
    root is read, also where several share one folder.

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
    seen: set[tuple[str, Path]] = set()
    for root in index.roots:
        index.problems.extend(unreadable_entries(root, depth=MAX_DEPTH + LAYOUT_DEPTH))
        for name, layout_root in find_layouts(root, index.problems):
            if (name, layout_root) in seen:  # overlapping roots name one dataset twice
                continue
            seen.add((name, layout_root))
            key, k = name, 1
            while key in index.layouts:
                k += 1
                key = f"{name}#{k}"
            index.layouts[key] = layout_root
            try:
                _discover_one(index, key, get_layout(name), layout_root, max_voxels)
            except OSError as e:  # an entry vanished or cannot be read: this layout only
                index.problems.append(_unreadable(layout_root, name, e))
    _check_duplicates(index)
    return index


def _unreadable(folder: Path, layout: str, err: OSError) -> DataError:
    where = Path(err.filename) if err.filename else folder
    return UnreadableFileError(
        where, f"cannot be read while listing the {layout} dataset ({err.strerror or err})"
    )


def _discover_one(
    index: DatasetIndex, key: str, layout: Layout, root: Path, max_voxels: int
) -> None:
    found = layout.discover(root, max_voxels=max_voxels)
    index.problems.extend(found.problems)
    index.cases.extend(found.cases)
    index.images.extend(found.images)
    index.left_out[key] = found.left_out
    for pid, outcome in found.outcomes.items():
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
        if OBSERVABLE_COLUMN in _header(sidecar):
            seen, probs = read_true_risk(sidecar, OBSERVABLE_COLUMN)
            index.problems.extend(probs)
            index.observable_risk.update(seen)


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
    return get_layout(case.source).case_folder(case)


def allowed_labels(case: Case) -> frozenset[int]:
    """Raw label values a case's mask may hold: 0 plus the labels of its convention."""
    return frozenset({0}) if case.labels is None else case.labels.allowed


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
        VolumeTooLargeError: The channels asked for decode to more than
            :data:`~tumorscope.data.limits.MAX_DECODED_BYTES` (checked before they are read).
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
    layout = get_layout(case.source)
    ref_name = (
        layout.reference_channel
        if layout.reference_channel in case.channels
        else next((c for c in channels if c in case.channels), None)
    )
    if ref_name is None and case.channels:
        ref_name = next(iter(case.channels))
    ref_arr: np.ndarray | None = None
    ref: ImageMeta | None = None
    if ref_name is not None:
        ref_arr, ref = layout.read_channel(case, ref_name, max_voxels=max_voxels)
    mask_arr: np.ndarray | None = None
    mask_meta: ImageMeta | None = None
    if with_mask and case.mask is not None:
        raw, mask_meta = read_nifti(case.mask, max_voxels=max_voxels)
        mask_arr = check_mask_labels(raw, case)
        del raw
    ref = ref if ref is not None else mask_meta
    if ref is None:
        raise MissingChannelError(case_folder(case), f"case {case.patient_id} has no image files")
    # The whole case must fit the budget before its array is allocated or a channel beyond
    # the reference is read; channels are then placed one at a time (peak: image + one).
    check_case_bytes(case_folder(case), len(channels), ref.shape, name=f"case {case.patient_id}")
    image = np.zeros((len(channels), *ref.shape), dtype=np.float32)
    for i, ch in enumerate(channels):
        if ch not in case.channels:
            continue
        arr, meta = (
            (ref_arr, ref)
            if ch == ref_name and ref_arr is not None
            else layout.read_channel(case, ch, max_voxels=max_voxels)
        )
        if ch in layout.resampled_channels and not same_grid(meta, ref):
            arr = resample_to(arr, meta, ref)
        else:
            check_same_grid(meta, ref)
        image[i] = arr
        del arr
    del ref_arr
    if mask_meta is not None:
        check_same_grid(mask_meta, ref)
    present = tuple(ch in case.channels for ch in channels)
    return LoadedCase(
        image=image, mask=mask_arr, meta=ref, channel_present=present, labels=case.labels
    )


def check_mask_labels(raw: np.ndarray, case: Case) -> np.ndarray:
    """Check a mask's values against the case's label map and return it as uint8.

    Args:
        raw: ``(X, Y, Z)`` mask as read (any numeric dtype).
        case: The case the mask belongs to (its ``labels`` give the allowed values).

    Returns:
        ``(X, Y, Z)`` uint8 of raw label values.

    Raises:
        LabelValueError: Non-integer values or labels outside the case's convention.
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


def region_masks(
    mask: np.ndarray, labels: RegionLabels | str, regions: Sequence[str]
) -> np.ndarray:
    """Binary region masks from a raw label mask, through a label convention.

    BraTS: ``WT`` = {1,2,4} (2023: {1,2,3}), ``TC`` = {1,4} (2023: {1,3}), ``ET`` = {4}
    (2023: {3}); HECKTOR: ``GTVp`` = {1}, ``GTVn`` = {2}; MSD Task01: ``WT`` = {1,2,3},
    ``TC`` = {2,3}, ``ET`` = {3}; nnU-Net datasets carry their own (``LoadedCase.labels``).

    Args:
        mask: ``(...)`` integer array of raw labels.
        labels: The case's convention (``Case.labels`` / ``LoadedCase.labels``), or the name
            of a layout whose convention applies (``brats``, ``hecktor``, ``msd``).
        regions: Region names, in output order.

    Returns:
        ``(R, ...)`` uint8 array of 0/1.

    Raises:
        ValueError: A region is not defined by the convention (or ``labels`` names no layout
            with one).
    """
    if isinstance(labels, str):
        source, labels = labels, layout_labels(labels)
        if not labels.regions:
            raise ValueError(
                f"regions {list(regions)} unknown for source {source!r}: it has no region labels"
            )
    return labels.masks(mask, regions)
