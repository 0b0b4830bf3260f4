"""Image-folder layouts: Kaggle brain-MRI ``yes/``/``no/`` and the 4-class set.

Kaggle yes/no (source ``kaggle``): a folder with ``yes/`` and ``no/`` subfolders of
``.jpg/.jpeg/.png`` images. Kaggle 4-class (source ``kaggle4``): ``Training/`` and/or
``Testing/``, each with ``glioma/ meningioma/ notumor/ pituitary/``; tumour = not
``notumor``, type = index into :data:`TUMOUR_TYPES`. Folder names match case-insensitively.
Discovery lists files only; :func:`load_image` decodes one image.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tumorscope.data.errors import DuplicatePatientError
from tumorscope.data.images import read_image
from tumorscope.data.readers import IMAGE_SUFFIXES
from tumorscope.data.types import TUMOUR_TYPES, DataError, ImageItem, ImageMeta

logger = logging.getLogger(__name__)

SOURCE = "kaggle"
SOURCE_4CLASS = "kaggle4"
YESNO = ("yes", "no")
SPLITS = ("Training", "Testing")


def _subdirs(folder: Path) -> dict[str, Path]:
    """Lower-cased name → subfolder."""
    try:
        return {p.name.lower(): p for p in sorted(folder.iterdir()) if p.is_dir()}
    except OSError:
        return {}


def _image_files(folder: Path) -> list[Path]:
    try:  # a folder that cannot be listed is named by discovery's walk
        listed = [p for p in sorted(folder.iterdir()) if p.is_file()]
    except OSError:
        return []
    files = [p for p in listed if p.suffix.lower() in IMAGE_SUFFIXES]
    skipped = [p.name for p in listed if p.suffix.lower() not in IMAGE_SUFFIXES]
    if skipped:
        logger.debug("%s: ignoring %d non-image files", folder, len(skipped))
    return files


def is_kaggle_root(folder: Path) -> bool:
    """True if ``folder`` holds both ``yes/`` and ``no/`` subfolders."""
    subs = _subdirs(folder)
    return all(name in subs for name in YESNO)


def kaggle4_splits(folder: Path) -> dict[str | None, Path]:
    """Split name → class-folder parent of a 4-class root, or ``{}`` if ``folder`` is not one.

    A root holds ``Training/`` and/or ``Testing/`` with class folders inside; a folder that
    holds at least two class folders directly is also accepted (split None).
    """
    subs = _subdirs(folder)
    found: dict[str | None, Path] = {}
    for split in SPLITS:
        sub = subs.get(split.lower())
        if sub is not None and any(t in _subdirs(sub) for t in TUMOUR_TYPES):
            found[split] = sub
    if not found and sum(t in subs for t in TUMOUR_TYPES) >= 2:
        found[None] = folder
    return found


def claimed_subfolders(folder: Path) -> set[Path]:
    """Subfolders of an image-folder root that belong to it (not searched for other layouts)."""
    subs = _subdirs(folder)
    names = set(YESNO) | {s.lower() for s in SPLITS} | set(TUMOUR_TYPES)
    return {p for n, p in subs.items() if n in names}


def _patient_id(root: Path, path: Path) -> str:
    # The Kaggle sets reuse file names across class folders, so the stem alone is not unique.
    return path.relative_to(root).with_suffix("").as_posix()


def discover_kaggle(root: str | Path) -> tuple[list[ImageItem], list[DataError]]:
    """List the images of a Kaggle yes/no folder (no decoding).

    Args:
        root: Folder holding ``yes/`` and ``no/``.

    Returns:
        ``(items, problems)``; items have ``source="kaggle"`` and ``tumour`` 1 for ``yes``.
    """
    root = Path(root)
    subs = _subdirs(root)
    items: list[ImageItem] = []
    for name, tumour in (("yes", 1), ("no", 0)):
        if name in subs:
            for f in _image_files(subs[name]):
                items.append(
                    ImageItem(path=f, patient_id=_patient_id(root, f), source=SOURCE, tumour=tumour)
                )
    return items, _duplicates(items)


def discover_kaggle4(root: str | Path) -> tuple[list[ImageItem], list[DataError]]:
    """List the images of a Kaggle 4-class folder (no decoding).

    Args:
        root: Folder holding ``Training/`` and/or ``Testing/`` (or the class folders directly).

    Returns:
        ``(items, problems)``; items have ``source="kaggle4"``, ``tumour_type`` an index
        into :data:`TUMOUR_TYPES` and ``split_hint`` the split folder name.
    """
    root = Path(root)
    items: list[ImageItem] = []
    for split, parent in kaggle4_splits(root).items():
        classes = _subdirs(parent)
        for t_index, t_name in enumerate(TUMOUR_TYPES):
            if t_name not in classes:
                continue
            for f in _image_files(classes[t_name]):
                items.append(
                    ImageItem(
                        path=f,
                        patient_id=_patient_id(root, f),
                        source=SOURCE_4CLASS,
                        tumour=int(t_name != "notumor"),
                        tumour_type=t_index,
                        split_hint=split,
                    )
                )
    return items, _duplicates(items)


def _duplicates(items: list[ImageItem]) -> list[DataError]:
    # Same relative path without suffix, e.g. ``yes/Y1.jpg`` and ``yes/Y1.png``.
    seen: dict[str, Path] = {}
    problems: list[DataError] = []
    for it in items:
        if it.patient_id in seen:
            problems.append(
                DuplicatePatientError(
                    it.path, f"image id {it.patient_id!r} also used by {seen[it.patient_id]}"
                )
            )
        else:
            seen[it.patient_id] = it.path
    return problems


def load_image(item_or_path: ImageItem | str | Path) -> tuple[np.ndarray, ImageMeta]:
    """Decode one image as ``(H, W)`` float32 greyscale, value range as stored (0–255 for 8 bit).

    Args:
        item_or_path: An :class:`ImageItem` or a ``.png/.jpg/.jpeg`` path.

    Returns:
        ``(array, meta)``; RGB is converted by luminance.

    Raises:
        DataError: A subclass naming the file and the fault (empty, truncated, bomb, ...).
    """
    path = item_or_path.path if isinstance(item_or_path, ImageItem) else Path(item_or_path)
    return read_image(path)
