"""``compare_runs``: paired tests on the same patients, against the tiny run and a broken copy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from tumorscope.evaluation.compare import Comparison, compare_runs
from tumorscope.evaluation.evaluate import EvaluationError, evaluate_predictor, evaluate_run
from tumorscope.evaluation.report import load_predictions
from tumorscope.fileio import OutputExistsError
from tumorscope.inference.predictor import Predictor

N_BOOT = 20


@pytest.fixture(scope="module")
def reports(
    tiny_run: Path, synth_brain: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """The tiny run's report and the report of the same model with constant heads."""
    root = tmp_path_factory.mktemp("compare")
    good = root / "tiny"
    evaluate_run(run=tiny_run, data=[synth_brain], out=good, n_boot=N_BOOT)
    predictor = Predictor.from_run(tiny_run)
    with torch.no_grad():
        predictor.model.segmentation_head.conv.weight.zero_()
        predictor.model.segmentation_head.conv.bias.fill_(-20.0)
        predictor.model.tumour_head.linear.weight.zero_()
        predictor.model.tumour_head.linear.bias.zero_()
        if predictor.model.tumour_head.evidence is not None:  # the segmentation evidence's weights
            predictor.model.tumour_head.evidence.weight.zero_()
    broken = root / "constant"
    evaluate_predictor(predictor, data=[synth_brain], out=broken, n_boot=N_BOOT)
    return good, broken


def _tests(result: Comparison, metric: str) -> list[dict]:
    return [t for t in result.tests if t["metric"] == metric]


def test_self_comparison_is_null(reports: tuple[Path, Path], tmp_path: Path) -> None:
    good, _ = reports
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in good.iterdir():
        copy.joinpath(f.name).write_bytes(f.read_bytes())
    result = compare_runs(runs=[good, copy], out=tmp_path / "cmp", n_boot=N_BOOT)
    (dice,) = _tests(result, "dice")
    assert dice["delta"] == 0.0 and dice["p_value"] == 1.0 and dice["non_inferior"] is True
    for t in _tests(result, "roc_auc"):
        assert t["delta"] == 0.0 and t["p_value"] == 1.0


def test_constant_model_against_the_run(reports: tuple[Path, Path], tmp_path: Path) -> None:
    good, broken = reports
    out = tmp_path / "cmp"
    result = compare_runs(runs=[good, broken], out=out, n_boot=N_BOOT, margin=0.02)
    assert result.names == ["tiny", "constant"]
    assert (out / "compare.md").read_text() == result.markdown()
    saved = json.loads((out / "compare.json").read_text())
    assert saved["reference"] == "tiny" and saved["margin"] == 0.02
    ref, oth = load_predictions(good), load_predictions(broken)
    (dice,) = _tests(result, "dice")
    da = np.array([c["dice"] for c in ref["cases"]])
    assert dice["reference_value"] == pytest.approx(da.mean())
    assert dice["other_value"] == 0.0
    assert dice["delta"] == pytest.approx(-da.mean())
    lo, hi = dice["ci95"]
    assert lo <= dice["delta"] <= hi
    assert dice["non_inferior"] is (lo > -0.02)
    if da.mean() > 0.05:
        assert dice["non_inferior"] is False
    aucs = _tests(result, "roc_auc")
    y = np.array([u["label"] for u in ref["classification"]])
    if 0 < y.sum() < y.size:
        (auc,) = aucs
        s = np.array([u["probability"] for u in ref["classification"]])
        assert auc["reference_value"] == pytest.approx(roc_auc_score(y, s))
        assert auc["other_value"] == pytest.approx(0.5)
        assert auc["test"] == "DeLong" and 0.0 <= auc["p_value"] <= 1.0
        assert auc["n_units"] == len(oth["classification"])
    assert "| `constant` | dice |" in result.markdown()


def test_run_folder_needs_data(tiny_run: Path, reports: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="is a run folder"):
        compare_runs(runs=[reports[0], tiny_run], out=tmp_path / "c")
    with pytest.raises(EvaluationError, match="neither a report folder"):
        compare_runs(runs=[reports[0], tmp_path], out=tmp_path / "c")
    with pytest.raises(ValueError, match="at least two"):
        compare_runs(runs=[reports[0]], out=tmp_path / "c")


def test_stages_are_evaluated_with_defaults(
    tiny_run: Path, synth_brain: Path, tmp_path: Path
) -> None:
    stages = sorted(p for p in (tiny_run / "stages").iterdir() if (p / "manifest.json").is_file())
    assert len(stages) >= 2
    result = compare_runs(runs=stages[:2], out=tmp_path / "cmp", data=[synth_brain], n_boot=N_BOOT)
    for stage in stages[:2]:
        metrics = json.loads(
            (tmp_path / "cmp" / "reports" / stage.name / "metrics.json").read_text()
        )
        assert metrics["meta"]["temperature"] == 1.0 and metrics["meta"]["threshold"] == 0.5
        assert metrics["meta"]["stage"] == stage.name
        assert metrics["survival"]["ibs"]["value"] is None
    run_splits = json.loads((tiny_run / "manifest.json").read_text())["splits"]
    evaluated = {
        c["patient_id"]
        for c in load_predictions(tmp_path / "cmp" / "reports" / stages[0].name)["cases"]
    }
    seen = {p for ids in run_splits.values() for p in ids}
    assert evaluated and all(p in run_splits["test"] or p not in seen for p in evaluated)
    assert len(result.tests) >= 1


def test_outputs_never_replace_a_users_file(reports: tuple[Path, Path], tmp_path: Path) -> None:
    good, broken = reports
    out = tmp_path / "cmp"
    compare_runs(runs=[good, broken], out=out, n_boot=N_BOOT)
    first = (out / "compare.json").read_bytes()
    with pytest.raises(OutputExistsError, match=r"compare\.json: exists .*pass --overwrite"):
        compare_runs(runs=[good, broken], out=out, n_boot=N_BOOT)
    compare_runs(runs=[good, broken], out=out, n_boot=N_BOOT, overwrite=True)
    assert (out / "compare.json").read_bytes() == first
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "compare.md").write_text("# my comparison\n")
    with pytest.raises(OutputExistsError, match="not written by tumorscope"):
        compare_runs(runs=[good, broken], out=mine, n_boot=N_BOOT, overwrite=True)
    assert sorted(p.name for p in mine.iterdir()) == ["compare.md"]
    assert (mine / "compare.md").read_text() == "# my comparison\n"
