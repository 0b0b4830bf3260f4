"""One DICOM file as a prediction input: a single frame is a 2D image, an Enhanced MR file a
volume; a Modality the model's profile was not trained on is a warning, never a refusal."""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import EnhancedMRImageStorage, generate_uid
from typer.testing import CliRunner

from tumorscope.cli import app
from tumorscope.config import load_config
from tumorscope.data.spec import PreprocessSpec
from tumorscope.data.types import DataError
from tumorscope.inference.inputs import is_2d_input, read_2d
from tumorscope.inference.predictor import Predictor

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MODALITY_CT = "DICOM Modality is CT; this brain-mri model was trained on MR (MRI) images only"


def bundled(name: str) -> Path:
    """A test file shipped inside the installed pydicom (never downloaded)."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} does not ship with this pydicom"
    return Path(str(path))


def copy(name: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(bundled(name), folder / name))


def head_frames(n: int = 6) -> np.ndarray:
    """``(n, 40, 44)`` int16 frames of a bright ellipsoid (foreground on every frame)."""
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in (n, 40, 44)], indexing="ij")
    inside = grid[0] ** 2 * 0.3 + grid[1] ** 2 + grid[2] ** 2 < 0.7
    noise = np.random.default_rng(2).uniform(0, 20, size=inside.shape)
    return (400 * inside + noise).astype(np.int16)


def write_enhanced(path: Path, frames: np.ndarray, modality: str = "MR") -> Path:
    """An Enhanced MR file (functional groups place each frame 3 mm apart)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(bundled("MR_small.dcm"))
    for key in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        delattr(ds, key)
    ds.Modality = modality
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.NumberOfFrames, ds.Rows, ds.Columns = frames.shape
    shared = Dataset()
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = [1.0, 1.0]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = []
    for k in range(frames.shape[0]):
        item = Dataset()
        item.PlanePositionSequence = [Dataset()]
        item.PlanePositionSequence[0].ImagePositionPatient = [0.0, 0.0, 3.0 * k]
        ds.PerFrameFunctionalGroupsSequence.append(item)
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    cfg = load_config(CONFIGS / "tiny.yaml")
    return Predictor.from_config(cfg, calibration={"gate_threshold": 0.0}, seed=3)


@pytest.fixture(scope="module")
def run(predictor: Predictor, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return predictor.save(tmp_path_factory.mktemp("single-dicom") / "run")


def test_single_frame_mr_is_a_2d_image_with_its_spacing(predictor: Predictor) -> None:
    path = bundled("MR_small.dcm")
    assert is_2d_input(path)
    result = predictor.predict(path)
    assert result.name == "MR_small" and 0.0 <= result.tumour_probability <= 1.0
    assert result.probabilities is not None and result.probabilities.shape == (1, 64, 64)
    assert result.meta is not None and result.meta.spacing == (0.3125, 0.3125)
    assert not any("Modality" in w for w in result.warnings)
    np.testing.assert_array_equal(
        result.image, pydicom.dcmread(path).pixel_array.astype(np.float32)
    )


def test_compressed_copy_predicts_exactly_as_the_uncompressed_file(predictor: Predictor) -> None:
    plain = predictor.predict(bundled("MR_small.dcm"))
    for name in ("MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"):
        packed = predictor.predict(bundled(name))
        assert packed.tumour_probability == plain.tumour_probability
        assert packed.probabilities is not None and plain.probabilities is not None
        np.testing.assert_array_equal(packed.probabilities, plain.probabilities)


def test_ct_slice_for_a_brain_mri_model_is_warned_not_refused(predictor: Predictor) -> None:
    result = predictor.predict(bundled("CT_small.dcm"))
    assert 0.0 <= result.tumour_probability <= 1.0  # still scored
    assert sum(w.startswith(MODALITY_CT) for w in result.warnings) == 1


def test_read_input_exposes_the_header_modality() -> None:
    brain = PreprocessSpec()
    petct = dataclasses.replace(brain, profile="petct", channels=("ct", "pet"))
    ct = read_2d(bundled("CT_small.dcm"), None, 0, 1, brain)
    mr = read_2d(bundled("MR_small.dcm"), None, 0, 1, petct)
    assert ct.modality == "CT" and mr.modality == "MR"
    assert [w for w in mr.warnings if "Modality" in w] == [
        "DICOM Modality is MR (MRI); this petct model was trained on CT or PT (PET) images "
        "only: its output for this input is not validated"
    ]
    assert read_2d(bundled("MR_small.dcm"), None, 0, 1, brain).warnings == []


def test_enhanced_mr_file_is_a_volume(predictor: Predictor, tmp_path: Path) -> None:
    path = write_enhanced(tmp_path / "enhanced.dcm", head_frames())
    assert not is_2d_input(path)
    result = predictor.predict_volume(path)
    assert result.name == "enhanced" and result.masks.shape == (1, 44, 40, 6)
    assert result.meta is not None
    np.testing.assert_allclose(result.meta.spacing, (1.0, 1.0, 3.0))
    assert not any("Modality" in w for w in result.warnings)
    ct = predictor.predict_volume(write_enhanced(tmp_path / "ct.dcm", head_frames(), "CT"))
    assert sum(w.startswith(MODALITY_CT) for w in ct.warnings) == 1


def test_ct_series_folder_is_warned(predictor: Predictor, tmp_path: Path) -> None:
    folder = tmp_path / "series"
    copy("CT_small.dcm", folder)
    result = predictor.predict_volume(folder)
    assert sum(w.startswith(MODALITY_CT) for w in result.warnings) == 1


def test_files_that_cannot_be_what_was_asked(predictor: Predictor) -> None:
    with pytest.raises(DataError, match=r"MR_small\.dcm: one frame: a 2D image, not a volume"):
        predictor.predict_volume(bundled("MR_small.dcm"))
    with pytest.raises(DataError, match=r"rtdose\.dcm: 15 frames and no per-frame geometry"):
        predictor.predict_volume(bundled("rtdose.dcm"))


def test_command_line_predicts_a_single_dicom_file(run: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    mr, ct = copy("MR_small.dcm", inputs), copy("CT_small.dcm", inputs)
    volume = write_enhanced(inputs / "enhanced.dcm", head_frames())
    out = tmp_path / "out"
    args = ["predict", str(mr), str(ct), str(volume), "--run", str(run), "--out", str(out)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "MR_small: " in done.output and "error" not in done.output
    doc = json.loads((out / "MR_small.json").read_text())
    assert doc["kind"] == "image" and doc["geometry"]["spacing_mm"] == [0.3125, 0.3125]
    assert (out / "MR_small_overlay.png").is_file()
    ct_doc = json.loads((out / "CT_small.json").read_text())
    assert any(w.startswith(MODALITY_CT) for w in ct_doc["warnings"])
    assert (out / "enhanced_mask.nii.gz").is_file() and (out / "enhanced.json").is_file()


def test_command_line_names_a_file_that_is_no_volume(run: Path, tmp_path: Path) -> None:
    dose = copy("rtdose.dcm", tmp_path / "in")
    args = ["predict", str(dose), "--run", str(run), "--out", str(tmp_path / "out")]
    done = CliRunner().invoke(app, args)
    assert done.exit_code != 0
    assert "rtdose.dcm: 15 frames and no per-frame geometry" in done.output
    assert "Traceback" not in done.output
