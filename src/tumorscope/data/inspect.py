"""``tumorscope data inspect`` and ``tumorscope data validate`` as library functions.

:func:`inspect_dataset` says which layouts a folder holds (or why none), then per layout
patients, slices, label balance, spacing, intensity ranges and problems.
:func:`validate_dataset` opens every file, checks everything the readers check plus
cross-file agreement, and returns **every** problem; it never writes to disk.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tumorscope.data.errors import LayoutNotFoundError, ReadError
from tumorscope.data.imagefolder import load_image
from tumorscope.data.layout import (
    MAX_DEPTH,
    case_folder,
    check_mask_labels,
    check_same_grid,
    discover,
    subdirs,
)
from tumorscope.data.layouts import LAYOUTS, get_layout
from tumorscope.data.limits import check_case_bytes
from tumorscope.data.readers import DEFAULT_MAX_VOXELS, read_nifti
from tumorscope.data.types import TUMOUR_TYPES, Case, DataError, DatasetIndex, ImageItem, ImageMeta
from tumorscope.text import printable

logger = logging.getLogger(__name__)


@dataclass
class LayoutSummary:
    """What one layout root holds.

    Attributes:
        name: Layout key (a name of ``LAYOUTS``: ``brats``, ``msd``, ..., or ``name#2``…).
        root: Dataset root.
        patients: Number of cases or images.
        slices: Axial slices over all volumes (Z after reorientation), or images.
        label_balance: Label or class → count (voxels for volumes, images for 2D sets).
        spacings: Distinct voxel spacings in mm → number of files.
        shapes: Distinct shapes → number of files.
        intensity: Channel → (min, max) over all files read.
        outcomes: Patients with an outcome, and how many are events.
        tumour_cases: Cases whose mask holds any tumour label.
        masked_cases: Cases with a mask.
        left_out: Case folders found on disk but left out of the index for their problems.
    """

    name: str
    root: Path
    patients: int = 0
    slices: int = 0
    label_balance: Counter[str] = field(default_factory=Counter)
    spacings: Counter[tuple[float, ...]] = field(default_factory=Counter)
    shapes: Counter[tuple[int, ...]] = field(default_factory=Counter)
    intensity: dict[str, tuple[float, float]] = field(default_factory=dict)
    outcomes: tuple[int, int] = (0, 0)
    tumour_cases: int = 0
    masked_cases: int = 0
    left_out: int = 0

    def add_intensity(self, channel: str, array: np.ndarray) -> None:
        lo, hi = float(array.min()), float(array.max())
        old = self.intensity.get(channel)
        self.intensity[channel] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))

    def add_geometry(self, meta: ImageMeta) -> None:
        self.spacings[tuple(round(s, 4) for s in meta.spacing)] += 1
        self.shapes[tuple(meta.shape)] += 1


@dataclass
class InspectReport:
    """Result of :func:`inspect_dataset`; :meth:`render` gives the plain-text report."""

    root: Path
    layouts: list[LayoutSummary] = field(default_factory=list)
    reason_none: str | None = None
    problems: list[DataError] = field(default_factory=list)

    def render(self) -> str:
        """Plain-text, human-readable report (problems one per line as ``PATH: fault``).

        Each line is :func:`~tumorscope.text.printable`: a newline, ESC or CR inside a path,
        a label or a fault is escaped, so it can neither forge a line nor drive the terminal.
        """
        lines = [f"data folder: {self.root}"]
        if not self.layouts:
            lines.append(f"no known layout found: {self.reason_none}")
        for s in self.layouts:
            lines.append(f"layout {s.name} at {s.root}")
            extra = f" (+{s.left_out} left out, see problems)" if s.left_out else ""
            lines.append(f"  patients: {s.patients}{extra}")
            lines.append(f"  slices: {s.slices}")
            if s.outcomes[0]:
                lines.append(f"  outcomes: {s.outcomes[0]} patients, {s.outcomes[1]} events")
            if s.masked_cases:
                lines.append(
                    f"  cases with tumour: {s.tumour_cases} of {s.masked_cases} with masks"
                )
            balance = ", ".join(f"{k}={v}" for k, v in sorted(s.label_balance.items()))
            lines.append(f"  label balance: {balance or 'none'}")
            spac = ", ".join(
                f"{'x'.join(f'{v:g}' for v in k)} mm ({n})" for k, n in s.spacings.most_common()
            )
            lines.append(f"  spacing: {spac or 'n/a'}")
            shapes = ", ".join(f"{'x'.join(map(str, k))} ({n})" for k, n in s.shapes.most_common(5))
            lines.append(f"  shapes: {shapes or 'n/a'}")
            for ch, (lo, hi) in s.intensity.items():
                lines.append(f"  intensity {ch}: {lo:g} .. {hi:g}")
        lines.append(f"problems: {len(self.problems)}")
        lines.extend(str(p) for p in self.problems)
        return "\n".join(printable(line) for line in lines)


def explain_no_layout(root: str | Path) -> str:
    """Say why no layout was found under ``root`` (what was searched, near misses)."""
    root = Path(root)
    folders = [root]
    for _ in range(MAX_DEPTH):
        folders += [s for f in folders for s in subdirs(f) if s not in folders]
    parts = [f"searched {len(folders)} folder(s) down to {MAX_DEPTH} levels below {root}"]
    parts.extend(layout.explain_absent(folders) for layout in LAYOUTS.values())
    return "; ".join(parts)


def _belongs(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def inspect_dataset(root: str | Path, *, max_voxels: int = DEFAULT_MAX_VOXELS) -> InspectReport:
    """Inspect a data folder: layouts found, then per layout counts, balance, geometry, ranges.

    Reads every volume and image once (to measure label balance and intensity ranges).

    Args:
        root: Dataset root or a folder up to two levels above one.
        max_voxels: Largest volume accepted, checked from each header.

    Returns:
        The :class:`InspectReport`; reader faults are listed in ``problems``.

    Raises:
        MissingFileError: ``root`` does not exist.
    """
    root = Path(root)
    index = discover([root], max_voxels=max_voxels)
    report = InspectReport(root=root, problems=list(index.problems))
    if not index.layouts:
        report.reason_none = explain_no_layout(root)
    for name, lroot in index.layouts.items():
        summary = LayoutSummary(name=name, root=lroot)
        report.layouts.append(summary)
        source = name.split("#")[0]
        cases = [c for c in index.cases if c.source == source and _belongs(case_folder(c), lroot)]
        items = [i for i in index.images if i.source == source and _belongs(i.path, lroot)]
        summary.left_out = max(0, index.left_out.get(name, 0))
        for case in cases:
            summary.patients += 1
            report.problems.extend(_inspect_case(case, summary, max_voxels))
        for item in items:
            summary.patients += 1
            summary.slices += 1
            summary.label_balance[_item_label(item)] += 1
            try:
                arr, meta = load_image(item)
            except DataError as e:
                report.problems.append(e)
                continue
            summary.add_geometry(meta)
            summary.add_intensity("grey", arr)
        ids = {c.patient_id for c in cases}
        events = [o.event for pid, o in index.outcomes.items() if pid in ids]
        summary.outcomes = (len(events), sum(events))
    return report


def _item_label(item: ImageItem) -> str:
    if item.tumour_type is not None:
        return TUMOUR_TYPES[item.tumour_type]
    return "tumour" if item.tumour else "no tumour"


def _inspect_case(case: Case, summary: LayoutSummary, max_voxels: int) -> list[DataError]:
    problems: list[DataError] = []
    layout = get_layout(case.source)
    first = True
    seen: set[Path] = set()  # channels of one 4-D file (MSD) are one file's geometry
    for ch, path in case.channels.items():
        try:
            arr, meta = layout.read_channel(case, ch, max_voxels=max_voxels)
        except DataError as e:
            problems.append(e)
            continue
        if path not in seen:
            summary.add_geometry(meta)
            seen.add(path)
        summary.add_intensity(ch, arr)
        if first:
            summary.slices += int(meta.shape[-1])
            first = False
    if case.mask is not None:
        try:
            raw, _ = read_nifti(case.mask, max_voxels=max_voxels)
            labels = check_mask_labels(raw, case)
            summary.masked_cases += 1
            summary.tumour_cases += int(bool(labels.any()))
            values, counts = np.unique(labels, return_counts=True)
            for v, n in zip(values.tolist(), counts.tolist(), strict=True):
                summary.label_balance[f"{v} ({case.label_map.get(v, 'background')})"] += n
        except DataError as e:
            problems.append(e)
    return problems


def validate_dataset(
    roots: Sequence[str | Path], *, max_voxels: int = DEFAULT_MAX_VOXELS
) -> list[DataError]:
    """Open every file under ``roots`` and return every problem found (never raises for data).

    Checks discovery problems (CSV rows and value ranges, duplicates, headers, stored types,
    budgets, missing channels, every unreadable entry, every layout of each root), then every
    volume in full with the loaders' own readers (NaN/Inf and the float32 range after
    scaling, truncation), mask labels, shape/spacing/affine agreement and the decoded size
    of each case, every image (size and aspect from its header, bombs, truncation, wrong
    extension) and every DICOM series. Nothing is written.

    Args:
        roots: Data folders.
        max_voxels: Largest volume accepted, checked from each header.

    Returns:
        Problems in discovery order, without duplicates; empty if the data is clean.
    """
    problems: list[DataError] = []
    indexes: list[DatasetIndex] = []
    for root in roots:
        try:
            index = discover([root], max_voxels=max_voxels)
        except DataError as e:
            problems.append(e)
            continue
        except Exception as e:  # e.g. a permission error while listing; report, never crash
            problems.append(ReadError(root, f"folder cannot be searched ({type(e).__name__}: {e})"))
            continue
        if not index.layouts:
            problems.append(
                LayoutNotFoundError(root, f"no known dataset layout: {explain_no_layout(root)}")
            )
        problems.extend(index.problems)
        indexes.append(index)
    for index in indexes:
        for case in index.cases:
            try:
                problems.extend(_validate_case(case, max_voxels))
            except (
                Exception
            ) as e:  # an unforeseen failure is still one problem line, never a traceback
                problems.append(
                    ReadError(
                        case_folder(case), f"case cannot be checked ({type(e).__name__}: {e})"
                    )
                )
        for item in index.images:
            try:
                load_image(item)
            except DataError as e:
                problems.append(e)
    unique: dict[str, DataError] = {}
    for p in problems:
        unique.setdefault(str(p), p)
    return list(unique.values())


def _validate_case(case: Case, max_voxels: int) -> list[DataError]:
    layout = get_layout(case.source)
    problems: list[DataError] = []
    metas: dict[str, ImageMeta] = {}
    for ch in case.channels:
        meta, probs = layout.check_channel(case, ch, max_voxels=max_voxels)
        problems.extend(probs)
        if meta is not None:
            metas[ch] = meta
    if case.mask is not None:
        try:
            raw, metas["mask"] = read_nifti(case.mask, max_voxels=max_voxels)
            check_mask_labels(raw, case)
        except DataError as e:
            problems.append(e)
    ref_key = (
        layout.reference_channel if layout.reference_channel in metas else next(iter(metas), None)
    )
    if ref_key is None:
        return problems
    try:  # the budget load_case checks, for every channel the case has
        shape, name = metas[ref_key].shape, f"case {case.patient_id}"
        check_case_bytes(case_folder(case), len(case.channels), shape, name=name)
    except DataError as e:
        problems.append(e)
    for key, meta in metas.items():
        if key == ref_key or key in layout.resampled_channels:
            continue  # resampled onto the reference grid by design (HECKTOR's PET)
        try:
            check_same_grid(meta, metas[ref_key])
        except DataError as e:
            problems.append(e)
    return problems
