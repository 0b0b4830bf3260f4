"""nnU-Net v2 raw datasets: ``DatasetXXX_Name/`` with ``dataset.json``, one file per channel.

A root holds ``dataset.json`` with ``"channel_names"`` (``{"0": "FLAIR", "1": "T1", ...}``),
``"labels"`` (name → value, ``{"background": 0, "edema": 1, ...}``, or name → values for
region-based training, ``{"whole tumor": [1, 2, 3], "tumor core": [2, 3], ...}``) and
``"file_ending"`` (``.nii.gz``); images ``imagesTr/<case>_0000.nii.gz``, ``<case>_0001...``
(one per channel index) and labels ``labelsTr/<case>.nii.gz``. Channel names map onto the
model's channels and label names onto regions (:mod:`.dataset_json`), so each dataset
carries its own label convention on its cases.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import tumorscope.data.layouts.dataset_json as dj
from tumorscope.data.errors import (
    CaseLayoutError,
    DatasetJsonError,
    MissingChannelError,
    MissingFileError,
)
from tumorscope.data.layouts.base import Discovery, Layout, entries, keep_readable
from tumorscope.data.types import Case, DataError, RegionLabels

SOURCE = "nnunet"
FILE_ENDINGS = (".nii.gz", ".nii")


class _Dataset:
    """A parsed nnU-Net ``dataset.json``: channel indices, label convention, file ending."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = path = root / dj.FILE
        data = dj.read_dataset_json(root)
        self.channels = dj.channel_map(path, data.get("channel_names"), "channel_names")
        self.by_index = {i: ch for ch, i in self.channels.items()}
        ending = data.get("file_ending", ".nii.gz")
        if ending not in FILE_ENDINGS:
            raise DatasetJsonError(
                path, f"file_ending {ending!r} is not NIfTI ({', '.join(FILE_ENDINGS)})"
            )
        self.ending: str = ending
        self.labels = _labels(path, data.get("labels"), f"nnU-Net {root.name}")
        self._file = re.compile(rf"^(?P<case>.+)_(?P<index>\d{{4}}){re.escape(ending)}$")

    def files(self, folder: Path) -> dict[str, dict[int, Path]]:
        """Case id → channel index → file, for the images in ``folder``."""
        out: dict[str, dict[int, Path]] = {}
        for p in entries(folder):
            m = self._file.match(p.name)
            if m and p.is_file():
                out.setdefault(m.group("case"), {})[int(m.group("index"))] = p
        return out

    def case(
        self, case_id: str, files: dict[int, Path], image_dir: Path
    ) -> tuple[Case, list[DataError]]:
        problems: list[DataError] = []
        for index, p in files.items():
            if index not in self.by_index:
                problems.append(
                    CaseLayoutError(p, f"channel {index} is not in {self.path} channel_names")
                )
        for ch, index in self.channels.items():
            if index not in files:
                problems.append(
                    MissingChannelError(
                        self.path,
                        f"case {case_id}: channel {index} ({ch}) has no file "
                        f"{image_dir.name}/{case_id}_{index:04d}{self.ending}",
                    )
                )
        label = self.root / image_dir.name.replace("images", "labels") / f"{case_id}{self.ending}"
        channels = {self.by_index[i]: p for i, p in sorted(files.items()) if i in self.by_index}
        case = Case(
            patient_id=case_id,
            source=SOURCE,
            channels=channels,
            mask=label if label.is_file() else None,
            labels=self.labels,
        )
        return case, problems


def _labels(path: Path, raw: object, title: str) -> RegionLabels:
    """The convention of nnU-Net's ``"labels"`` (name → value, or name → values for regions)."""
    if not isinstance(raw, dict) or not raw:
        raise DatasetJsonError(path, "no 'labels' object (name → value)")
    singles: dict[int, str] = {}
    regions: dict[str, list[int]] = {}
    for name, value in raw.items():
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, int) and v >= 0 for v in values):
            raise DatasetJsonError(path, f"label {name!r}: {value!r} is not a label value or list")
        if len(values) == 1 and values[0] == 0:
            if name.strip().lower() != "background":
                raise DatasetJsonError(path, f"label 0 is {name!r}, not background")
            continue
        regions[name] = values
        if len(values) == 1:
            singles[values[0]] = name
    if not regions:
        raise DatasetJsonError(path, "labels name no foreground label")
    if any(isinstance(v, list) for v in raw.values()):
        return dj.labels_by_region(path, regions, title)
    if len(singles) < len(regions):
        raise DatasetJsonError(path, f"two labels share one value: {raw}")
    return dj.labels_by_value(path, {0: "background", **singles}, title)


class NnunetLayout(Layout):
    """nnU-Net v2 raw dataset: ``dataset.json`` with ``"channel_names"``, ``<case>_XXXX`` files."""

    name = SOURCE

    def detect(self, folder: Path) -> bool:
        return dj.dataset_kind(folder) == SOURCE

    def claimed(self, folder: Path) -> set[Path]:
        return dj.claimed(folder)

    def discover(self, root: Path, *, max_voxels: int) -> Discovery:
        try:
            ds = _Dataset(root)
        except DatasetJsonError as e:
            return Discovery(problems=[e])
        problems: list[DataError] = []
        cases: list[Case] = []
        for image_dir in dj.image_dirs(root):
            found = ds.files(image_dir)
            for case_id, files in found.items():
                case, probs = ds.case(case_id, files, image_dir)
                problems.extend(probs)
                cases.append(case)
            label_dir = root / image_dir.name.replace("images", "labels")
            for p in sorted(label_dir.glob(f"*{ds.ending}")) if label_dir.is_dir() else []:
                case_id = p.name[: -len(ds.ending)]
                if case_id not in found:
                    problems.append(
                        MissingFileError(
                            p, f"label file without images ({case_id}_0000{ds.ending} missing)"
                        )
                    )
        kept, bad, left_out = keep_readable(cases, max_voxels)
        return Discovery(cases=kept, problems=problems + bad, left_out=left_out)

    def read_case(self, path: Path) -> tuple[Case | None, list[DataError]]:
        """One channel file (``<case>_0000.nii.gz``) of a dataset names its whole case."""
        root = path.parent.parent
        if not (
            path.is_file() and path.parent.name in dj.IMAGE_DIRS and dj.dataset_kind(root) == SOURCE
        ):
            return None, []
        try:
            ds = _Dataset(root)
        except DatasetJsonError as e:
            return None, [e]
        found = ds.files(path.parent)
        case_id = next((c for c, files in found.items() if path in files.values()), None)
        if case_id is None:
            return None, [
                CaseLayoutError(path, f"not named <case>_XXXX{ds.ending} as {ds.path} needs")
            ]
        return ds.case(case_id, found[case_id], path.parent)

    def explain_absent(self, folders: Sequence[Path]) -> str:
        return 'no dataset.json with "channel_names" beside imagesTr/ (nnU-Net v2)'
