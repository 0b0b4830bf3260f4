"""Kaggle brain-MRI image folders as layouts: ``yes/``+``no/`` (``kaggle``) and the 4-class
``Training/``/``Testing/`` set (``kaggle4``); listing and decoding live in
:mod:`tumorscope.data.imagefolder`, which the predictor and the cache also use."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tumorscope.data import imagefolder
from tumorscope.data.errors import EmptyFileError
from tumorscope.data.layouts.base import Discovery, Layout, entries
from tumorscope.data.readers import IMAGE_SUFFIXES
from tumorscope.data.types import DataError, ImageItem


def _without_empty(items: list[ImageItem], problems: list[DataError]) -> Discovery:
    empty = {it.path for it in items if it.path.stat().st_size == 0}
    problems = problems + [EmptyFileError(p, "file is empty (0 bytes)") for p in sorted(empty)]
    return Discovery(images=[it for it in items if it.path not in empty], problems=problems)


class KaggleLayout(Layout):
    """Kaggle yes/no: one image per patient, tumour = the ``yes/`` folder."""

    name = imagefolder.SOURCE

    def detect(self, folder: Path) -> bool:
        return imagefolder.is_kaggle_root(folder)

    def claimed(self, folder: Path) -> set[Path]:
        return imagefolder.claimed_subfolders(folder)

    def discover(self, root: Path, *, max_voxels: int) -> Discovery:
        return _without_empty(*imagefolder.discover_kaggle(root))

    def explain_absent(self, folders: Sequence[Path]) -> str:
        images = sum(1 for f in folders for p in entries(f) if p.suffix.lower() in IMAGE_SUFFIXES)
        return "no yes/+no/ class folders (Kaggle)" + (
            f"; {images} loose image file(s) outside such folders" if images else ""
        )


class Kaggle4Layout(Layout):
    """Kaggle 4-class: ``glioma/ meningioma/ notumor/ pituitary/`` under ``Training/``, ``Testing/``."""

    name = imagefolder.SOURCE_4CLASS
    aliases = frozenset({imagefolder.SOURCE})  # data.sources: [kaggle] means every Kaggle set

    def detect(self, folder: Path) -> bool:
        # A yes/no root is never also read as a 4-class root.
        return not imagefolder.is_kaggle_root(folder) and bool(imagefolder.kaggle4_splits(folder))

    def claimed(self, folder: Path) -> set[Path]:
        return imagefolder.claimed_subfolders(folder)

    def discover(self, root: Path, *, max_voxels: int) -> Discovery:
        return _without_empty(*imagefolder.discover_kaggle4(root))

    def explain_absent(self, folders: Sequence[Path]) -> str:
        return "no Training/Testing class folders (Kaggle 4-class)"
