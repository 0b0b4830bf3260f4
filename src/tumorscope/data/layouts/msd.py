"""Medical Segmentation Decathlon tasks (``Task01_BrainTumour``): 4-D images and ``dataset.json``.

A root holds ``dataset.json`` with ``"modality"`` (``{"0": "FLAIR", "1": "T1w", "2": "t1gd",
"3": "T2w"}``), ``"labels"`` (``{"0": "background", "1": "edema", "2": "non-enhancing tumor",
"3": "enhancing tumour"}``), ``"training"`` (``[{"image": "./imagesTr/BRATS_001.nii.gz",
"label": "./labelsTr/BRATS_001.nii.gz"}, ...]``) and ``"test"`` (image paths). Every image
is one 4-D NIfTI ``(X, Y, Z, channels)`` in ``"modality"`` order; labels are 3-D. For
Task01: ``WT`` = {1, 2, 3}, ``TC`` = {2, 3}, ``ET`` = {3}.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tumorscope.data.layouts.dataset_json as dj
from tumorscope.data.errors import DatasetJsonError, MissingFileError
from tumorscope.data.layouts.base import Discovery, Layout, keep_readable
from tumorscope.data.limits import MAX_ROWS
from tumorscope.data.readers import is_nifti_path
from tumorscope.data.types import Case, DataError, RegionLabels

SOURCE = "msd"
#: Task01_BrainTumour's labels; each dataset's own ``"labels"`` are read the same way.
LABELS = dj.labels_by_value(
    Path(dj.FILE),
    {0: "background", 1: "edema", 2: "non-enhancing tumor", 3: "enhancing tumour"},
    "MSD Task01_BrainTumour",
)


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.endswith(".nii.gz") else path.stem


class _Task:
    """A parsed MSD ``dataset.json``: channel indices, label convention, listed images."""

    def __init__(self, root: Path) -> None:
        self.root = root
        path = root / dj.FILE
        data = dj.read_dataset_json(root)
        self.channels = dj.channel_map(path, data.get("modality"), "modality")
        raw = data.get("labels")
        if not isinstance(raw, dict) or not all(str(k).isdecimal() for k in raw):
            raise DatasetJsonError(path, 'no \'labels\' object ({"0": "background", ...})')
        by_value = {int(k): str(v) for k, v in raw.items()}  # digits only: checked above
        self.labels: RegionLabels = dj.labels_by_value(path, by_value, f"MSD {root.name}")
        self.training = self._entries(path, data.get("training", []), with_label=True)
        self.test = self._entries(path, data.get("test", []), with_label=False)

    def _entries(self, path: Path, raw: Any, *, with_label: bool) -> list[tuple[Path, Path | None]]:
        key = "training" if with_label else "test"
        if not isinstance(raw, list):
            raise DatasetJsonError(path, f"{key!r} is not a list")
        if len(raw) > MAX_ROWS:
            raise DatasetJsonError(path, f"{key!r} lists {len(raw)} entries, above {MAX_ROWS}")
        out: list[tuple[Path, Path | None]] = []
        for i, entry in enumerate(raw):
            image, label = (
                (entry.get("image"), entry.get("label"))
                if isinstance(entry, dict)
                else (entry, None)
            )
            if not isinstance(image, str) or (with_label and not isinstance(label, str)):
                raise DatasetJsonError(path, f"{key}[{i}] {entry!r} does not name an image file")
            where = f"{key}[{i}]"
            out.append(
                (
                    dj.inside(path, self.root, image, where),
                    dj.inside(path, self.root, label, where) if isinstance(label, str) else None,
                )
            )
        return out

    def case(self, image: Path, label: Path | None) -> Case:
        return Case(
            patient_id=_stem(image),
            source=SOURCE,
            channels=dict.fromkeys(self.channels, image),
            mask=label,
            labels=self.labels,
            channel_index=dict(self.channels),
        )


class MsdLayout(Layout):
    """MSD task: ``dataset.json`` with ``"modality"``, 4-D images in ``imagesTr/``/``imagesTs/``."""

    name = SOURCE
    labels = LABELS

    def detect(self, folder: Path) -> bool:
        return dj.dataset_kind(folder) == SOURCE

    def claimed(self, folder: Path) -> set[Path]:
        return dj.claimed(folder)

    def discover(self, root: Path, *, max_voxels: int) -> Discovery:
        try:
            task = _Task(root)
        except DatasetJsonError as e:
            return Discovery(problems=[e])
        problems: list[DataError] = []
        cases: list[Case] = []
        for image, label in [*task.training, *task.test]:
            missing = [p for p in (image, label) if p is not None and not p.is_file()]
            for p in missing:
                problems.append(MissingFileError(p, f"listed in {root / dj.FILE} but missing"))
            if image not in missing:
                cases.append(task.case(image, label if label not in missing else None))
        kept, bad, left_out = keep_readable(cases, max_voxels)
        return Discovery(cases=kept, problems=problems + bad, left_out=left_out)

    def read_case(self, path: Path) -> tuple[Case | None, list[DataError]]:
        """One image file of an MSD task (its label is found through ``dataset.json``)."""
        root = path.parent.parent
        if not (
            path.is_file()
            and is_nifti_path(path)
            and path.parent.name in dj.IMAGE_DIRS
            and dj.dataset_kind(root) == SOURCE
        ):
            return None, []
        try:
            task = _Task(root)
        except DatasetJsonError as e:
            return None, [e]
        label = next((lab for img, lab in task.training if img.resolve() == path.resolve()), None)
        return task.case(path, label if label is not None and label.is_file() else None), []

    def explain_absent(self, folders: Sequence[Path]) -> str:
        return 'no dataset.json with "modality" beside imagesTr/ (MSD)'
