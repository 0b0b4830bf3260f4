"""Text that is safe to print: data (paths, table values, error messages) made inert.

A file name, a CSV value or a library's error message is data, and data must not drive
the terminal (ESC sequences), forge output lines (a newline in a file name printing an
extra ``PATH: fault`` line), hide text (a carriage return) or flood it (a 500 MB message).
:func:`printable` escapes control characters the way Python writes them in a string
literal and clips what is left; the CLI passes every piece of data through it and never
applies rich markup to data.
"""

from __future__ import annotations

import unicodedata

# Shown by name rather than as \xNN, as Python's repr() writes them.
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Unicode categories that print nothing visible or move the text: controls (C0, DEL, C1),
# line/paragraph separators, and format characters such as bidi overrides (U+202E),
# which reorder what the reader sees ("Trojan source").
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# A file name that is not valid UTF-8 reaches Python as lone surrogates U+DC80..U+DCFF
# (PEP 383); they stand for the raw bytes 0x80..0xFF.
_SURROGATE_BYTES = range(0xDC80, 0xDD00)

DEFAULT_LIMIT = 2000


def _escape(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    if unicodedata.category(ch) not in _UNSAFE_CATEGORIES:
        return ch
    code = ord(ch)
    if code in _SURROGATE_BYTES:
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str, limit: int = DEFAULT_LIMIT) -> str:
    """``text`` on one line, control characters escaped, clipped to about ``limit`` characters.

    Newline, carriage return and tab are written ``\\n``, ``\\r``, ``\\t``; other control and
    invisible format characters as ``\\x1b``, ``\\u202e``; the raw bytes of a non-UTF-8 file
    name (lone surrogates) as ``\\xff``. Backslashes are left as they are. Text longer than
    ``limit`` after escaping is cut, and the cut is said: ``… [+123 characters]``. The cost is
    O(``limit``), whatever the length of ``text``.

    Args:
        text: Any string (a path, a table value, an error message).
        limit: Most characters kept before the marker of the cut (at least 1).

    Returns:
        A string with no control characters, at most ``limit`` characters plus the marker.
    """
    limit = max(1, limit)
    pieces: list[str] = []
    size = 0
    for used, ch in enumerate(text):
        piece = _escape(ch)
        if size + len(piece) > limit:
            return "".join(pieces) + f"… [+{len(text) - used} characters]"
        pieces.append(piece)
        size += len(piece)
    return "".join(pieces)


def printable_lines(text: str, limit: int = DEFAULT_LIMIT) -> list[str]:
    """The lines of a block of text we wrote (a report, a table), each made :func:`printable`.

    For text whose line breaks are ours (a rendered report) but whose contents may hold
    data; a line break inside one piece of data must be escaped before it is joined in.
    """
    return [printable(line, limit) for line in text.split("\n")]
