"""BraTS layouts (2018–2021 and 2023): case folders recognised by modality suffixes.

A BraTS root holds case folders; a case folder holds ``<case>_<mod>.nii.gz`` (2018–2021:
``flair, t1, t1ce, t2, seg``, labels 0,1,2,4) or ``<case>-<mod>.nii.gz`` (2023: ``t2f, t1n,
t1c, t2w, seg``, labels 0,1,2,3). Any folder prefix is accepted: the suffixes decide.
Survival comes from ``*surviv*.csv`` in the root or its parent (2018/2019 keep it beside
``HGG/``/``LGG/``): ID column ``Brats20ID``/``BraTS18ID``/…, ``Survival_days`` or
``Survival`` (``ALIVE (361 days later)`` = censored at 361), ``Age``, and
``Extent_of_Resection``/``ResectionStatus`` (``GTR`` → 1.0, ``STR`` → 0.0, ``NA`` → None).
Regions: ``WT`` = NCR ∪ ED ∪ ET, ``TC`` = NCR ∪ ET, ``ET`` (:class:`BratsLayout`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from tumorscope.data.errors import (
    CaseLayoutError,
    ClinicalValueError,
    CSVFormatError,
    DuplicatePatientError,
    MissingChannelError,
    MissingFileError,
    SurvivalValueError,
)
from tumorscope.data.layouts.base import Discovery, Layout, keep_readable, region_labels
from tumorscope.data.limits import clinical_fault, survival_fault
from tumorscope.data.tables import parse_number, read_csv_table
from tumorscope.data.types import BRAIN_CHANNELS, Case, DataError, Outcome

logger = logging.getLogger(__name__)

SOURCE = "brats"
#: File suffix → canonical channel (``seg`` → mask). 2023 names map onto the same channels.
SUFFIX_CHANNEL: dict[str, str] = {
    "flair": "flair",
    "t1": "t1",
    "t1ce": "t1ce",
    "t2": "t2",
    "t2f": "flair",
    "t1n": "t1",
    "t1c": "t1ce",
    "t2w": "t2",
    "seg": "seg",
}
SUFFIXES_2023 = frozenset({"t2f", "t1n", "t1c", "t2w"})
SUFFIXES_LEGACY = frozenset({"flair", "t1", "t1ce", "t2"})
LABELS_LEGACY = region_labels("BraTS 2018-2021", {1: "NCR", 2: "ED", 4: "ET"})
LABELS_2023 = region_labels("BraTS 2023", {1: "NCR", 2: "ED", 3: "ET"})
#: Both conventions at once (3 never occurs before 2023, 4 never in it): for masks whose year is unknown.
LABELS_ANY = region_labels("BraTS", {1: "NCR", 2: "ED", 3: "ET", 4: "ET"})

_FILE_RE = re.compile(
    r"^(?P<case>.+?)[_-](?P<mod>"
    + "|".join(sorted(SUFFIX_CHANNEL, key=len, reverse=True))
    + r")\.nii(\.gz)?$",
    re.IGNORECASE,
)
_ALIVE_RE = re.compile(r"^alive\s*\(\s*(?P<days>[-+0-9.eE]+)\s*days?\s*later\s*\)$", re.IGNORECASE)
_RESECTION = {"gtr": 1.0, "str": 0.0}


def _case_files(folder: Path) -> list[tuple[str, Path]]:
    """(suffix lower-cased, file) for every file in ``folder`` named like a BraTS volume."""
    out: list[tuple[str, Path]] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return out
    for p in entries:
        m = _FILE_RE.match(p.name)
        if m and p.is_file():
            out.append((m.group("mod").lower(), p))
    return out


def is_case_folder(folder: Path) -> bool:
    """True if ``folder`` holds at least one image file with a BraTS modality suffix."""
    return folder.is_dir() and any(mod != "seg" for mod, _ in _case_files(folder))


def case_folders(root: Path) -> list[Path]:
    """Subfolders of ``root`` that are BraTS case folders, sorted by name."""
    try:
        return [p for p in sorted(root.iterdir()) if p.is_dir() and is_case_folder(p)]
    except OSError:
        return []


def read_case(folder: Path) -> tuple[Case | None, list[DataError]]:
    """Build the :class:`Case` of one case folder from its file names (no file is opened).

    Returns:
        ``(case, problems)``; case is None when the folder's naming is inconsistent.
    """
    files = _case_files(folder)
    problems: list[DataError] = []
    mods = {mod for mod, _ in files}
    if mods & SUFFIXES_2023 and mods & SUFFIXES_LEGACY:
        problems.append(
            CaseLayoutError(
                folder,
                f"mixes BraTS 2023 and earlier file names: {sorted(p.name for _, p in files)}",
            )
        )
        return None, problems
    by_channel: dict[str, list[Path]] = {}
    for mod, p in files:
        by_channel.setdefault(SUFFIX_CHANNEL[mod], []).append(p)
    for ch, paths in by_channel.items():
        if len(paths) > 1:
            problems.append(
                CaseLayoutError(folder, f"{len(paths)} files for {ch}: {[p.name for p in paths]}")
            )
    if any(len(p) > 1 for p in by_channel.values()):
        return None, problems
    for ch in BRAIN_CHANNELS:
        if ch not in by_channel:
            problems.append(
                MissingChannelError(
                    folder,
                    f"no {ch} volume (expected a file ending in _{ch}.nii.gz or its 2023 name)",
                )
            )
    channels = {ch: by_channel[ch][0] for ch in BRAIN_CHANNELS if ch in by_channel}
    mask = by_channel["seg"][0] if "seg" in by_channel else None
    labels = LABELS_2023 if mods & SUFFIXES_2023 else LABELS_LEGACY
    return Case(
        patient_id=folder.name, source=SOURCE, channels=channels, mask=mask, labels=labels
    ), problems


def discover_brats(root: str | Path) -> tuple[list[Case], dict[str, Outcome], list[DataError]]:
    """List the cases and survival rows of one BraTS root (file names and CSV rows only).

    Args:
        root: Folder whose subfolders are BraTS case folders.

    Returns:
        ``(cases, outcomes, problems)``; outcomes keyed by patient id.
    """
    root = Path(root)
    cases: list[Case] = []
    problems: list[DataError] = []
    for folder in case_folders(root):
        case, probs = read_case(folder)
        problems.extend(probs)
        if case is not None:
            cases.append(case)
    with_mask = [c for c in cases if c.mask is not None]
    if with_mask:  # a training set where one case lacks its seg file (BraTS 2020 case 355 style)
        for c in cases:
            if c.mask is None:
                folder = next(iter(c.channels.values())).parent
                problems.append(
                    MissingFileError(
                        folder, f"no _seg.nii.gz file while {len(with_mask)} other case(s) have one"
                    )
                )
    outcomes: dict[str, Outcome] = {}
    for csv_path in survival_csvs(root):
        rows, probs = read_survival_csv(csv_path)
        problems.extend(probs)
        for pid, outcome in rows.items():
            if pid in outcomes:
                problems.append(
                    DuplicatePatientError(
                        csv_path, f"patient {pid} also listed in {outcomes[pid].source_file}"
                    )
                )
            else:
                outcomes[pid] = outcome
    return cases, outcomes, problems


def survival_csvs(root: Path) -> list[Path]:
    """``*surviv*.csv`` files in ``root``, else in its parent (2018/2019 ``HGG``/``LGG`` roots)."""
    for folder in (root, root.parent):
        found = sorted(
            p for p in folder.glob("*.csv") if "surviv" in p.name.lower() and p.is_file()
        )
        if found:
            return found
    return []


def _pick(header: list[str], pattern: str) -> str | None:
    rx = re.compile(pattern, re.IGNORECASE)
    return next((h for h in header if rx.fullmatch(h)), None)


def read_survival_csv(path: Path) -> tuple[dict[str, Outcome], list[DataError]]:
    """Parse a BraTS survival CSV; every bad cell and every repeated patient is a problem.

    Returns:
        ``(outcomes, problems)``. Clinical covariates: ``Age`` (years) and
        ``Extent_of_Resection`` (GTR 1.0, STR 0.0, missing None).
    """
    rows, problems = read_csv_table(path, ())
    if problems or not rows:
        return {}, problems
    header = list(rows[0][1])
    id_col = _pick(header, r"brats\d*id|id|patientid|subject")
    time_col = _pick(header, r"survival(_days)?")
    age_col = _pick(header, r"age")
    res_col = _pick(header, r"extent_of_resection|resectionstatus|resection")
    if id_col is None or time_col is None:
        return {}, [
            CSVFormatError(
                path, f"need an ID column (Brats20ID) and Survival_days; header is {header}"
            )
        ]
    out: dict[str, Outcome] = {}
    first_line: dict[str, int] = {}
    for line, row in rows:
        pid = row.get(id_col, "")
        where = f"line {line} ({pid})"
        if not pid:
            problems.append(CSVFormatError(path, f"line {line}: empty {id_col}"))
            continue
        if pid in out or pid in first_line:
            problems.append(
                DuplicatePatientError(
                    path, f"{where}: patient listed twice (first on line {first_line[pid]})"
                )
            )
            continue
        first_line[pid] = line
        parsed = parse_survival(row.get(time_col, ""))
        if isinstance(parsed, str):
            problems.append(
                SurvivalValueError(path, f"{where}: {time_col} {row.get(time_col, '')!r} {parsed}")
            )
            continue
        time, event = parsed
        clinical: dict[str, float | None] = {}
        if age_col is not None:
            clinical["Age"] = _cell(path, where, age_col, row.get(age_col, ""), problems)
        if res_col is not None:
            val = row.get(res_col, "").lower()
            if val in _RESECTION:
                clinical["Extent_of_Resection"] = _RESECTION[val]
            else:
                clinical["Extent_of_Resection"] = None
                if val not in ("", "na", "n/a", "nan", "unknown"):
                    problems.append(
                        CSVFormatError(path, f"{where}: {res_col} {val!r} is not GTR, STR or NA")
                    )
        out[pid] = Outcome(
            patient_id=pid, time=time, event=event, clinical=clinical, source_file=path
        )
    return out, problems


def parse_survival(text: str) -> tuple[float, bool] | str:
    """Parse a BraTS survival cell into ``(days, event)`` or return the reason it is invalid.

    ``"361"`` → ``(361.0, True)``; ``"ALIVE (361 days later)"`` → ``(361.0, False)``.
    """
    m = _ALIVE_RE.match(text.strip())
    raw, event = (m.group("days"), False) if m else (text.strip(), True)
    if not raw:
        return "is empty"
    try:
        days = float(raw)
    except ValueError:
        return "is not a number of days"
    fault = survival_fault(days)
    return (days, event) if fault is None else fault


def _cell(path: Path, where: str, col: str, text: str, problems: list[DataError]) -> float | None:
    try:
        value = parse_number(text)
    except ValueError:
        problems.append(CSVFormatError(path, f"{where}: {col} {text!r} is not a number"))
        return None
    fault = None if value is None else clinical_fault(col, value)
    if fault is not None:
        problems.append(ClinicalValueError(path, f"{where}: {col} {text!r} {fault}"))
        return None
    return value


class BratsLayout(Layout):
    """BraTS 2018–2023: a root of case folders named by modality suffixes."""

    name = SOURCE
    labels = LABELS_ANY

    def detect(self, folder: Path) -> bool:
        return bool(case_folders(folder))

    def claimed(self, folder: Path) -> set[Path]:
        return set(case_folders(folder))

    def discover(self, root: Path, *, max_voxels: int) -> Discovery:
        cases, outcomes, problems = discover_brats(root)
        kept, bad, _ = keep_readable(cases, max_voxels)
        return Discovery(
            cases=kept,
            outcomes=outcomes,
            problems=problems + bad,
            left_out=len(case_folders(root)) - len(kept),
        )

    def read_case(self, path: Path) -> tuple[Case | None, list[DataError]]:
        if not is_case_folder(path):
            return None, []
        case, problems = read_case(path)
        if case is None and not problems:
            problems = [CaseLayoutError(path, "not a readable BraTS case folder")]
        return case, problems

    def explain_absent(self, folders: Sequence[Path]) -> str:
        nifti = sum(1 for f in folders for _ in f.glob("*.nii*"))
        return (
            "no BraTS case folders (files ending _flair/_t1/_t1ce/_t2 or -t2f/-t1n/-t1c/-t2w .nii.gz)"
            + (f"; {nifti} NIfTI file(s) without those suffixes" if nifti else "")
        )
