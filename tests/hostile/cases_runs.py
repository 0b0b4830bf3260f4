"""Hostile run folders: each generator copies a good run and breaks one thing in it.

Every function takes the good run and a destination folder and returns the broken run;
``CASES`` maps a case name to ``(generator, fault the error must name)``.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"


def _copy(run: Path, out: Path) -> Path:
    return Path(shutil.copytree(run, out))


def _edit(run: Path, edit: Callable[[dict[str, object]], object]) -> None:
    raw = json.loads((run / MANIFEST).read_text())
    new = edit(raw)
    (run / MANIFEST).write_text(json.dumps(raw if new is None else new))


def manifest_is_a_list(run: Path, out: Path) -> Path:
    bad = _copy(run, out)
    _edit(bad, lambda raw: [raw])
    return bad


def manifest_not_utf8(run: Path, out: Path) -> Path:
    bad = _copy(run, out)
    (bad / MANIFEST).write_bytes(b'{"format": "\xff\xfe tumorscope"}')
    return bad


def manifest_deeply_nested(run: Path, out: Path) -> Path:
    bad = _copy(run, out)
    (bad / MANIFEST).write_text("[" * 100_000 + "]" * 100_000)
    return bad


def files_entry_escapes(run: Path, out: Path) -> Path:
    bad = _copy(run, out)
    _edit(bad, lambda raw: raw["files"].update({"../../../../etc/passwd": "0" * 64}))  # type: ignore[attr-defined]
    return bad


def files_entry_absolute(run: Path, out: Path) -> Path:
    bad = _copy(run, out)
    _edit(bad, lambda raw: raw["files"].update({"/etc/passwd": "0" * 64}))  # type: ignore[attr-defined]
    return bad


def files_entry_symlink_out(run: Path, out: Path) -> Path:
    bad = _copy(run, out)
    (bad / "link.json").symlink_to("/etc/hostname")
    _edit(bad, lambda raw: raw["files"].update({"link.json": "0" * 64}))  # type: ignore[attr-defined]
    return bad


def weights_not_listed(run: Path, out: Path) -> Path:
    bad = _copy(run, out)
    _edit(bad, lambda raw: raw.__setitem__("files", {}))
    (bad / WEIGHTS).write_bytes(b"\0" * 16)  # zeroed weights must never load unverified
    return bad


def weights_are_a_pickle(run: Path, out: Path) -> Path:
    bad = _copy(run, out)
    (bad / WEIGHTS).write_bytes(pickle.dumps({"weight": [0.0] * 4}))
    _rehash(bad)
    return bad


def weights_header_oversized(run: Path, out: Path) -> Path:
    bad = _copy(run, out)
    (bad / WEIGHTS).write_bytes((2**62).to_bytes(8, "little") + b"{}")
    _rehash(bad)
    return bad


def weights_truncated(run: Path, out: Path) -> Path:
    bad = _copy(run, out)
    data = (bad / WEIGHTS).read_bytes()
    (bad / WEIGHTS).write_bytes(data[: len(data) // 2])
    _rehash(bad)
    return bad


def weights_offsets_outside(run: Path, out: Path) -> Path:
    bad = _copy(run, out)
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}
    )
    raw = header.encode()
    (bad / WEIGHTS).write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0" * 16)
    _rehash(bad)
    return bad


def clinical_columns_mismatch(run: Path, out: Path) -> Path:
    bad = _copy(run, out)
    _edit(bad, lambda raw: raw.__setitem__("clinical_columns", ["age", "eor", "x"]))
    return bad


def newer_schema(run: Path, out: Path) -> Path:
    bad = _copy(run, out)
    _edit(bad, lambda raw: raw.__setitem__("schema_version", 10**6))
    return bad


def _rehash(run: Path) -> None:
    """Make the manifest vouch for the (broken) weights, as an attacker would."""
    import hashlib

    digest = hashlib.sha256((run / WEIGHTS).read_bytes()).hexdigest()
    _edit(run, lambda raw: raw["files"].__setitem__(WEIGHTS, digest))  # type: ignore[attr-defined]


CASES: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "manifest_is_a_list": (manifest_is_a_list, "manifest is not a JSON object"),
    "manifest_not_utf8": (manifest_not_utf8, "unreadable manifest"),
    "manifest_deeply_nested": (manifest_deeply_nested, "unreadable manifest"),
    "files_entry_escapes": (files_entry_escapes, "not a plain path inside the run folder"),
    "files_entry_absolute": (files_entry_absolute, "not a plain path inside the run folder"),
    "files_entry_symlink_out": (files_entry_symlink_out, "leads outside the run folder"),
    "weights_not_listed": (weights_not_listed, "is not listed with its sha256"),
    "weights_are_a_pickle": (weights_are_a_pickle, "safetensors"),
    "weights_header_oversized": (weights_header_oversized, "does not fit the file"),
    "weights_truncated": (weights_truncated, "lies outside the file"),
    "weights_offsets_outside": (weights_offsets_outside, "lies outside the file"),
    "newer_schema": (newer_schema, "upgrade tumorscope"),
    "clinical_columns_mismatch": (clinical_columns_mismatch, "for a model that takes 0"),
}
