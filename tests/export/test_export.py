"""``tumorscope export`` end to end on the tiny run: real onnxruntime sessions, results
against the PyTorch run, INT8 within its budget, and every bad input one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tumorscope.cli import app
from tumorscope.data.types import DataError
from tumorscope.evaluation.evaluate import evaluate_run
from tumorscope.export.run import FIGURES, ExportError, export_run
from tumorscope.fileio import sha256_file
from tumorscope.inference.inputs import cut, read_2d
from tumorscope.inference.predictor import Predictor
from tumorscope.inference.uncertainty import mc_dropout
from tumorscope.runs import CheckpointError, load_run
from tumorscope.runs.files import MANIFEST_FILE
from tumorscope.runs.load import read_run_manifest
from tumorscope.runs.onnx import TAIL_FILE, TRUNK_FILE, OnnxBackend

runner = CliRunner()


@pytest.fixture(scope="module")
def fp32(tiny_export: Path) -> Path:
    return tiny_export


@pytest.fixture(scope="module")
def int8(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "int8"
    res = runner.invoke(
        app, ["export", "--run", str(tiny_run), "--out", str(out), "--format", "onnx-int8"]
    )
    assert res.exit_code == 0, res.output
    return out


def _images(synth_brain: Path) -> list[Path]:
    return sorted((synth_brain / "kaggle").rglob("*.jpg"))[:6]


def _volume(synth_brain: Path) -> Path:
    return sorted(p for p in (synth_brain / "brats").iterdir() if p.is_dir())[0]


def test_training_records_its_data_folders(tiny_run: Path, synth_brain: Path) -> None:
    assert read_run_manifest(tiny_run).data == (str(synth_brain.resolve()),)


def test_export_folder_describes_itself(fp32: Path, tiny_run: Path) -> None:
    manifest = json.loads((fp32 / MANIFEST_FILE).read_text())
    listed = set(manifest["files"])
    assert listed == {f.name for f in fp32.iterdir() if f.name != MANIFEST_FILE}
    assert {TRUNK_FILE, TAIL_FILE, "patient.onnx", "domain.safetensors", "seen.json",
            "export.json", "export.md"} <= listed  # fmt: skip
    for name, digest in manifest["files"].items():
        assert sha256_file(fp32 / name) == digest
    export = manifest["export"]
    assert export["format"] == "onnx"
    assert export["source"]["manifest_sha256"] == sha256_file(tiny_run / MANIFEST_FILE)
    source = json.loads((tiny_run / MANIFEST_FILE).read_text())
    for key in ("config", "preprocessing", "calibration", "splits", "regions", "heads"):
        assert manifest[key] == source[key], key
    report = json.loads((fp32 / "export.json").read_text())
    assert report["parity"]["max_probability_difference"] <= 1e-4
    assert report["parity"]["mask_agreement"] >= 0.999
    assert report["cpu"]["cpu_model"]
    assert "| onnx |" in (fp32 / "export.md").read_text()


def test_export_predicts_as_the_pytorch_run(fp32: Path, tiny_run: Path, synth_brain: Path) -> None:
    torch_p, onnx_p = Predictor.from_run(tiny_run), Predictor.from_run(fp32)
    assert isinstance(onnx_p.backend, OnnxBackend)
    for a, b in zip(
        torch_p.predict_batch(_images(synth_brain)),
        onnx_p.predict_batch(_images(synth_brain)),
        strict=True,
    ):
        assert abs(a.tumour_probability - b.tumour_probability) <= 1e-4
        assert a.domain.score == pytest.approx(b.domain.score, abs=1e-3)
        assert a.probabilities is not None and b.probabilities is not None
        assert ((a.probabilities >= 0.5) == (b.probabilities >= 0.5)).mean() >= 0.999
    va = torch_p.predict_volume(_volume(synth_brain))
    vb = onnx_p.predict_volume(_volume(synth_brain))
    assert abs(va.tumour_probability - vb.tumour_probability) <= 1e-4
    assert (va.masks == vb.masks).mean() >= 0.999
    assert va.risk is not None and vb.risk is not None
    assert vb.risk.log_hazard == pytest.approx(va.risk.log_hazard, abs=1e-4)
    assert vb.domain.score == pytest.approx(va.domain.score, abs=1e-3)


def test_evaluate_on_export_matches_the_run(
    fp32: Path, tiny_run: Path, synth_brain: Path, tmp_path: Path
) -> None:
    a = evaluate_run(run=tiny_run, data=[synth_brain], out=tmp_path / "torch", n_boot=20)
    b = evaluate_run(run=fp32, data=[synth_brain], out=tmp_path / "onnx", n_boot=20)
    held_a, held_b = a.metrics["meta"]["held_out"], b.metrics["meta"]["held_out"]
    assert held_b["reason"].endswith(f"({fp32 / 'seen.json'})")  # the copy in the export
    assert {k: v for k, v in held_a.items() if k != "reason"} == {
        k: v for k, v in held_b.items() if k != "reason"
    }
    for key in FIGURES.values():
        x, y = a.summary().get(key), b.summary().get(key)
        assert (x is None) == (y is None), key
        if x is not None and np.isfinite(x):
            assert y == pytest.approx(x, abs=1e-3), key


def test_predict_cli_on_export_with_mc_dropout(
    fp32: Path, synth_brain: Path, tmp_path: Path
) -> None:
    image = _images(synth_brain)[0]
    res = runner.invoke(
        app,
        [
            "predict",
            "--run",
            str(fp32),
            "--out",
            str(tmp_path / "p"),
            "--mc-samples",
            "6",
            str(image),
        ],
    )
    assert res.exit_code == 0, res.output
    answer = json.loads((tmp_path / "p" / f"{image.stem}.json").read_text())
    assert answer["uncertainty"]["dropout_samples"] == 6
    assert answer["uncertainty"]["score"] >= 0
    res = runner.invoke(
        app, ["predict", "--run", str(fp32), "--out", str(tmp_path / "q"), "--gradcam", str(image)]
    )
    assert res.exit_code == 2
    assert "Grad-CAM needs the PyTorch network" in res.output


def test_mc_dropout_on_export(fp32: Path, tiny_run: Path, synth_brain: Path) -> None:
    onnx_p, torch_p = Predictor.from_run(fp32), Predictor.from_run(tiny_run)
    slices = np.stack(
        [cut(read_2d(p, None, 0, 1, onnx_p.spec), onnx_p.spec)[0] for p in _images(synth_brain)]
    )
    off = mc_dropout(onnx_p.network, slices, samples=3, sampling=False)
    det = torch_p.forward_slices(slices)
    assert off.probability is not None and off.tumour_samples is not None
    np.testing.assert_allclose(off.probability, det["seg_prob"], atol=1e-4)
    np.testing.assert_allclose(off.mutual_information, 0.0, atol=1e-6)  # every sample equal
    on = mc_dropout(onnx_p.network, slices, samples=8, seed=1)
    again = mc_dropout(onnx_p.network, slices, samples=8, seed=1)
    assert on.tumour_samples is not None
    assert float(on.tumour_samples.std(0).max()) > 0  # the masks were sampled
    np.testing.assert_array_equal(on.tumour_samples, again.tumour_samples)  # seeded
    ref = mc_dropout(torch_p.model, slices, samples=8, seed=1)
    assert ref.tumour_samples is not None
    # Other masks than PyTorch's, the same distribution: close means on 8 samples.
    assert np.abs(on.tumour_samples.mean(0) - ref.tumour_samples.mean(0)).max() < 0.1


def test_int8_export_within_budget(int8: Path, tiny_run: Path, synth_brain: Path) -> None:
    report = json.loads((int8 / "export.json").read_text())
    variants = report["variants"]
    assert {"pytorch", "onnx", "int8-minmax", "int8-entropy", "int8-percentile"} <= set(variants)
    chosen = variants[report["chosen"]]
    assert report["chosen"].startswith("int8-") and chosen["within_budget"]
    budget = report["budget"]["max_accuracy_change"]
    assert budget == 1.0  # configs/tiny.yaml
    for key in ("dice", "slice_auc", "image_auc"):
        change = chosen["change"][key]
        assert change is None or abs(change) <= budget
    # the fastest INT8 variant within budget
    fine = [
        v["latency"]["p50_ms"]
        for name, v in variants.items()
        if name.startswith("int8-") and v["within_budget"]
    ]
    assert chosen["latency"]["p50_ms"] == min(fine)
    manifest = json.loads((int8 / MANIFEST_FILE).read_text())
    assert manifest["export"]["quantisation"]["variant"] == report["chosen"]
    import onnx

    ops = {n.op_type for n in onnx.load(str(int8 / TRUNK_FILE)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # INT8 predictions stay near the PyTorch ones on real images
    a = Predictor.from_run(tiny_run).predict_batch(_images(synth_brain))
    b = Predictor.from_run(int8).predict_batch(_images(synth_brain))
    for x, y in zip(a, b, strict=True):
        assert abs(x.tumour_probability - y.tumour_probability) < 0.05


def test_int8_over_budget_is_refused_and_writes_nothing(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "refused"
    with pytest.raises(ExportError, match="INT8 refused: the closest variant"):
        export_run(
            run=tiny_run, out=out, format="onnx-int8", max_accuracy_change=0.0, calibration_slices=8
        )
    assert not out.exists()
    assert not list(tmp_path.glob(".refused*"))  # no staging folder left


def test_bad_destinations(tiny_run: Path, fp32: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    res = runner.invoke(app, ["export", "--run", str(tiny_run), "--out", str(mine)])
    assert res.exit_code == 2
    assert f"{mine}: exists and is not an export; nothing written" in " ".join(res.output.split())
    assert (mine / "notes.txt").read_text() == "keep me" and len(list(mine.iterdir())) == 1
    copy = tmp_path / "copy"
    shutil.copytree(fp32, copy)
    with pytest.raises(ExportError, match="holds an export already; pass --overwrite"):
        export_run(run=tiny_run, out=copy)
    before = sha256_file(copy / MANIFEST_FILE)
    export_run(run=tiny_run, out=copy, overwrite=True)
    assert sha256_file(copy / MANIFEST_FILE) != before  # replaced by a new export
    with pytest.raises(ExportError, match="is an export already"):
        export_run(run=copy, out=tmp_path / "again")
    with pytest.raises(ExportError, match="format 'tflite'"):
        export_run(run=tiny_run, out=tmp_path / "x", format="tflite")


def test_bad_runs(tiny_run: Path, fp32: Path, tmp_path: Path) -> None:
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_run, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors: listed in the manifest but missing"
    ):
        export_run(run=no_weights, out=tmp_path / "a")
    no_data = tmp_path / "no-data"
    shutil.copytree(tiny_run, no_data)
    manifest = json.loads((no_data / MANIFEST_FILE).read_text())
    manifest["data"] = [str(tmp_path / "gone")]
    (no_data / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="gone: data folder not found"):
        export_run(run=no_data, out=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_damaged_exports_are_one_line(fp32: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(fp32, bad)
    data = bytearray((bad / TRUNK_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / TRUNK_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"trunk\.onnx: sha256 does not match the manifest"):
        load_run(bad)
    # A graph that is not ONNX at all, listed with its true hash: ONNX Runtime's refusal.
    (bad / TRUNK_FILE).write_bytes(b"not an onnx graph")
    manifest = json.loads((bad / MANIFEST_FILE).read_text())
    manifest["files"][TRUNK_FILE] = sha256_file(bad / TRUNK_FILE)
    (bad / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="cannot be opened by ONNX Runtime"):
        load_run(bad)
    res = runner.invoke(
        app, ["predict", "--run", str(bad), "--out", str(tmp_path / "p"), str(bad / "export.md")]
    )
    assert res.exit_code == 2 and "cannot be opened by ONNX Runtime" in res.output
    unlisted = tmp_path / "unlisted"
    shutil.copytree(fp32, unlisted)
    manifest = json.loads((unlisted / MANIFEST_FILE).read_text())
    del manifest["files"][TAIL_FILE]
    (unlisted / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"tail\.onnx is not listed with its sha256"):
        load_run(unlisted)


def test_pruned_export_refits_what_a_run_stores(
    tiny_run: Path, tiny_export: Path, synth_brain: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pruned"
    res = export_run(run=tiny_run, out=out, format="onnx", prune=0.5, prune_steps=4)
    pr = res.report["pruning"]
    assert pr["ratio"] == 0.5 and pr["finetune_steps"] == 4
    assert pr["parameters_after"] < 0.7 * pr["parameters_before"]
    assert pr["macs_after"] < 0.6 * pr["macs_before"]
    assert {"pytorch", "pytorch-pruned", "onnx"} <= set(res.report["variants"])
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    source = json.loads((tiny_run / MANIFEST_FILE).read_text())
    assert manifest["export"]["pruning"] == pr
    # the calibration and validation metrics are the pruned network's own
    assert manifest["metrics"] != source["metrics"]
    fitted = manifest["calibration"]
    assert (
        fitted["temperature"] != source["calibration"]["temperature"]
        or fitted["threshold"] != source["calibration"]["threshold"]
    )
    pruned = Predictor.from_run(out)
    assert pruned.domain.stats is not None  # refitted to the narrower features
    (result,) = pruned.predict_batch(_images(synth_brain)[:1])
    assert result.domain.score is not None and np.isfinite(result.domain.score)
    # narrower weights: a smaller trunk than the unpruned export's
    assert (out / TRUNK_FILE).stat().st_size < (tiny_export / TRUNK_FILE).stat().st_size
    with pytest.raises(ExportError, match=r"--prune 1\.5 is not a share"):
        export_run(run=tiny_run, out=tmp_path / "x", prune=1.5)
