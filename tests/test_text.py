from __future__ import annotations

import unicodedata

import pytest

from tumorscope.text import printable, printable_lines


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain/path with spaces/é 脑.nii.gz", "plain/path with spaces/é 脑.nii.gz"),
        ("a\nerror: forged", "a\\nerror: forged"),
        ("a\rb\tc", "a\\rb\\tc"),
        ("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),
        ("bell\x07 del\x7f c1\x9b", "bell\\x07 del\\x7f c1\\x9b"),
        ("rtl\u202eexe.gpj", "rtl\\u202eexe.gpj"),  # a bidi override reorders what is seen
        ("line\u2028sep", "line\\u2028sep"),
        ("raw byte \udcff", "raw byte \\xff"),  # a non-UTF-8 file name (surrogateescape)
        ("C:\\data\\[/]x", "C:\\data\\[/]x"),  # backslashes and markup are left as they are
    ],
)
def test_control_characters_are_escaped(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_the_result_has_no_control_character_and_encodes_as_utf8() -> None:
    everything = "".join(chr(c) for c in range(0x110000))  # lone surrogates included
    out = printable(everything, limit=10**7)
    assert all(ch.isprintable() or unicodedata.category(ch) == "Zs" for ch in out)
    out.encode("utf-8")


def test_long_text_is_clipped_and_says_how_much() -> None:
    out = printable("x" * 10_000, limit=100)
    assert out == "x" * 100 + "… [+9900 characters]"
    assert printable("x" * 100, limit=100) == "x" * 100


def test_clipping_counts_escapes_and_never_splits_one() -> None:
    out = printable("\x1b" * 50, limit=10)
    assert out == "\\x1b\\x1b… [+48 characters]"


def test_a_huge_text_costs_only_the_limit() -> None:
    huge = "a\n" * 50_000_000  # 100 MB; escaping it all would take seconds
    assert len(printable(huge, limit=50)) < 80


def test_printable_lines_keeps_our_line_breaks_and_escapes_the_rest() -> None:
    assert printable_lines("one\ntwo\x1b") == ["one", "two\\x1b"]
