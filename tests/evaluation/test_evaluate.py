"""``evaluate_run`` on the session's tiny trained run: files, schema, figures vs. independent
libraries, patient selection, degenerate data, and a deliberately broken (constant) model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from lifelines.utils import concordance_index
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou
from sklearn.metrics import average_precision_score, roc_auc_score

from tumorscope.data.layout import discover, load_case, region_masks
from tumorscope.evaluation.collect import HeldOut
from tumorscope.evaluation.evaluate import (
    EvaluationError,
    EvaluationReport,
    evaluate_predictor,
    evaluate_run,
)
from tumorscope.evaluation.report import PLOT_FILES, REPORT_FILES, load_predictions
from tumorscope.evaluation.schema import validate_metrics
from tumorscope.evaluation.sections import censor_at, survival_section
from tumorscope.fileio import OUTPUT_RECORD, OutputExistsError
from tumorscope.inference.predictor import Predictor
from tumorscope.metrics.lesionwise import LESION_HD95_PENALTY_MM, lesion_wise
from tumorscope.metrics.segmentation import EMPTY_HD95_MM

N_BOOT = 30


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def report(
    tiny_run: Path, synth_brain: Path, tmp_path_factory: pytest.TempPathFactory
) -> EvaluationReport:
    before = _snapshot(tiny_run)
    out = tmp_path_factory.mktemp("eval") / "report"
    rep = evaluate_run(run=tiny_run, data=[synth_brain], out=out, split="test", n_boot=N_BOOT)
    assert _snapshot(tiny_run) == before, "evaluate wrote into the run"
    return rep


def broken_predictor(run: Path) -> Predictor:
    """The tiny run's model with constant heads: tumour logit 0, empty masks, risk 0."""
    predictor = Predictor.from_run(run)
    model = predictor.model
    with torch.no_grad():
        model.segmentation_head.conv.weight.zero_()
        model.segmentation_head.conv.bias.fill_(-20.0)
        model.tumour_head.linear.weight.zero_()
        model.tumour_head.linear.bias.zero_()
        if model.tumour_head.evidence is not None:  # the segmentation evidence's weights
            model.tumour_head.evidence.weight.zero_()
        model.survival_head.hazard.weight.zero_()
    return predictor


def test_report_files_and_schema(report: EvaluationReport) -> None:
    names = {p.name for p in report.out.iterdir()}
    assert {"metrics.json", "predictions.json", "report.md", *PLOT_FILES.values()} <= names
    metrics = json.loads((report.out / "metrics.json").read_text())
    validate_metrics(metrics)
    assert metrics["schema_version"] == 1
    for region in metrics["meta"]["regions"]:
        assert "dice" in metrics["segmentation"]["by_region"][region]
        for key in ("lesion_dice", "lesion_hd95"):
            assert metrics["segmentation"]["by_region"][region][key]["value"] is not None
    assert 0.0 <= metrics["segmentation"]["lesion_dice"]["value"] <= 1.0
    assert 0.0 <= metrics["segmentation"]["lesion_hd95"]["value"] <= LESION_HD95_PENALTY_MM
    assert metrics["segmentation"]["lesion_hd95"]["unit"] == "mm"
    assert set(metrics["classification"]["by_source"]) == {"brats", "kaggle"}
    md = (report.out / "report.md").read_text()
    assert "| dice |" in md and "| roc_auc |" in md and "| c_index |" in md
    assert "| lesion_dice |" in md and "| lesion_hd95 |" in md
    for f in PLOT_FILES.values():
        assert f"({f})" in md


def test_evaluated_patients_are_test_split_plus_unseen(
    report: EvaluationReport, tiny_run: Path, synth_brain: Path
) -> None:
    splits = json.loads((tiny_run / "manifest.json").read_text())["splits"]
    seen = {p for ids in splits.values() for p in ids}
    index = discover([synth_brain])
    want = {
        c.patient_id
        for c in index.cases
        if c.patient_id in splits["test"] or c.patient_id not in seen
    }
    assert set(report.held.case_ids) == want
    want_images = {
        i.patient_id
        for i in index.images
        if i.patient_id in splits["test"] or i.patient_id not in seen
    }
    assert set(report.held.image_ids) == want_images


def test_figures_match_independent_libraries(report: EvaluationReport) -> None:
    pred = load_predictions(report.out)
    m = pred["metrics"]
    dice = [c["dice"] for c in pred["cases"]]
    assert m["segmentation"]["dice"]["value"] == pytest.approx(np.mean(dice))
    assert m["segmentation"]["dice"]["n"] == len(dice)
    for key in ("lesion_dice", "lesion_hd95"):
        values = [c[key] for c in pred["cases"]]
        assert m["segmentation"][key]["value"] == pytest.approx(np.mean(values))
        assert m["segmentation"][key]["n"] == len(values)
    units = pred["classification"]
    y = np.array([u["label"] for u in units])
    s = np.array([u["probability"] for u in units])
    auc = m["classification"]["roc_auc"]
    if 0 < y.sum() < y.size:
        assert auc["value"] == pytest.approx(roc_auc_score(y, s))
        assert m["classification"]["pr_auc"]["value"] == pytest.approx(
            average_precision_score(y, s)
        )
        lo, hi = auc["ci95"]
        assert lo <= auc["value"] <= hi
    else:
        assert auc["value"] is None and "one class" in auc["reason"]
    thr = m["meta"]["threshold"]
    if (y == 1).any():
        assert m["classification"]["sensitivity"]["value"] == pytest.approx(
            np.mean(s[y == 1] >= thr)
        )
    # raw logits: σ(logit / T) gives back the calibrated probability
    logit = np.array([u["logit"] for u in units])
    t = m["meta"]["temperature"]
    np.testing.assert_allclose(1 / (1 + np.exp(-logit / t)), s, atol=1e-9)
    surv = pred["survival"]
    c = m["survival"]["c_index"]
    if surv and any(r["event"] for r in surv):
        risk = np.array([r["risk"] for r in surv])
        time = np.array([r["time"] for r in surv])
        event = np.array([r["event"] for r in surv])
        # lifelines wants a score where higher = longer survival
        assert c["value"] == pytest.approx(concordance_index(time, -risk, event))
        true = np.array([r["true_risk"] for r in surv])
        oracle = m["survival"]["c_index_oracle"]["value"]
        assert oracle == pytest.approx(concordance_index(time, -true, event))


def _ece_reference(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> float:
    """Equal-mass ECE from scikit-learn's reliability curve (its quantile bins), each
    non-empty bin weighted by its count."""
    from sklearn.calibration import calibration_curve

    true, pred = calibration_curve(y, p, n_bins=n_bins, strategy="quantile")
    edges = np.percentile(p, np.linspace(0, 100, n_bins + 1))
    counts = np.bincount(np.searchsorted(edges[1:-1], p), minlength=n_bins)
    counts = counts[counts > 0]
    return float(np.sum(counts / counts.sum() * np.abs(true - pred)))


def test_ece_before_and_after_temperature(report: EvaluationReport) -> None:
    pred = load_predictions(report.out)
    units = pred["classification"]
    y = np.array([u["label"] for u in units], dtype=float)
    logit = np.array([u["logit"] for u in units])
    cal = pred["metrics"]["calibration"]
    t = pred["temperature"]
    assert cal["ece"]["value"] == pytest.approx(_ece_reference(1 / (1 + np.exp(-logit)), y))
    assert cal["ece_after_temperature"]["value"] == pytest.approx(
        _ece_reference(1 / (1 + np.exp(-logit / t)), y)
    )
    assert cal["binning"] == {"strategy": "equal-mass", "bins": 10}
    from sklearn.metrics import brier_score_loss

    assert cal["brier_after_temperature"]["value"] == pytest.approx(
        brier_score_loss(y, 1 / (1 + np.exp(-logit / t)))
    )
    sources = np.array([u["source"] for u in units])
    assert set(cal["by_source"]) == set(sources)
    for src, figures in cal["by_source"].items():
        m = sources == src
        assert figures["ece_after_temperature"]["value"] == pytest.approx(
            _ece_reference(1 / (1 + np.exp(-logit[m] / t)), y[m])
        )
        assert figures["brier"]["value"] == pytest.approx(
            brier_score_loss(y[m], 1 / (1 + np.exp(-logit[m])))
        )


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own deprecation inside HD
def test_case_dice_against_monai(
    report: EvaluationReport, tiny_run: Path, synth_brain: Path
) -> None:
    predictor = Predictor.from_run(tiny_run)
    case = next(c for c in discover([synth_brain]).cases if c.patient_id == report.held.case_ids[0])
    loaded = load_case(case, predictor.spec.channels)
    result = predictor.predict_volume(loaded, source=case.source)
    truth = region_masks(loaded.mask, case.source, predictor.regions)
    expected = compute_dice(
        torch.from_numpy(result.masks_ungated[None].astype(np.float32)),
        torch.from_numpy(truth[None].astype(np.float32)),
        include_background=True,
        ignore_empty=False,
    )
    assert report.held.dice_ungated[0] == pytest.approx(float(expected.mean()), abs=1e-6)
    pred_t = torch.from_numpy(result.masks[None].astype(np.float32))
    truth_t = torch.from_numpy(truth[None].astype(np.float32))
    gated = compute_dice(pred_t, truth_t, include_background=True, ignore_empty=False)
    assert report.held.dice[0] == pytest.approx(float(gated.mean()), abs=1e-6)
    iou = compute_iou(pred_t, truth_t, include_background=True, ignore_empty=False)
    assert report.held.case_extra["iou"][0] == pytest.approx(float(iou.mean()), abs=1e-6)
    # lesion-wise: the gated masks in the input's geometry, the file's voxel spacing
    # (lesion_wise itself is checked against the BraTS code in tests/metrics/test_lesionwise.py)
    lesions = [
        lesion_wise(result.masks[i].astype(bool), truth[i].astype(bool), loaded.meta.spacing[:3])
        for i in range(len(predictor.regions))
    ]
    assert report.held.lesion_dice[0] == pytest.approx(np.mean([r.dice for r in lesions]))
    assert report.held.lesion_hd95[0] == pytest.approx(np.mean([r.hd95 for r in lesions]))
    region = predictor.regions[0]
    assert report.held.lesion_dice_by_region[region][0] == pytest.approx(lesions[0].dice)
    if result.masks.any():
        spacing = [float(s) for s in loaded.meta.spacing[:3]]
        hd = compute_hausdorff_distance(
            pred_t, truth_t, include_background=True, percentile=95, spacing=spacing
        )
        assert report.held.hd95[0] == pytest.approx(float(hd.mean()), rel=1e-4)


def test_out_inside_run_is_refused(tiny_run: Path, synth_brain: Path) -> None:
    with pytest.raises(EvaluationError, match="inside the run"):
        evaluate_run(run=tiny_run, data=[synth_brain], out=tiny_run / "report")
    assert not (tiny_run / "report").exists()
    stage = tiny_run / "stages" / "joint"
    with pytest.raises(EvaluationError, match="inside the run"):
        evaluate_run(run=stage, data=[synth_brain], out=tiny_run / "report")
    with pytest.raises(EvaluationError, match="not a readable run"):
        evaluate_run(run=synth_brain, data=[synth_brain], out=synth_brain.parent / "r")


def test_unknown_split_is_refused(tiny_run: Path, synth_brain: Path, tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="split 'nope'"):
        evaluate_run(run=tiny_run, data=[synth_brain], out=tmp_path / "r", split="nope")


def test_images_only_data_gives_reasons(tiny_run: Path, synth_brain: Path, tmp_path: Path) -> None:
    kaggle = synth_brain / "kaggle"
    assert kaggle.is_dir()
    rep = evaluate_run(run=tiny_run, data=[kaggle], out=tmp_path / "r", n_boot=N_BOOT)
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    validate_metrics(m)
    for key in ("dice", "dice_ungated", "hd95_mm", "lesion_dice", "lesion_hd95"):
        assert m["segmentation"][key]["value"] is None
        assert "ground-truth mask" in m["segmentation"][key]["reason"]
    for key in ("c_index", "c_index_uno", "td_auc", "ibs", "c_index_oracle"):
        assert m["survival"][key]["value"] is None and m["survival"][key]["reason"]
    assert set(m["classification"]["by_source"]) == {"kaggle"}
    assert rep.summary()["segmentation.dice"] is None


def test_broken_model_gives_chance_auc_and_zero_dice(
    tiny_run: Path, synth_brain: Path, tmp_path: Path
) -> None:
    rep = evaluate_predictor(
        broken_predictor(tiny_run),
        data=[synth_brain],
        out=tmp_path / "r",
        split="train",
        n_boot=N_BOOT,
    )
    m = rep.metrics
    validate_metrics(json.loads((tmp_path / "r" / "metrics.json").read_text()))
    assert len(rep.held.case_ids) >= 3
    assert m["segmentation"]["dice"]["value"] == 0.0  # every synthetic case has a tumour
    assert m["segmentation"]["dice_ungated"]["value"] == 0.0
    assert m["segmentation"]["hd95_mm"]["value"] == pytest.approx(EMPTY_HD95_MM)
    # every tumour missed, no false positive: lesion-wise Dice 0, HD95 the 374 mm penalty
    assert m["segmentation"]["lesion_dice"]["value"] == 0.0
    assert m["segmentation"]["lesion_hd95"]["value"] == pytest.approx(LESION_HD95_PENALTY_MM)
    assert m["classification"]["roc_auc"]["value"] == 0.5
    assert m["classification"]["by_source"]["brats"]["roc_auc"]["value"] == 0.5
    assert m["survival"]["c_index"]["value"] == 0.5  # constant risk: every pair a tie
    assert np.allclose(rep.held.slice_prob, 0.5)


def test_censoring_at_horizon_keeps_brier_scores() -> None:
    from tumorscope.metrics.survival import brier_score

    rng = np.random.default_rng(3)
    tt, te = rng.uniform(1, 100, 60), rng.random(60) < 0.7
    t, e = rng.uniform(1, 90, 25), rng.random(25) < 0.7
    surv = np.exp(-np.outer(rng.random(25), [0.01, 0.02, 0.03]) * np.array([20, 40, 60]))
    grid = np.array([20.0, 40.0, 60.0])
    ct, ce = censor_at(t, e, 70.0)
    assert (ct <= 70).all() and not ce[t > 70].any()
    np.testing.assert_allclose(
        brier_score(surv, ct, ce, tt, te, grid), brier_score(surv, t, e, tt, te, grid)
    )


def test_survival_section_against_scikit_survival() -> None:
    from sksurv.metrics import concordance_index_ipcw, cumulative_dynamic_auc
    from sksurv.metrics import integrated_brier_score as sk_ibs
    from sksurv.util import Surv

    rng = np.random.default_rng(7)
    n = 40
    true = rng.normal(size=n)
    time = rng.exponential(300 * np.exp(-true)) + 1.0
    event = rng.random(n) < 0.75
    tt, te = rng.uniform(1, time.max() * 1.5, 80), rng.random(80) < 0.6
    tt[0], te[0] = time.max() * 2, False  # training follow-up covers every test time
    held = HeldOut(regions=["WT"])
    for i in range(n):
        pid = f"P{i:02d}"
        held.risk[pid] = float(true[i] + rng.normal(scale=0.5))
        held.outcomes[pid] = (float(time[i]), bool(event[i]))
        held.true_risk[pid] = float(true[i])
    base = {"times": [10.0, 100.0, 400.0], "cumulative": [0.05, 0.4, 1.2]}
    tau = float(np.quantile(time, 0.8))
    cal = {"train_survival": {"time": tt.tolist(), "event": te.tolist()}, "tau": tau}
    m = survival_section(held, {**cal, "baseline_hazard": base}, n_boot=20, seed=0)
    risk = np.array([held.risk[f"P{i:02d}"] for i in range(n)])
    train, test = Surv.from_arrays(te, tt), Surv.from_arrays(event, time)
    assert m["c_index"]["value"] == pytest.approx(concordance_index(time, -risk, event))
    assert m["c_index_oracle"]["value"] == pytest.approx(concordance_index(time, -true, event))
    assert m["c_index_uno"]["value"] == pytest.approx(
        concordance_index_ipcw(train, test, risk, tau=tau)[0]
    )
    grid = np.unique(np.quantile(time, np.linspace(0.1, 0.9, 9)))
    grid = grid[(grid >= time[event].min()) & (grid < tau)]
    assert m["td_auc"]["value"] == pytest.approx(cumulative_dynamic_auc(train, test, risk, grid)[1])
    idx = np.searchsorted(base["times"], grid, side="right") - 1
    h0 = np.where(idx >= 0, np.asarray(base["cumulative"])[np.clip(idx, 0, None)], 0.0)
    surv = np.exp(-np.outer(np.exp(risk), h0))
    assert m["ibs"]["value"] == pytest.approx(sk_ibs(train, test, surv, grid))
    for key in ("c_index", "c_index_uno", "td_auc", "ibs", "c_index_oracle"):
        lo, hi = m[key]["ci95"]
        assert lo <= hi
        assert m[key]["n"] == n
    assert 0.0 <= m["logrank_p"]["value"] <= 1.0
    # no events: every figure undefined, with the reason
    held.outcomes = {p: (t, False) for p, (t, _) in held.outcomes.items()}
    m = survival_section(held, cal, n_boot=5, seed=0)
    assert m["c_index"]["value"] is None and "no event" in m["c_index"]["reason"]
    assert m["ibs"]["value"] is None and "baseline" in m["ibs"]["reason"]


def test_an_earlier_report_needs_overwrite_and_user_files_never_go(
    report: EvaluationReport, tiny_run: Path, synth_brain: Path, tmp_path: Path
) -> None:
    out = tmp_path / "rep"
    shutil.copytree(report.out, out)  # an earlier report, with its record
    before = _snapshot(out)
    with pytest.raises(OutputExistsError, match=r"metrics\.json: exists .*pass --overwrite"):
        evaluate_run(run=tiny_run, data=[synth_brain], out=out, n_boot=N_BOOT)
    assert _snapshot(out) == before
    (out / "report.md").write_text("# my own notes\n")  # the user's now: never replaced
    with pytest.raises(OutputExistsError, match=r"report\.md: was changed after"):
        evaluate_run(run=tiny_run, data=[synth_brain], out=out, n_boot=N_BOOT, overwrite=True)
    (out / "report.md").unlink()
    evaluate_run(run=tiny_run, data=[synth_brain], out=out, n_boot=N_BOOT, overwrite=True)
    assert set(json.loads((out / OUTPUT_RECORD).read_text())["files"]) == set(REPORT_FILES)
    assert (out / "metrics.json").read_bytes() == (report.out / "metrics.json").read_bytes()


def test_out_inside_a_data_folder_is_refused(
    tiny_run: Path, synth_brain: Path, tmp_path: Path
) -> None:
    with pytest.raises(EvaluationError, match="inside the data folder"):
        evaluate_run(run=tiny_run, data=[synth_brain], out=synth_brain / "report")
    assert not (synth_brain / "report").exists()
