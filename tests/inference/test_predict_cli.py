"""``tumorscope predict``: one JSON per input, a mask for every volume, overlays for images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tumorscope.cli import app
from tumorscope.config import load_config
from tumorscope.data.types import DataError
from tumorscope.fileio import OUTPUT_RECORD, OutputExistsError
from tumorscope.inference.cli import input_name, predict_inputs
from tumorscope.inference.inputs import is_2d_input
from tumorscope.inference.predictor import Predictor

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
OBLIQUE = np.array(
    [[0.0, -2.9, 0.8, 30.0], [3.0, 0.0, 0.0, -12.0], [0.0, 0.7, 3.9, 4.0], [0, 0, 0, 1]]
)


def head(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    inside = sum(g**2 for g in grid) < 0.7
    blob = sum((g - 0.3) ** 2 for g in grid) < 0.08
    return (100.0 * inside + 120.0 * blob + rng.uniform(0, 5, size=shape)).astype(np.float32)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = load_config(CONFIGS / "tiny.yaml")
    p = Predictor.from_config(cfg, calibration={"gate_threshold": 0.0}, seed=3)
    return p.save(tmp_path_factory.mktemp("cli") / "run")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    grey = (head((45, 52), seed=4) * 2).clip(0, 255).astype(np.uint8)
    Image.fromarray(grey).save(folder / "scan.png")
    return {
        "volume": write_nifti(folder / "oblique.nii.gz", head((20, 18, 12)), OBLIQUE),
        "png": folder / "scan.png",
        "slice": write_nifti(folder / "slice.nii.gz", head((30, 28))[:, :, None], np.eye(4)),
    }


def test_names_and_kinds(inputs: dict[str, Path], tmp_path: Path) -> None:
    assert input_name(inputs["volume"]) == "oblique" and input_name(inputs["png"]) == "scan"
    assert input_name(tmp_path) == tmp_path.name
    assert [is_2d_input(inputs[k]) for k in ("volume", "png", "slice")] == [False, True, True]


def test_writes_json_and_mask_or_overlay_per_input(
    run: Path, inputs: dict[str, Path], synth_brain: Path, tmp_path: Path
) -> None:
    case = next(p for p in sorted((synth_brain / "brats").iterdir()) if p.is_dir())
    out = tmp_path / "out"
    lines = list(predict_inputs(run=run, inputs=[*inputs.values(), case], out=out))
    assert len(lines) == 4
    assert lines[0].startswith("oblique: tumour p=") and lines[0].endswith("oblique.json")
    assert " mL" in lines[0] and " px" in lines[1]
    for name in ("oblique", case.name):
        doc = json.loads((out / f"{name}.json").read_text())
        assert doc["kind"] == "volume" and doc["mask_returned"] is True
        assert (
            doc["mask_file"] == f"{name}_mask.nii.gz"
            and "not a medical device" in doc["disclaimer"]
        )
        source = nib.load(
            inputs["volume"] if name == "oblique" else case / f"{case.name}_flair.nii.gz"
        )
        mask = nib.load(out / doc["mask_file"])
        assert mask.shape == source.shape
        np.testing.assert_allclose(mask.affine, source.affine, atol=1e-5)
        np.testing.assert_allclose(doc["geometry"]["affine"], source.affine, atol=1e-5)
        ml = (
            np.count_nonzero(np.asarray(mask.dataobj))
            * abs(np.linalg.det(source.affine[:3, :3]))
            / 1000
        )
        assert doc["volumes_ml"]["WT"] == pytest.approx(ml)
    for name, shape in (("scan", (45, 52)), ("slice", (30, 28))):
        doc = json.loads((out / f"{name}.json").read_text())
        assert doc["kind"] == "image" and doc["overlay_file"] == f"{name}_overlay.png"
        assert doc["input_shape"] == list(shape) and doc["mask_returned"] is True
        with Image.open(out / doc["overlay_file"]) as im:
            assert im.format == "PNG" and im.size[0] > 100
        assert not (out / f"{name}_mask.nii.gz").exists()
    assert json.loads((out / "slice.json").read_text())["geometry"]["shape"] == [30, 28, 1]


def test_gated_volume_still_writes_an_empty_mask(
    run: Path, inputs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    lines = list(predict_inputs(run=run, inputs=[inputs["volume"]], out=out, gate_threshold=1.0))
    assert "no mask (patient tumour probability" in lines[0]
    doc = json.loads((out / "oblique.json").read_text())
    assert doc["mask_returned"] is False and doc["mask_empty_because_gated"] is True
    assert "under the gate threshold 1.00" in doc["mask_reason"]
    mask = nib.load(out / "oblique_mask.nii.gz")
    assert mask.shape == (20, 18, 12) and not np.asarray(mask.dataobj).any()


def test_bad_input_is_reported_and_the_others_still_written(
    run: Path, inputs: dict[str, Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    out = tmp_path / "out"
    lines: list[str] = []
    with pytest.raises(DataError, match=r"broken\.png: .*\(1 of 2 inputs failed\)"):
        for line in predict_inputs(run=run, inputs=[broken, inputs["png"]], out=out):
            lines.append(line)
    assert lines[0].startswith("broken: error: ") and str(broken) in lines[0]
    assert (out / "scan.json").is_file() and not (out / "broken.json").exists()


def test_two_inputs_with_one_name_are_refused(
    run: Path, inputs: dict[str, Path], tmp_path: Path
) -> None:
    other = tmp_path / "scan.jpg"
    Image.fromarray(np.full((20, 20), 80, np.uint8)).save(other)
    with pytest.raises(DataError, match="same output name 'scan'"):
        list(predict_inputs(run=run, inputs=[inputs["png"], other], out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_command_line(run: Path, inputs: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(
        app, ["predict", str(inputs["png"]), "--run", str(run), "--out", str(tmp_path)]
    )
    assert ok.exit_code == 0, ok.output
    assert "scan: tumour p=" in ok.output and (tmp_path / "scan.json").is_file()
    bad = runner.invoke(
        app, ["predict", str(tmp_path / "nope.png"), "--run", str(run), "--out", str(tmp_path)]
    )
    assert bad.exit_code == 2 and "nope.png" in bad.output


def test_trained_run_end_to_end_leaves_the_run_untouched(
    tiny_run: Path, synth_brain: Path, tmp_path: Path
) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in tiny_run.rglob("*")}
    case = next(p for p in sorted((synth_brain / "brats").iterdir()) if p.is_dir())
    image = next(iter(sorted((synth_brain / "kaggle").rglob("*.jpg"))))
    lines = list(predict_inputs(run=tiny_run, inputs=[case, image], out=tmp_path))
    assert len(lines) == 2 and all(" -> " in line for line in lines)
    doc = json.loads((tmp_path / f"{case.name}.json").read_text())
    assert doc["risk"]["survival_curve"]["survival"] and 0 <= doc["risk"]["percentile"] <= 100
    assert (tmp_path / f"{case.name}_mask.nii.gz").is_file()
    assert (tmp_path / f"{image.stem}_overlay.png").is_file()
    assert {p.name: p.stat().st_mtime_ns for p in tiny_run.rglob("*")} == before


def test_uncertainty_gradcam_and_figure_flags(
    tiny_run: Path, synth_brain: Path, tmp_path: Path
) -> None:
    case = next(p for p in sorted((synth_brain / "brats").iterdir()) if p.is_dir())
    truth = case / f"{case.name}_seg.nii.gz"
    res = CliRunner().invoke(
        app,
        ["predict", str(case), "--run", str(tiny_run), "--out", str(tmp_path), "--mc-samples", "4",
         "--gradcam", "--figure", "--truth", str(truth)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / f"{case.name}.json").read_text())
    unc = doc["uncertainty"]
    assert unc["samples"] == 4 and isinstance(unc["needs_review"], bool) and unc["score"] >= 0
    maps = nib.load(tmp_path / f"{case.name}_uncertainty.nii.gz")
    src = nib.load(case / f"{case.name}_flair.nii.gz")
    assert maps.shape[:3] == src.shape and np.allclose(maps.affine, src.affine)
    data = np.asarray(maps.dataobj)
    assert np.isfinite(data).all() and (data >= 0).all()
    for suffix in ("_gradcam.png", "_figure.png"):
        assert (tmp_path / f"{case.name}{suffix}").stat().st_size > 10_000


def test_rerun_into_its_own_folder_needs_overwrite_and_spares_user_files(
    run: Path, inputs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    notes = out / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("mine")
    list(predict_inputs(run=run, inputs=[inputs["png"]], out=out))
    record = json.loads((out / OUTPUT_RECORD).read_text())
    assert set(record["files"]) == {"scan.json", "scan_overlay.png"}
    first = (out / "scan.json").read_bytes()
    with pytest.raises(OutputExistsError, match=r"scan\.json: exists .*pass --overwrite"):
        list(predict_inputs(run=run, inputs=[inputs["png"]], out=out))
    lines = list(predict_inputs(run=run, inputs=[inputs["png"]], out=out, overwrite=True))
    assert len(lines) == 1 and (out / "scan.json").read_bytes() == first
    (out / "scan_overlay.png").write_bytes(b"edited by the user")
    with pytest.raises(OutputExistsError, match="changed after tumorscope wrote it"):
        list(predict_inputs(run=run, inputs=[inputs["png"]], out=out, overwrite=True))
    assert (out / "scan_overlay.png").read_bytes() == b"edited by the user"
    assert notes.read_text() == "mine"


def test_out_in_an_inputs_folder_is_refused_unless_allowed(
    run: Path, inputs: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    image = Path(shutil.copy(inputs["png"], folder / "scan.png"))
    before = image.read_bytes()
    with pytest.raises(DataError, match=r"is the folder of the input .*scan\.png"):
        list(predict_inputs(run=run, inputs=[image], out=folder))
    with pytest.raises(DataError, match="is inside the input folder"):
        list(predict_inputs(run=run, inputs=[folder], out=folder / "pred"))
    assert sorted(p.name for p in folder.iterdir()) == ["scan.png"]
    list(predict_inputs(run=run, inputs=[image], out=folder, allow_inside_input=True))
    assert (folder / "scan.json").is_file() and image.read_bytes() == before
