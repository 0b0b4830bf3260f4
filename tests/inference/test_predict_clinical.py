"""``tumorscope predict --clinical NAME=VALUE --clinical-table FILE``: covariates of the risk."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tumorscope.cli import app
from tumorscope.data.types import DataError
from tumorscope.inference.cli import predict_inputs
from tumorscope.inference.clinical import ClinicalInputs
from tumorscope.inference.predictor import Predictor

AGE = 70.0
# The tiny run's Cox model, fitted on a handful of patients, took the strongest penalty and
# zeroed every coefficient; these make Age and its missing indicator carry risk.
AGE_COEF, AGE_MISSING_COEF = 0.8, -0.3


@pytest.fixture(scope="module")
def run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`tiny_run` with non-zero Age coefficients in its stored survival model."""
    p = Predictor.from_run(tiny_run)
    raw = dict(p.calibration.survival_model or {})
    cox = dict(raw["cox"])
    coef, cols = list(cox["coef"]), list(cox["columns"])
    coef[cols.index("Age")], coef[cols.index("Age_missing")] = AGE_COEF, AGE_MISSING_COEF
    cal = p.calibration.replace(survival_model={**raw, "cox": {**cox, "coef": coef}})
    return Predictor(p.backend, p.cfg, p.manifest, calibration=cal).save(
        tmp_path_factory.mktemp("clinical") / "run"
    )


@pytest.fixture(scope="module")
def case(synth_brain: Path) -> Path:
    return next(p for p in sorted((synth_brain / "brats").iterdir()) if p.is_dir())


def predict(run: Path, case: Path, out: Path, **clinical: Any) -> tuple[str, dict[str, Any]]:
    (line,) = predict_inputs(run=run, inputs=[case], out=out, **clinical)
    return line, json.loads((out / f"{case.name}.json").read_text())


def write_table(path: Path, rows: list[list[str]], sep: str = ",") -> Path:
    path.write_text("".join(sep.join(r) + "\n" for r in rows), encoding="utf-8")
    return path


def expected_shift(run: Path, age: float) -> float:
    """Log-hazard of ``age`` given minus that of age imputed, from the stored Cox model:
    columns standardised by the stored centre and scale, times the coefficients."""
    model = json.loads((run / "manifest.json").read_text())["calibration"]["survival_model"]
    cox = model["cox"]
    i, j = cox["columns"].index("Age"), cox["columns"].index("Age_missing")
    fill = model["impute"][model["clinical"].index("Age")]
    # given: (age, missing 0); imputed: (training median, missing 1)
    return (
        cox["coef"][i] * (age - fill) / cox["scale"][i] + cox["coef"][j] * (0 - 1) / cox["scale"][j]
    )


def test_age_given_moves_the_risk_as_the_cox_coefficients_say(
    run: Path, case: Path, tmp_path: Path
) -> None:
    line, given = predict(run, case, tmp_path / "given", clinical=[f"Age={AGE:g}"])
    _, imputed = predict(run, case, tmp_path / "imputed", clinical=["Age=NA"])
    _, plain = predict(run, case, tmp_path / "plain")
    shift = expected_shift(run, AGE)
    assert abs(shift) > 0.1
    assert given["risk"]["features"] == imputed["risk"]["features"]  # the same masks
    lh = given["risk"]["log_hazard"] - imputed["risk"]["log_hazard"]
    assert lh == pytest.approx(shift, rel=1e-9, abs=1e-12)
    assert imputed["risk"]["log_hazard"] == pytest.approx(plain["risk"]["log_hazard"], abs=1e-12)
    assert given["risk"]["given_covariates"] == {"Age": AGE}
    assert given["risk"]["covariate_sources"] == {"Age": "--clinical"}
    assert given["risk"]["imputed_covariates"] == ["Extent_of_Resection"]
    assert imputed["risk"]["imputed_covariates"] == ["Age", "Extent_of_Resection"]
    assert imputed["risk"]["given_covariates"] == {} and "clinical_table" not in imputed["risk"]
    assert "(penalised_cox, given Age, imputed Extent_of_Resection)" in line


def test_a_table_row_gives_what_the_option_gives(run: Path, case: Path, tmp_path: Path) -> None:
    _, option = predict(run, case, tmp_path / "option", clinical=[f"Age={AGE:g}"])
    # BraTS' survival_info.csv columns; the case's resection is unknown.
    csv = write_table(
        tmp_path / "survival_info.csv",
        [["Brats20ID", "Age", "Survival_days", "Extent_of_Resection"],
         ["Other_001", "40", "100", "1"], [case.name, f"{AGE:g}", "300", "NA"]],
    )  # fmt: skip
    out = tmp_path / "table"
    res = CliRunner().invoke(
        app,
        ["predict", str(case), "--run", str(run), "--out", str(out), "--clinical-table", str(csv)],
    )
    assert res.exit_code == 0, res.output
    table = json.loads((out / f"{case.name}.json").read_text())
    assert table["risk"]["log_hazard"] == pytest.approx(option["risk"]["log_hazard"], abs=1e-12)
    assert table["risk"]["imputed_covariates"] == ["Extent_of_Resection"]
    assert table["risk"]["covariate_sources"] == {"Age": "survival_info.csv line 3"}
    assert table["risk"]["clinical_table"] == {"file": str(csv), "case_found": True}
    # A TSV with HECKTOR's id column, and the option repeating the table's value.
    tsv = write_table(
        tmp_path / "clinical.tsv",
        [["PatientID", "Extent_of_Resection", "Age"], [case.name, "", f"{AGE:g}"]],
        sep="\t",
    )
    _, both = predict(run, case, tmp_path / "tsv", clinical=[f"Age={AGE:g}"], clinical_table=tsv)
    assert both["risk"]["log_hazard"] == pytest.approx(option["risk"]["log_hazard"], abs=1e-12)
    assert both["risk"]["covariate_sources"] == {"Age": "--clinical"}


def test_a_case_absent_from_the_table_gets_every_covariate_imputed(
    run: Path, case: Path, tmp_path: Path
) -> None:
    csv = write_table(tmp_path / "t.csv", [["patient_id", "Age"], ["Other_001", "40"]])
    line, absent = predict(run, case, tmp_path / "absent", clinical_table=csv)
    _, plain = predict(run, case, tmp_path / "plain")
    assert absent["risk"]["log_hazard"] == pytest.approx(plain["risk"]["log_hazard"], abs=1e-12)
    assert absent["risk"]["imputed_covariates"] == ["Age", "Extent_of_Resection"]
    assert absent["risk"]["clinical_table"] == {"file": str(csv), "case_found": False}
    assert "imputed Age,Extent_of_Resection, case not in t.csv)" in line


def test_a_2d_image_ignores_the_covariates_with_a_note(
    run: Path, synth_brain: Path, tmp_path: Path
) -> None:
    image = next(iter(sorted((synth_brain / "kaggle").rglob("*.jpg"))))
    # Not even a covariate the run does not know is an error: a 2D image has no risk.
    res = CliRunner().invoke(
        app,
        ["predict", str(image), "--run", str(run), "--out", str(tmp_path), "--clinical",
         "Age=70", "--clinical", "Weight=80"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "clinical covariates ignored (2D image: no risk)" in res.output
    assert (tmp_path / f"{image.stem}.json").is_file()


def test_a_missing_value_yields_to_the_other_sources_value(tmp_path: Path) -> None:
    csv = write_table(tmp_path / "t.csv", [["ID", "Age", "Extent_of_Resection"], ["A", "", "1"]])
    known = ["Age", "Extent_of_Resection"]
    both = ClinicalInputs.read(["Age=61", "Extent_of_Resection=NA"], csv).for_case("A", known)
    assert both.values == {"Age": 61.0, "Extent_of_Resection": 1.0}
    assert both.sources == {"Age": "--clinical", "Extent_of_Resection": "t.csv line 2"}
    assert both.in_table is True and both.given == both.values
    other = ClinicalInputs.read(["Age=61"], csv).for_case("B", known)
    assert other.values == {"Age": 61.0, "Extent_of_Resection": None} and other.in_table is False
    with pytest.raises(DataError, match=r"Extent_of_Resection=0 conflicts with .* 1 in t\.csv"):
        ClinicalInputs.read(["Extent_of_Resection=0"], csv).for_case("A", known)


Table = Callable[[Path, str], list[str]]


def _table(rows: list[list[str]], name: str = "t.csv") -> Table:
    def make(folder: Path, case: str) -> list[str]:
        filled = [[case if c == "CASE" else c for c in r] for r in rows]
        return ["--clinical-table", str(write_table(folder / name, filled))]

    return make


def _option(*items: str) -> Table:
    return lambda folder, case: [a for i in items for a in ("--clinical", i)]


BAD: dict[str, tuple[Table, str]] = {
    "unknown": (_option("Weight=80"), "--clinical: unknown covariate(s) Weight; the run knows Age, Extent_of_Resection"),
    "not a number": (_option("Age=sixty"), "--clinical: Age 'sixty' is not a number"),
    "out of range": (_option("Age=300"), "--clinical: Age '300' is outside 0..120 years"),
    "malformed": (_option("Age70"), "--clinical: 'Age70' is not NAME=VALUE"),
    "given twice": (_option("Age=70", "Age=71"), "--clinical: Age is given twice (70 and 71)"),
    "no table": (lambda f, c: ["--clinical-table", str(f / "none.csv")], "none.csv: no such file"),
    "not csv": (_table([["ID", "Age"]], "t.xlsx"), "t.xlsx: a clinical table must be a .csv or .tsv"),
    "no id column": (_table([["name", "Age"], ["CASE", "70"]]), "t.csv: no patient-id column"),
    "duplicate id": (
        _table([["PatientID", "Age"], ["CASE", "70"], ["CASE", "71"]]),
        "t.csv: line 3 (CASE): patient listed twice (first on line 2)"),
    "bad cell": (_table([["ID", "Age"], ["CASE", "old"]]), "t.csv: line 2: Age 'old' is not a number"),
    "case of a column": (_table([["ID", "age"], ["CASE", "70"]]), "t.csv: column 'age' is the run's covariate 'Age'"),
    "no covariate": (_table([["ID", "Weight"], ["CASE", "80"]]), "t.csv: holds none of the run's covariates"),
    "conflict": (
        lambda f, c: [*_table([["ID", "Age"], ["CASE", "60"]])(f, c), "--clinical", "Age=70"],
        "--clinical: Age=70 conflicts with Age 60 in t.csv line 2",
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", BAD)
def test_each_bad_input_is_one_error_line_and_writes_nothing(
    kind: str, run: Path, case: Path, tmp_path: Path
) -> None:
    make, message = BAD[kind]
    out = tmp_path / "out"
    args = ["predict", str(case), "--run", str(run), "--out", str(out), *make(tmp_path, case.name)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    (line,) = res.output.strip().splitlines()
    assert line.startswith("error: ") and message.replace("CASE", case.name) in line
    assert not out.exists()
