"""Two identities kept out of names: who a DICOM file is about, and what a unit of data is.

*Who:* tumorscope carries only geometry and pixels out of a DICOM file; the identifying
attributes of the DICOM PS3.15 Annex E basic profile are never copied into results. What
can still carry identity is a *file or folder name* (``DOE^JOHN/``, ``12345678.dcm``):
:func:`identity_terms` reads the identifying attributes of a series' first file, and
:func:`carries_identity` tells whether a name contains any of them, so outputs can be named
by a pseudonym instead.

*What:* :func:`content_id` is the SHA-256 of a unit's content, so that "seen in training"
is decided by the data, not by a relative file name another folder reuses (every
Kaggle-style folder has a ``yes/Y1.jpg``). A run records the ``(source, content id)`` of
its units per split at training time (:class:`SeenUnits`, ``RUN/seen.json``).
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import pydicom
from PIL import Image

from tumorscope.data.limits import check_image_size
from tumorscope.data.types import Case, DataError, DatasetIndex, ImageItem

# The attributes of PS3.15 Annex E (basic profile) that name or point to a person, a visit
# or an institution and are kept as text; dates are in the list so a date-named file counts.
IDENTITY_ATTRIBUTES = (
    "PatientName", "PatientID", "OtherPatientIDs", "OtherPatientNames", "PatientBirthDate",
    "PatientBirthName", "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers",
    "AccessionNumber", "StudyID", "StudyDate", "SeriesDate", "AcquisitionDate",
    "ContentDate", "InstitutionName", "InstitutionAddress", "ReferringPhysicianName",
    "PerformingPhysicianName", "OperatorsName", "MedicalRecordLocator", "StationName",
)  # fmt: skip
# Shorter pieces ("MR", "CT", "1") say nothing about a person and would match everywhere.
MIN_TERM = 3


def _first_dicom(path: Path) -> Path | None:
    if path.is_file():
        return path
    if path.is_dir():
        return next((p for p in sorted(path.iterdir()) if p.suffix.lower() == ".dcm"), None)
    return None


def identity_terms(path: str | Path) -> frozenset[str]:
    """Lower-case identifying strings of a DICOM file or series folder (empty if none or
    unreadable); read from the header only, pixels untouched."""
    first = _first_dicom(Path(path))
    if first is None:
        return frozenset()
    try:
        with warnings.catch_warnings():  # pydicom's warnings quote the values they doubt
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(
                first, stop_before_pixels=True, specific_tags=list(IDENTITY_ATTRIBUTES)
            )
    except Exception:  # not DICOM or unreadable: its reader names the fault elsewhere
        return frozenset()
    terms: set[str] = set()
    for name in IDENTITY_ATTRIBUTES:
        value = ds.get(name)
        if value is None:
            continue
        values = value if isinstance(value, pydicom.multival.MultiValue) else [value]
        for v in values:
            text = str(v).strip().lower()
            pieces = {text, *re.split(r"[\^\s,]+", text)}
            terms |= {p for p in pieces if len(p) >= MIN_TERM}
    return frozenset(terms)


def carries_identity(name: str, terms: frozenset[str]) -> bool:
    """True when ``name`` contains one of the identifying ``terms`` (case-insensitive)."""
    low = name.lower()
    return any(t in low for t in terms)


def pseudonym(path: str | Path) -> str:
    """A stable stand-in name for an input whose name carries identity: ``dicom-<10 hex>``."""
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()
    return f"dicom-{digest[:10]}"


# ---------------------------------------------------------------------------- content
SEEN_FILE = "seen.json"
SEEN_FORMAT = "tumorscope-seen"
SEEN_VERSION = 1
#: How :func:`content_id` reads a unit, as ``seen.json`` states it.
CONTENT_RULE = (
    "sha256 of the pixels as Pillow decodes them (mode, size, raw bytes) for 2D images; "
    "of the image files (gzip payload without its header, mask excluded) for volumes"
)
_CHUNK = 1 << 20
# gzip header flags (RFC 1952 §2.3.1)
_FHCRC, _FEXTRA, _FNAME, _FCOMMENT = 2, 4, 8, 16


def _skip_gzip_header(f: BinaryIO) -> None:
    """Move past a gzip member header: its time stamp and file name are not content."""
    head = f.read(10)
    if len(head) < 10 or head[:2] != b"\x1f\x8b":
        f.seek(0)
        return
    flags = head[3]
    if flags & _FEXTRA:
        f.read(int.from_bytes(f.read(2), "little"))
    for flag in (_FNAME, _FCOMMENT):  # zero-terminated strings
        while flags & flag and f.read(1) not in (b"", b"\x00"):
            pass
    if flags & _FHCRC:
        f.read(2)


def file_content_id(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes; of a gzip file's payload after its header.

    Raises:
        DataError: The file cannot be read.
    """
    path = Path(path)
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            if path.suffix.lower() == ".gz":
                _skip_gzip_header(f)
            for block in iter(lambda: f.read(_CHUNK), b""):
                h.update(block)
    except OSError as e:
        raise DataError(
            path, f"cannot be read to identify its content ({e.strerror or e})"
        ) from None
    return h.hexdigest()


def image_content_id(path: str | Path) -> str:
    """SHA-256 (hex) of a 2D image's decoded pixels: the same pixels give the same id
    whatever the file name or metadata; a file Pillow cannot decode is identified by its
    bytes (its reader names the fault when it is read for prediction)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                check_image_size(path, im.height, im.width)  # from the header: nothing decoded
                im.load()
                h = hashlib.sha256(f"pixels {im.mode} {im.width}x{im.height}\n".encode())
                h.update(im.tobytes())
                return h.hexdigest()
    except Exception:  # not decodable here (Pillow raises many types): the bytes identify it
        return "file-" + file_content_id(path)


def case_content_id(case: Case) -> str:
    """SHA-256 (hex) of a volume case's image files, channel by channel (the mask is not
    content: the same image with another mask is the same unit)."""
    h = hashlib.sha256(b"volume\n")
    for channel in sorted(case.channels):
        path = case.channels[channel]
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        h.update(f"{channel}[{case.channel_index.get(channel, -1)}]".encode())
        for f in files:  # a DICOM series folder: every file of it
            h.update(f" {file_content_id(f)}".encode())
        h.update(b"\n")
    return h.hexdigest()


def content_id(unit: Case | ImageItem) -> str:
    """The content identity of a volume case or a 2D image (see :data:`CONTENT_RULE`)."""
    return image_content_id(unit.path) if isinstance(unit, ImageItem) else case_content_id(unit)


@dataclass(frozen=True)
class SeenUnits:
    """The ``(source, content id)`` of a run's units per split, as ``RUN/seen.json`` holds them.

    Attributes:
        splits: Split name (``train``, ``val``, ``test``) → ``(source, content id)`` pairs.
    """

    splits: Mapping[str, frozenset[tuple[str, str]]]

    def splits_of(self, source: str, digest: str) -> tuple[str, ...]:
        """The splits holding a unit of ``source`` with content ``digest``."""
        return tuple(s for s, units in self.splits.items() if (source, digest) in units)

    def to_dict(self) -> dict[str, Any]:
        """``{"format", "version", "content", "splits": {split: {source: [ids]}}}``."""
        splits: dict[str, dict[str, list[str]]] = {}
        for split, units in self.splits.items():
            per: dict[str, list[str]] = {}
            for source, digest in sorted(units):
                per.setdefault(source, []).append(digest)
            splits[split] = per
        return {
            "format": SEEN_FORMAT,
            "version": SEEN_VERSION,
            "content": CONTENT_RULE,
            "splits": splits,
        }

    @classmethod
    def from_dict(cls, raw: Any, path: str | Path = SEEN_FILE) -> SeenUnits:
        """Check and read :meth:`to_dict`'s format.

        Raises:
            DataError: Another format, a newer version, or a malformed ``splits`` entry.
        """
        if not isinstance(raw, dict) or raw.get("format") != SEEN_FORMAT:
            raise DataError(path, f"not a {SEEN_FORMAT} file (no 'format': '{SEEN_FORMAT}')")
        if raw.get("version") != SEEN_VERSION:
            raise DataError(
                path,
                f"version {raw.get('version')!r}, this tumorscope reads version {SEEN_VERSION}",
            )
        splits = raw.get("splits")
        if not isinstance(splits, dict):
            raise DataError(path, "'splits' is not a mapping of split to source to ids")
        out: dict[str, frozenset[tuple[str, str]]] = {}
        for split, per in splits.items():
            if not isinstance(per, dict) or not all(
                isinstance(ids, list) and all(isinstance(d, str) for d in ids)
                for ids in per.values()
            ):
                raise DataError(path, f"split {split!r} is not a mapping of source to id lists")
            out[str(split)] = frozenset((str(src), d) for src, ids in per.items() for d in ids)
        return cls(out)


def seen_units(index: DatasetIndex, slices: pd.DataFrame) -> SeenUnits:
    """The content identities of the units a prepared slice table splits.

    Args:
        index: The discovered data the table was prepared from.
        slices: Slice table with ``patient_id``, ``source`` and ``split``; a patient id two
            sources share is prefixed ``source:`` there (as preparing the data does).

    Returns:
        :class:`SeenUnits` of every unit in a split; units left out of the table are not in it.
    """
    split_of = {
        (str(src), str(pid)): str(split)
        for src, pid, split in slices[["source", "patient_id", "split"]].itertuples(index=False)
    }
    out: dict[str, set[tuple[str, str]]] = {}
    everything: Iterable[Case | ImageItem] = [*index.cases, *index.images]
    for unit in everything:
        key = (unit.source, unit.patient_id)
        split = split_of.get(key) or split_of.get((unit.source, f"{unit.source}:{unit.patient_id}"))
        if split is not None and split != "none":
            out.setdefault(split, set()).add((unit.source, content_id(unit)))
    return SeenUnits({s: frozenset(units) for s, units in sorted(out.items())})


def load_seen(path: str | Path) -> SeenUnits:
    """Read a ``seen.json``.

    Raises:
        DataError: Unreadable, not JSON, or not the format :class:`SeenUnits` writes.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, f"cannot be read ({e})") from None
    return SeenUnits.from_dict(raw, path)
