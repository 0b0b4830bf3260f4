"""Clinical covariates given to ``tumorscope predict``: ``--clinical NAME=VALUE`` and
``--clinical-table FILE``.

Values are checked as the outcome tables' are at training: numbers and missing markers by
:func:`~tumorscope.data.tables.parse_number` (``NA``, an empty value, ``NaN``, ... are
missing), ranges by :func:`~tumorscope.data.limits.clinical_fault`; a table is read by the
same reader, :func:`~tumorscope.data.tables.read_csv_table`. A missing covariate (also one
of a case absent from the table) is left to the predictor, which imputes it with the run's
training value and names it in the risk's ``imputed_covariates``. When both options give a
covariate of a case, two values are an error and a missing one yields to the other.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tumorscope.data.limits import clinical_fault
from tumorscope.data.tables import parse_number, read_csv_table
from tumorscope.data.types import DataError

#: Where ``--clinical`` faults are reported (the option stands in for a file).
OPTION = "--clinical"
#: Patient-id column names the outcome-table readers accept (BraTS ``Brats20ID``, HECKTOR
#: ``PatientID``, synthetic ``patient_id``, ``ID``, ``subject``), matched ignoring case.
ID_COLUMN = re.compile(r"brats\d*id|id|patientid|patient_id|subject", re.IGNORECASE)
DELIMITERS = {".csv": ",", ".tsv": "\t"}


def _value(text: str, name: str, where: str, source: Path | str) -> float | None:
    """One covariate value: a number, or None for a missing marker (``NA``, empty, ...)."""
    try:
        value = parse_number(text)
    except ValueError:
        raise DataError(source, f"{where}{name} {text!r} is not a number (NA: missing)") from None
    fault = None if value is None else clinical_fault(name, value)
    if fault is not None:
        raise DataError(source, f"{where}{name} {text!r} {fault}")
    return value


def _shown(value: float | None) -> str:
    return "NA" if value is None else f"{value:g}"


def parse_clinical_options(items: Sequence[str]) -> dict[str, float | None]:
    """``--clinical NAME=VALUE`` options as covariate name → value (None: missing).

    Raises:
        DataError: An item that is not ``NAME=VALUE``, a value that is not a number or a
            missing marker, one out of range, or a name given twice with two values.
    """
    out: dict[str, float | None] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise DataError(OPTION, f"{item!r} is not NAME=VALUE (e.g. Age=61, or Age=NA)")
        value = _value(text, name, "", OPTION)
        if name in out and out[name] != value:
            raise DataError(
                OPTION, f"{name} is given twice ({_shown(out[name])} and {_shown(value)})"
            )
        out[name] = value
    return out


@dataclass(frozen=True)
class ClinicalTable:
    """A table of covariates per patient, one row per patient id.

    Attributes:
        path: The file.
        id_column: Its patient-id column.
        header: Its columns, in file order.
        rows: Patient id → (line number, column → cell text).
    """

    path: Path
    id_column: str
    header: tuple[str, ...]
    rows: dict[str, tuple[int, dict[str, str]]]

    @classmethod
    def read(cls, path: str | Path) -> ClinicalTable:
        """Read a ``.csv`` or ``.tsv`` table with a patient-id column.

        Raises:
            DataError: No such file, another suffix, an unreadable table, no data row, no
                patient-id column, an empty id, or an id listed twice.
        """
        path = Path(path)
        delimiter = DELIMITERS.get(path.suffix.lower())
        if not path.is_file():
            what = "is not a file" if path.exists() else "no such file"
            raise DataError(path, f"{what} (the --clinical-table)")
        if delimiter is None:
            raise DataError(path, "a clinical table must be a .csv or .tsv file")
        lines, problems = read_csv_table(path, (), delimiter=delimiter)
        if problems:
            raise problems[0]
        if not lines:
            raise DataError(path, "clinical table has no data rows")
        header = tuple(lines[0][1])
        id_col = next((h for h in header if ID_COLUMN.fullmatch(h)), None)
        if id_col is None:
            raise DataError(
                path,
                "no patient-id column (Brats20ID, PatientID, patient_id, ID or subject); "
                f"header is {list(header)}",
            )
        rows: dict[str, tuple[int, dict[str, str]]] = {}
        for line, row in lines:
            pid = row[id_col]
            if not pid:
                raise DataError(path, f"line {line}: empty {id_col}")
            if pid in rows:
                first = rows[pid][0]
                raise DataError(
                    path, f"line {line} ({pid}): patient listed twice (first on line {first})"
                )
            rows[pid] = (line, row)
        return cls(path=path, id_column=id_col, header=header, rows=rows)

    def columns_for(self, known: Sequence[str]) -> list[str]:
        """The table's columns that are covariates of ``known``.

        Raises:
            DataError: A column differs from a covariate only in case, or none is one.
        """
        for h in self.header:
            twin = next((k for k in known if k.lower() == h.lower() and k != h), None)
            if twin is not None:
                raise DataError(
                    self.path, f"column {h!r} is the run's covariate {twin!r}: rename it"
                )
        cols = [h for h in self.header if h in known]
        if not cols:
            raise DataError(
                self.path,
                f"holds none of the run's covariates ({', '.join(known) or 'none'}); "
                f"header is {list(self.header)}",
            )
        return cols


@dataclass(frozen=True)
class CaseClinical:
    """The covariates of one case and where each came from.

    Attributes:
        values: Covariate name → value (None: imputed by the predictor), every covariate
            of the run.
        sources: Covariate name → ``--clinical`` or ``FILE line N``, for the given ones.
        table: The clinical table, if one was given.
        in_table: Whether the case has a row in ``table`` (None without a table).
    """

    values: dict[str, float | None]
    sources: dict[str, str] = field(default_factory=dict)
    table: Path | None = None
    in_table: bool | None = None

    @property
    def given(self) -> dict[str, float]:
        """The covariates with a value."""
        return {c: v for c, v in self.values.items() if v is not None}

    def notes(self, imputed: Sequence[str]) -> list[str]:
        """What the predict line says of the covariates (``imputed``: the risk's)."""
        parts = [f"given {','.join(self.given)}"] if self.given else []
        parts += [f"imputed {','.join(imputed)}"] if imputed else []
        if self.in_table is False and self.table is not None:
            parts.append(f"case not in {self.table.name}")
        return parts

    def to_json(self) -> dict[str, Any]:
        """Fields for the JSON's ``risk`` (beside its ``imputed_covariates``)."""
        out: dict[str, Any] = {
            "given_covariates": self.given,
            "covariate_sources": {c: self.sources[c] for c in self.given},
        }
        if self.table is not None:
            out["clinical_table"] = {"file": str(self.table), "case_found": self.in_table}
        return out


@dataclass(frozen=True)
class ClinicalInputs:
    """What ``--clinical`` and ``--clinical-table`` gave, read and checked for syntax.

    Attributes:
        options: ``--clinical`` covariates (None: given as missing).
        table: The ``--clinical-table``, if given.
    """

    options: dict[str, float | None] = field(default_factory=dict)
    table: ClinicalTable | None = None

    @classmethod
    def read(cls, options: Sequence[str] | None, table: str | Path | None) -> ClinicalInputs:
        """Parse the options and read the table (see :func:`parse_clinical_options` and
        :meth:`ClinicalTable.read`, whose errors it raises)."""
        return cls(
            options=parse_clinical_options(options or []),
            table=None if table is None else ClinicalTable.read(table),
        )

    @property
    def given(self) -> bool:
        """Whether either option was used."""
        return bool(self.options) or self.table is not None

    def check(self, known: Sequence[str]) -> None:
        """Refuse a ``--clinical`` covariate the run does not know, or a table with none.

        Raises:
            DataError: Naming the option or table and the run's covariates.
        """
        unknown = [c for c in self.options if c not in known]
        if unknown:
            knows = f"the run knows {', '.join(known)}" if known else "the run uses none"
            raise DataError(OPTION, f"unknown covariate(s) {', '.join(unknown)}; {knows}")
        if self.table is not None:
            self.table.columns_for(known)

    def for_case(self, case_id: str, known: Sequence[str]) -> CaseClinical:
        """The covariates of the case ``case_id``: its table row, then ``--clinical``.

        Raises:
            DataError: A bad cell in the case's row, or a covariate to which the two sources
                give two values (a missing value yields to the other source's value).
        """
        values: dict[str, float | None] = dict.fromkeys(known)
        sources: dict[str, str] = {}
        found: bool | None = None
        table = self.table
        if table is not None:
            found = case_id in table.rows
            if found:
                line, row = table.rows[case_id]
                where = f"line {line}: "
                for c in table.columns_for(known):
                    values[c] = _value(row[c], c, where, table.path)
                    sources[c] = f"{table.path.name} line {line}"
        for c, v in self.options.items():
            held = values[c]
            if v is not None and held is not None and held != v:
                raise DataError(
                    OPTION,
                    f"{c}={_shown(v)} conflicts with {c} {_shown(held)} in {sources[c]}; "
                    "give it once",
                )
            if v is not None or held is None:  # a missing value yields to a known one
                values[c], sources[c] = v, OPTION
        return CaseClinical(
            values=values,
            sources=sources,
            table=None if table is None else table.path,
            in_table=found,
        )
