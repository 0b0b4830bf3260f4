"""The ``dataset.json`` that MSD tasks and nnU-Net raw datasets ship, read into our names.

Both spell channels and labels as free text (``"FLAIR"``, ``"t1gd"``, ``"enhancing tumour"``).
Channel names map case-insensitively onto the model's channel names (:func:`model_channel`),
label names onto the label names regions are built from (:func:`label_name`, BraTS-style
names and HECKTOR's GTVp/GTVn); anything unrecognised is a
:class:`~tumorscope.data.errors.DatasetJsonError` naming the file and the entry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tumorscope.data.errors import DatasetJsonError
from tumorscope.data.layouts.base import REGION_ORDER, region_labels
from tumorscope.data.limits import MAX_JSON_BYTES, check_file_size
from tumorscope.data.types import BRAIN_CHANNELS, PETCT_CHANNELS, RegionLabels

FILE = "dataset.json"
IMAGE_DIRS = ("imagesTr", "imagesTs")
#: Masks are read as uint8: a label value must fit.
MAX_LABEL_VALUE = 255

#: Channel spelling (lower case, without spaces, ``-`` and ``_``) → model channel name.
CHANNEL_NAMES: dict[str, str] = {
    **dict.fromkeys(("flair", "t2flair", "t2f"), "flair"),
    **dict.fromkeys(("t1", "t1w", "t1n", "nativet1"), "t1"),
    **dict.fromkeys(("t1ce", "t1c", "t1gd", "t1wce", "t1post", "cet1", "t1contrast"), "t1ce"),
    **dict.fromkeys(("t2", "t2w"), "t2"),
    "ct": "ct",
    **dict.fromkeys(("pet", "pt", "fdgpet"), "pet"),
}
#: Label spelling (lower case, words, ``tumour`` → ``tumor``) → label name.
LABEL_NAMES: dict[str, str] = {
    **dict.fromkeys(("ncr", "necrosis", "necrotic", "necrotic core", "ncr net"), "NCR"),
    **dict.fromkeys(("necrotic tumor core", "necrotic and non enhancing tumor core"), "NCR"),
    **dict.fromkeys(("net", "non enhancing tumor", "non enhancing", "nonenhancing tumor"), "NET"),
    **dict.fromkeys(("ed", "edema", "peritumoral edema", "snfh"), "ED"),
    **dict.fromkeys(("et", "enhancing tumor", "enhancing"), "ET"),
    **dict.fromkeys(("gtvp", "gtv p", "primary tumor", "primary gtv"), "GTVp"),
    **dict.fromkeys(
        ("gtvn", "gtv n", "lymph nodes", "nodal gtv", "metastatic lymph nodes"), "GTVn"
    ),
}
#: Region spelling (nnU-Net's region-based labels, e.g. ``"whole tumor": [1, 2, 3]``) → region.
REGION_NAMES: dict[str, str] = {
    **dict.fromkeys(("wt", "whole tumor"), "WT"),
    **dict.fromkeys(("tc", "tumor core"), "TC"),
    **dict.fromkeys(("et", "enhancing tumor"), "ET"),
    **dict.fromkeys(("gtvp", "primary tumor"), "GTVp"),
    **dict.fromkeys(("gtvn", "lymph nodes"), "GTVn"),
}


def _words(text: str) -> str:
    s = re.sub(r"[\s_\-/]+", " ", text.strip().lower())
    return (
        s.replace("tumour", "tumor")
        .replace("oedema", "edema")
        .replace("peritumoural", "peritumoral")
    )


def model_channel(name: str) -> str | None:
    """Model channel of a dataset's channel name (``"T1gd"`` → ``t1ce``), or None."""
    return CHANNEL_NAMES.get(_words(name).replace(" ", ""))


def label_name(name: str) -> str | None:
    """Label name of a dataset's label (``"enhancing tumour"`` → ``ET``), or None."""
    return LABEL_NAMES.get(_words(name))


def read_dataset_json(root: Path) -> dict[str, Any]:
    """Parse ``root/dataset.json`` into a dict.

    Raises:
        DatasetJsonError: Missing, unreadable, larger than
            :data:`~tumorscope.data.limits.MAX_JSON_BYTES`, not UTF-8, not JSON, nested too
            deeply to parse, or not a JSON object.
    """
    path = root / FILE
    try:
        too_large = check_file_size(path, MAX_JSON_BYTES, "dataset.json")
        if too_large:
            raise DatasetJsonError(path, too_large)
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetJsonError(path, f"cannot be read as UTF-8 text ({e})") from None
    except json.JSONDecodeError as e:
        raise DatasetJsonError(path, f"is not valid JSON ({e})") from None
    except RecursionError:
        raise DatasetJsonError(path, "nests arrays or objects too deeply to be parsed") from None
    if not isinstance(data, dict):
        raise DatasetJsonError(path, f"holds a JSON {type(data).__name__}, not an object")
    return data


def dataset_kind(root: Path) -> str | None:
    """``"nnunet"`` or ``"msd"`` for a folder with ``dataset.json`` beside ``imagesTr/`` or
    ``imagesTs/``, else None. A ``dataset.json`` that does not parse is still claimed (by its
    file naming: ``*_0000`` images are nnU-Net's), so that its fault is reported."""
    if not (root / FILE).is_file() or not any((root / d).is_dir() for d in IMAGE_DIRS):
        return None
    try:
        data = read_dataset_json(root)
    except DatasetJsonError:
        data = {}
    if "channel_names" in data:
        return "nnunet"
    if "modality" in data:
        return "msd"
    numbered = any(
        re.search(r"_\d{4}\.nii(\.gz)?$", p.name) for d in IMAGE_DIRS for p in (root / d).glob("*")
    )
    return "nnunet" if numbered else "msd"


def channel_map(path: Path, names: Any, key: str) -> dict[str, int]:
    """Model channel → index from a ``{"0": "FLAIR", ...}`` entry of ``dataset.json``.

    Raises:
        DatasetJsonError: The entry is absent or malformed, a name is not a model channel,
            or two indices name the same channel.
    """
    if not isinstance(names, Mapping) or not names:
        raise DatasetJsonError(path, f"no {key!r} object (index → channel name)")
    known = ", ".join((*BRAIN_CHANNELS, *PETCT_CHANNELS))
    out: dict[str, int] = {}
    for index, name in names.items():
        if not str(index).isdecimal() or not isinstance(name, str):
            raise DatasetJsonError(path, f"{key} entry {index!r}: {name!r} is not 'index': 'name'")
        ch = model_channel(name)
        if ch is None:
            raise DatasetJsonError(
                path,
                f"{key} {index} {name!r} is not a channel the model takes ({known}; "
                "e.g. FLAIR, T1w, T1gd, T2w, CT, PET)",
            )
        if ch in out:
            raise DatasetJsonError(path, f"{key} {out[ch]} and {index} both name the {ch} channel")
        out[ch] = int(index)
    return out


def check_label_value(path: Path, value: int, name: str) -> None:
    """Refuse a label value a uint8 mask cannot hold.

    Raises:
        DatasetJsonError: ``value`` is outside ``0..MAX_LABEL_VALUE``.
    """
    if not 0 <= value <= MAX_LABEL_VALUE:
        raise DatasetJsonError(
            path, f"label {name!r}: value {value} is outside 0..{MAX_LABEL_VALUE} (masks are uint8)"
        )


def inside(path: Path, root: Path, listed: str, where: str) -> Path:
    """``root / listed``, refusing a path that leads outside ``root`` (``..``, absolute, links).

    Raises:
        DatasetJsonError: The path resolves outside ``root``.
    """
    target = root / listed
    try:
        target.resolve().relative_to(root.resolve())
    except ValueError:
        raise DatasetJsonError(
            path, f"{where} {listed!r} points outside the dataset folder {root}"
        ) from None
    return target


def labels_by_value(path: Path, value_to_name: Mapping[int, str], title: str) -> RegionLabels:
    """The convention of ``{value: name}`` labels (0 must be background).

    Raises:
        DatasetJsonError: 0 is not background, or a name is not a recognisable tumour label.
    """
    if value_to_name.get(0, "background").strip().lower() != "background":
        raise DatasetJsonError(path, f"label 0 is {value_to_name[0]!r}, not background")
    named: dict[int, str] = {}
    for value, text in sorted(value_to_name.items()):
        check_label_value(path, value, text)
        if value == 0:
            continue
        name = label_name(text)
        if name is None:
            raise DatasetJsonError(
                path,
                f"label {value} {text!r} cannot be mapped onto a region (known: edema, "
                "necrosis, non-enhancing tumor, enhancing tumor, GTVp, GTVn)",
            )
        named[value] = name
    if not named:
        raise DatasetJsonError(path, "labels name no foreground label")
    return region_labels(title, named)


def labels_by_region(
    path: Path, region_values: Mapping[str, list[int]], title: str
) -> RegionLabels:
    """The convention of nnU-Net's region-based labels (``"whole tumor": [1, 2, 3]``).

    Each raw value is named by the innermost region holding it (``ET`` in ``[3]``).

    Raises:
        DatasetJsonError: A region name is not recognisable.
    """
    regions: dict[str, frozenset[int]] = {}
    for text, values in region_values.items():
        for value in values:
            check_label_value(path, value, text)
        region = REGION_NAMES.get(_words(text))
        if region is None:
            raise DatasetJsonError(
                path,
                f"label {text!r} {values} cannot be mapped onto a region (known: whole tumor, "
                "tumor core, enhancing tumor, GTVp, GTVn)",
            )
        regions[region] = frozenset(values)
    ordered = {r: regions[r] for r in REGION_ORDER if r in regions}
    values = sorted(set().union(*ordered.values()))
    innermost = {v: next(r for r in reversed(list(ordered)) if v in ordered[r]) for v in values}
    return RegionLabels(
        name=title, labels=innermost, regions=ordered, tumour_region=next(iter(ordered))
    )


def image_dirs(root: Path) -> list[Path]:
    """``imagesTr/`` and ``imagesTs/`` folders present under ``root``."""
    return [root / d for d in IMAGE_DIRS if (root / d).is_dir()]


def claimed(root: Path) -> set[Path]:
    """Subfolders of a ``dataset.json`` root that belong to it."""
    names = (*IMAGE_DIRS, "labelsTr", "labelsTs")
    return {root / n for n in names if (root / n).is_dir()}
