"""Per-stratum classification figures from a ``strata.csv`` beside an image folder: the file's
checks, the figures against scikit-learn, and the report's table and warnings."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from tumorscope.data.layout import discover
from tumorscope.data.types import DataError
from tumorscope.evaluation.collect import HeldOut
from tumorscope.evaluation.evaluate import evaluate_run
from tumorscope.evaluation.schema import validate_metrics
from tumorscope.evaluation.sections import classification_section
from tumorscope.evaluation.strata import CELL, NEAR_MM, folder_strata, read_strata

N_BOOT = 40
HEADER = "file,label,contrast,plane,skull,offset_mm\n"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_rows_are_read_with_the_offset_stratum(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "strata.csv",
        HEADER
        + "yes/Y1.jpg,yes,t1ce,axial,yes,10.0\n"
        + "no/N1.jpg,no, t2 ,coronal,NO,-10.1\n"
        + "yes\\Y2.jpg,yes,flair,sagittal,no,0\n",
    )
    assert NEAR_MM == 10.0
    assert read_strata(path) == {
        "yes/Y1.jpg": {"contrast": "t1ce", "plane": "axial", "skull": "yes", "offset": "near"},
        "no/N1.jpg": {"contrast": "t2", "plane": "coronal", "skull": "no", "offset": "far"},
        "yes/Y2.jpg": {"contrast": "flair", "plane": "sagittal", "skull": "no", "offset": "near"},
    }


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("file,contrast,plane,skull\nyes/Y1.jpg,t1ce,axial,yes\n", "missing column(s) offset_mm"),
        ("", "missing column(s) file, contrast, plane, skull, offset_mm"),
        (HEADER + "yes/Y1.jpg,yes,,axial,yes,1\n", "line 2: empty contrast"),
        (HEADER + "yes/Y1.jpg,yes,t1ce,axial,maybe,1\n", "line 2: skull 'maybe' is not yes or no"),
        (HEADER + "yes/Y1.jpg,yes,t1ce,axial,yes,far\n", "line 2: offset_mm 'far' is not a number"),
        (HEADER + "yes/Y1.jpg,yes,t1ce,axial,yes,nan\n", "line 2: offset_mm is NaN"),
        (
            HEADER + "yes/Y1.jpg,yes,t1ce,axial,yes,1\nno/N1.jpg,no,t2,axial,no,1\n"
            "yes/Y1.jpg,yes,t2,axial,yes,1\n",
            "line 4: 'yes/Y1.jpg' listed twice (first on line 2)",
        ),
    ],
)
def test_malformed_file_names_the_file_and_the_fault(tmp_path: Path, text: str, fault: str) -> None:
    path = _write(tmp_path / "strata.csv", text)
    with pytest.raises(DataError, match=re.escape(fault)) as err:
        read_strata(path)
    assert err.value.path == path


def test_undecodable_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "strata.csv"
    path.write_bytes(HEADER.encode() + b"yes/Y1.jpg,yes,t1\xe9ce,axial,yes,1\n")
    with pytest.raises(DataError, match="cannot be read as a strata table") as err:
        read_strata(path)
    assert err.value.path == path


def _png_folder(root: Path, names: list[str]) -> None:
    for k, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((9, 11), k, dtype=np.uint8)).save(root / name)


def test_unknown_rows_and_unlisted_images_are_warnings(tmp_path: Path) -> None:
    root = tmp_path / "kaggle"
    _png_folder(root, ["yes/Y1.png", "yes/Y2.png", "no/N1.png"])
    _write(
        root / "strata.csv",
        HEADER + "yes/Y1.png,yes,t1ce,axial,yes,1\nno/N1.png,no,t2,axial,no,30\n"
        "yes/Y9.png,yes,t2,axial,no,0\nno/N7.png,no,t2,axial,no,0\n",
    )
    index = discover([root])
    strata = folder_strata(index)
    by_name = {it.patient_id: strata.of(it) for it in index.images}
    assert by_name == {
        "yes/Y1": {"contrast": "t1ce", "plane": "axial", "skull": "yes", "offset": "near"},
        "no/N1": {"contrast": "t2", "plane": "axial", "skull": "no", "offset": "far"},
        "yes/Y2": None,
    }
    assert strata.files == [root / "strata.csv"]
    unknown, unlisted = strata.warnings
    assert "2 row(s) name no image of the folder (no/N7.png, yes/Y9.png); ignored" in unknown
    assert "1 image(s) of the folder have no row (yes/Y2.png)" in unlisted
    assert str(root / "strata.csv") in unknown


def test_no_strata_file_no_strata(tmp_path: Path) -> None:
    _png_folder(tmp_path / "kaggle", ["yes/Y1.png", "no/N1.png"])
    strata = folder_strata(discover([tmp_path / "kaggle"]))
    assert strata.files == [] and strata.by_path == {} and strata.warnings == []


def test_stratum_figures_match_scikit_learn() -> None:
    rng = np.random.default_rng(5)
    n = 90
    contrast = rng.choice(["t1ce", "t2", "flair"], n)
    plane = rng.choice(["axial", "coronal"], n)
    skull = rng.choice(["yes", "no"], n)
    offset = rng.choice(["near", "far"], n)
    label = rng.integers(0, 2, n)
    prob = np.clip(0.3 * label + rng.uniform(0, 0.7, n), 0, 1)
    # one cell holds one class only: its AUC is undefined
    contrast[:4], plane[:4], label[:4] = "t1", "oblique", 1
    strata: list[dict[str, str] | None] = [
        {"contrast": c, "plane": p, "skull": s, "offset": o}
        for c, p, s, o in zip(contrast, plane, skull, offset, strict=True)
    ]
    strata[-1] = None  # an image without a row counts in no stratum
    held = HeldOut(
        threshold=0.5,
        slice_prob=[0.9, 0.1, 0.8],  # slices come first in the units: never stratified
        slice_logit=[2.0, -2.0, 1.0],
        slice_label=[1, 0, 0],
        slice_patient=["P1", "P1", "P2"],
        slice_index=[0, 1, 0],
        slice_source=["brats"] * 3,
        slice_boundary=[False] * 3,
        image_prob=prob.tolist(),
        image_logit=np.log(prob.clip(1e-6, 1 - 1e-6) / (1 - prob.clip(1e-6, 1 - 1e-6))).tolist(),
        image_label=label.tolist(),
        image_ids=[f"img{i}" for i in range(n)],
        image_source=["kaggle"] * n,
        image_strata=strata,
    )
    by = classification_section(held, n_boot=N_BOOT, seed=0)["by_stratum"]
    has = np.arange(n) < n - 1
    columns = {"contrast": contrast, "plane": plane, "skull": skull, "offset": offset}
    columns[CELL] = np.asarray([f"{c}/{p}" for c, p in zip(contrast, plane, strict=True)])
    assert list(by) == ["contrast", "plane", "skull", "offset", CELL]
    for col, values in columns.items():
        assert set(by[col]) == set(values[has].tolist())
        for v, figs in by[col].items():
            m = has & (values == v)
            f = figs["roc_auc"]
            assert f["n"] == int(m.sum())
            if len(set(label[m].tolist())) < 2:
                assert f["value"] is None and "one class" in f["reason"]
                continue
            assert f["value"] == pytest.approx(roc_auc_score(label[m], prob[m]))
            lo, hi = f["ci95"]
            assert lo <= f["value"] <= hi
    assert by[CELL]["t1/oblique"]["roc_auc"]["value"] is None


def test_no_strata_no_section() -> None:
    held = HeldOut(
        image_prob=[0.2, 0.8],
        image_logit=[-1.0, 1.0],
        image_label=[0, 1],
        image_ids=["a", "b"],
        image_source=["kaggle"] * 2,
        image_strata=[None, None],
    )
    assert "by_stratum" not in classification_section(held, n_boot=N_BOOT, seed=0)


@pytest.fixture
def kaggle_copy(synth_brain: Path, tmp_path: Path) -> Path:
    root = tmp_path / "kaggle"
    shutil.copytree(synth_brain / "kaggle", root)
    assert (root / "strata.csv").is_file(), "the generator writes strata.csv beside its images"
    return root


def test_evaluated_folder_gets_per_stratum_auc(
    tiny_run: Path, kaggle_copy: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r"
    # the run's largest split: most images, so most strata hold both classes
    evaluate_run(run=tiny_run, data=[kaggle_copy], out=out, split="train", n_boot=N_BOOT)
    metrics = json.loads((out / "metrics.json").read_text())
    validate_metrics(metrics)
    by = metrics["classification"]["by_stratum"]
    units = {
        u["id"].split(":", 1)[1]: u
        for u in json.loads((out / "predictions.json").read_text())["classification"]
    }
    with (kaggle_copy / "strata.csv").open(newline="") as f:
        rows = {Path(r["file"]).with_suffix("").as_posix(): r for r in csv.DictReader(f)}
    evaluated = [k for k in units if k in rows]
    assert evaluated and len(evaluated) == len(units)
    compared = 0
    for col in ("contrast", "plane", "skull"):
        for v, figs in by[col].items():
            keys = [k for k in evaluated if rows[k][col] == v]
            y = [units[k]["label"] for k in keys]
            p = [units[k]["probability"] for k in keys]
            assert figs["roc_auc"]["n"] == len(keys)
            if len(set(y)) == 2:
                assert figs["roc_auc"]["value"] == pytest.approx(roc_auc_score(y, p))
                compared += 1
            else:
                assert figs["roc_auc"]["value"] is None
    assert compared > 0
    cells = {f"{rows[k]['contrast']}/{rows[k]['plane']}" for k in evaluated}
    assert set(by[CELL]) == cells
    assert metrics["meta"]["strata"]["files"] == [str(kaggle_copy / "strata.csv")]
    md = (out / "report.md").read_text()
    assert "### classification by stratum" in md
    assert "| contrast |" in md and f"| {CELL} |" in md
    assert "by_stratum" not in md  # its own table, not rows of the classification table


def test_malformed_strata_file_stops_before_any_report(
    tiny_run: Path, kaggle_copy: Path, tmp_path: Path
) -> None:
    text = (kaggle_copy / "strata.csv").read_text().replace("contrast", "kontrast", 1)
    _write(kaggle_copy / "strata.csv", text)
    with pytest.raises(DataError, match=re.escape("missing column(s) contrast")) as err:
        evaluate_run(run=tiny_run, data=[kaggle_copy], out=tmp_path / "r", n_boot=N_BOOT)
    assert err.value.path == kaggle_copy / "strata.csv"
    assert not (tmp_path / "r").exists()


def test_rows_for_absent_images_are_a_report_warning(
    tiny_run: Path, kaggle_copy: Path, tmp_path: Path
) -> None:
    with (kaggle_copy / "strata.csv").open("a") as f:
        f.write("yes/Y999.jpg,yes,t1ce,axial,yes,0.0\n")
    out = tmp_path / "r"
    evaluate_run(run=tiny_run, data=[kaggle_copy], out=out, n_boot=N_BOOT)
    warnings = json.loads((out / "metrics.json").read_text())["meta"]["strata"]["warnings"]
    assert (
        len(warnings) == 1 and "1 row(s) name no image of the folder (yes/Y999.jpg)" in warnings[0]
    )
    assert "- warning: " in (out / "report.md").read_text()
