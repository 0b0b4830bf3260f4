"""The checks every config section uses: one-line errors naming the key, bounded ranges.

A value from a hostile file can be megabytes long or deeply nested: :func:`short` bounds
what an error message repeats of it, and :class:`ConfigError` keeps one line.
"""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
from typing import Any

# Longest message a ConfigError keeps: a value from a hostile file can be megabytes long.
MAX_MESSAGE = 1000
# Names that become folder or file names (stage names: ``RUN/stages/<name>``) or are
# matched against them (channels, regions, layouts): no path separators, no leading dot.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_NAMES = 16  # channels, regions, layouts, stages
SEED_MAX = 2**32 - 1  # numpy's legacy seeds are 32-bit
MAX_SNAPSHOTS = 100  # runtime.snapshot_steps

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlong = 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8
_REPR.maxlevel = 3


def short(value: Any) -> str:
    """A repr of ``value`` bounded in length and depth, for error messages."""
    return _REPR.repr(value)


def key_name(key: Any) -> str:
    """A mapping key as it appears in an error's key path (``loss.task_weights.<key>``)."""
    return key if isinstance(key, str) and len(key) <= 64 else short(key)


class ConfigError(ValueError):
    """A config value is unknown, of the wrong type or out of range.

    The message is clipped to :data:`MAX_MESSAGE` characters and kept on one line.
    """

    def __init__(self, message: str) -> None:
        message = " ".join(str(message).splitlines())
        if len(message) > MAX_MESSAGE:
            cut = len(message) - MAX_MESSAGE
            message = f"{message[:MAX_MESSAGE]}... [+{cut} characters]"
        super().__init__(message)


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def _range(
    key: str, value: float, lo: float, hi: float, *, open_lo: bool = False, open_hi: bool = False
) -> None:
    """``value`` finite and in ``[lo, hi]`` (``(lo`` / ``hi)`` where open)."""
    # an int is compared exactly: math.isfinite(10**400) would raise OverflowError
    finite = isinstance(value, int) or math.isfinite(value)
    inside = (lo < value if open_lo else lo <= value) and (value < hi if open_hi else value <= hi)
    lo_s, hi_s = (str(x) if isinstance(x, int) else f"{x:g}" for x in (lo, hi))
    span = f"{'(' if open_lo else '['}{lo_s}, {hi_s}{')' if open_hi else ']'}"
    _check(finite and inside, key, f"{short(value)} not in {span}")


def _names(key: str, names: tuple[str, ...], *, least: int = 0) -> None:
    count = f"needs {least} to {MAX_NAMES} names, got {len(names)}"
    _check(least <= len(names) <= MAX_NAMES, key, count)
    for n in names:
        _check(
            NAME.fullmatch(n) is not None,
            key,
            f"{short(n)} is not a name (letters, digits, _ . -; at most 64; no leading dot)",
        )


def _check_finite(obj: Any, key: str) -> None:
    """Every float anywhere in ``obj`` is finite (``lr: .inf`` and ``.nan`` fail here)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _check_finite(getattr(obj, f.name), f"{key}.{f.name}" if key else f.name)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_finite(v, f"{key}.{key_name(k)}")
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            _check_finite(v, f"{key}[{i}]")
    elif isinstance(obj, float):
        _check(math.isfinite(obj), key, f"{obj} is not a finite number")


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_plain(v) for v in obj]
    return obj
