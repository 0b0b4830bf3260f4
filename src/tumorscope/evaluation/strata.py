"""Per-image strata of a 2D image folder, read from the ``strata.csv`` beside its images.

The peer benchmark's fixed 2D test set (``tumorscope data synth`` writes it) carries a
``strata.csv`` at the folder root: one row per image, columns ``file`` (relative to the
root, ``yes/Y1.jpg``), ``contrast``, ``plane``, ``skull`` (``yes``/``no``) and
``offset_mm`` (the plane's offset from its target); ``label`` and further columns are
ignored. Each image gets the strata ``contrast``, ``plane``, ``skull`` and ``offset``
(``near`` within :data:`NEAR_MM` of the target, else ``far``, the benchmark's rule), and
the classification section reports AUC per value of each and per contrast × plane cell.

A malformed file (unreadable, a missing column, an empty or malformed value, a file listed
twice) is a :class:`~tumorscope.data.types.DataError` naming the file, the line and the
fault. Rows naming no image of the folder, and images without a row, are warnings in the
report, never errors: the figures are computed on the images that have a row.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tumorscope.data.types import DataError, DatasetIndex, ImageItem

STRATA_FILE = "strata.csv"
#: Columns a ``strata.csv`` must have.
STRATA_COLUMNS = ("file", "contrast", "plane", "skull", "offset_mm")
#: The strata each image gets, in report order; then the contrast × plane cell.
STRATA = ("contrast", "plane", "skull", "offset")
CELL = "contrast_x_plane"
#: ``offset`` stratum: a plane within this many mm of its target is ``near`` (peer benchmark).
NEAR_MM = 10.0
# Rows named in a warning before "…".
_EXAMPLES = 3


def _key(name: str) -> str:
    """A ``file`` entry or relative image path as one comparable POSIX path."""
    return PurePosixPath(name.strip().replace("\\", "/")).as_posix()


def read_strata(path: str | Path) -> dict[str, dict[str, str]]:
    """Read a ``strata.csv``: relative file → ``{contrast, plane, skull, offset}``.

    Raises:
        DataError: Unreadable or not UTF-8, a missing column, an empty or malformed value,
            or a file listed twice (names the line).
    """
    path = Path(path)
    rows: dict[str, dict[str, str]] = {}
    first_line: dict[str, int] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in STRATA_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise DataError(
                    path,
                    f"missing column(s) {', '.join(missing)}; a strata.csv has the columns "
                    f"{', '.join(STRATA_COLUMNS)}",
                )
            for line, raw in enumerate(reader, start=2):
                empty = [c for c in STRATA_COLUMNS if not (raw.get(c) or "").strip()]
                if empty:
                    raise DataError(path, f"line {line}: empty {', '.join(empty)}")
                name = _key(raw["file"])
                if name in rows:
                    raise DataError(
                        path,
                        f"line {line}: {name!r} listed twice (first on line {first_line[name]})",
                    )
                skull = raw["skull"].strip().lower()
                if skull not in ("yes", "no"):
                    raise DataError(path, f"line {line}: skull {raw['skull']!r} is not yes or no")
                try:
                    offset = float(raw["offset_mm"])
                except ValueError:
                    raise DataError(
                        path, f"line {line}: offset_mm {raw['offset_mm']!r} is not a number"
                    ) from None
                if offset != offset:  # NaN
                    raise DataError(path, f"line {line}: offset_mm is NaN")
                rows[name] = {
                    "contrast": raw["contrast"].strip(),
                    "plane": raw["plane"].strip(),
                    "skull": skull,
                    "offset": "near" if abs(offset) <= NEAR_MM else "far",
                }
                first_line[name] = line
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(path, f"cannot be read as a strata table ({e})") from None
    return rows


@dataclass
class FolderStrata:
    """The strata of the images of every evaluated folder that has a ``strata.csv``.

    Attributes:
        by_path: Image path → its strata (``contrast``, ``plane``, ``skull``, ``offset``).
        files: The ``strata.csv`` files read.
        warnings: Rows naming no image of their folder; images without a row.
    """

    by_path: dict[Path, dict[str, str]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def of(self, item: ImageItem) -> dict[str, str] | None:
        """The strata of an image, or None (no ``strata.csv``, or no row for it)."""
        return self.by_path.get(item.path)


def _examples(names: Iterable[str]) -> str:
    names = sorted(names)
    more = ", …" if len(names) > _EXAMPLES else ""
    return ", ".join(names[:_EXAMPLES]) + more


def folder_strata(index: DatasetIndex) -> FolderStrata:
    """Read the ``strata.csv`` at the root of each image folder of ``index``.

    An image belongs to the deepest layout root above it; the file names of a
    ``strata.csv`` are matched against that root's images (all of them, also those an
    evaluation leaves out as seen).

    Raises:
        DataError: A ``strata.csv`` is malformed (:func:`read_strata`).
    """
    roots = sorted(set(index.layouts.values()), key=lambda r: len(r.parts), reverse=True)
    images: dict[Path, list[ImageItem]] = {}
    for item in index.images:
        root = next((r for r in roots if r in item.path.parents), None)
        if root is not None:
            images.setdefault(root, []).append(item)
    out = FolderStrata()
    for root, items in sorted(images.items()):
        path = root / STRATA_FILE
        if not path.is_file():
            continue
        rows = read_strata(path)
        out.files.append(path)
        names = {_key(it.path.relative_to(root).as_posix()): it for it in items}
        for name, item in names.items():
            if name in rows:
                out.by_path[item.path] = rows[name]
        unknown = set(rows) - set(names)
        if unknown:
            out.warnings.append(
                f"{path}: {len(unknown)} row(s) name no image of the folder "
                f"({_examples(unknown)}); ignored"
            )
        unlisted = set(names) - set(rows)
        if unlisted:
            out.warnings.append(
                f"{path}: {len(unlisted)} image(s) of the folder have no row "
                f"({_examples(unlisted)}); left out of the per-stratum figures"
            )
    return out
