"""Small CSV tables (survival, clinical, endpoint, true-risk sidecars) read with their faults.

Every fault (undecodable file, missing column, row longer than the header) is a
:class:`~tumorscope.data.types.DataError` naming the file, collected rather than raised, so
that ``tumorscope data validate`` lists them all.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from tumorscope.data.errors import CSVFormatError, EmptyFileError
from tumorscope.data.limits import MAX_ROWS, MAX_TABLE_BYTES, check_file_size
from tumorscope.data.types import DataError


def read_csv_table(
    path: str | Path, required: tuple[str, ...], *, delimiter: str = ","
) -> tuple[list[tuple[int, dict[str, str]]], list[DataError]]:
    """Read a small CSV file into rows, checking the header.

    Args:
        path: CSV file (UTF-8, with or without BOM), at most
            :data:`~tumorscope.data.limits.MAX_TABLE_BYTES` and
            :data:`~tumorscope.data.limits.MAX_ROWS` data rows.
        required: Columns that must be present (exact names).
        delimiter: Cell separator (``"\\t"`` for a TSV file).

    Returns:
        ``(rows, problems)``: ``(line_number, {column: stripped text})`` per data row; no rows
        if the file is too large, empty, undecodable or lacks a required column (reported in
        problems).
    """
    path = Path(path)
    try:
        too_large = check_file_size(path, MAX_TABLE_BYTES, "CSV file")
        if too_large:
            return [], [CSVFormatError(path, too_large)]
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        return [], [CSVFormatError(path, f"CSV file cannot be read as UTF-8 text ({e})")]
    if not text.strip():
        return [], [EmptyFileError(path, "CSV file is empty")]
    problems: list[DataError] = []
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        reader = csv.reader(io.StringIO(text), delimiter=delimiter)
        header = [h.strip() for h in next(reader)]
        missing = [c for c in required if c not in header]
        if missing:
            return [], [
                CSVFormatError(path, f"missing column(s) {', '.join(missing)}; header is {header}")
            ]
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if len(rows) >= MAX_ROWS:
                return [], [CSVFormatError(path, f"more than {MAX_ROWS} data rows")]
            if len(cells) > len(header):
                problems.append(
                    CSVFormatError(
                        path,
                        f"line {reader.line_num}: {len(cells)} cells, header has {len(header)}",
                    )
                )
                continue
            # Short rows are padded: absent trailing cells are missing values.
            padded = [c.strip() for c in cells] + [""] * (len(header) - len(cells))
            rows.append((reader.line_num, dict(zip(header, padded, strict=True))))
    except csv.Error as e:
        return [], [CSVFormatError(path, f"CSV cannot be parsed ({e})")]
    return rows, problems


def parse_number(text: str) -> float | None:
    """Parse a CSV cell as a float; None for empty/``NA``/``NaN`` cells.

    Raises:
        ValueError: The cell is neither a number nor a missing marker.
    """
    if text.strip().lower() in ("", "na", "n/a", "nan", "none", "unknown"):
        return None
    return float(text)
