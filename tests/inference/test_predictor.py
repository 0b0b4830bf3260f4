"""Predictor: reload identity, calibration, gate, risk, every input kind, bad inputs, domain check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sksurv.linear_model.coxph import BreslowEstimator

from tumorscope.config import Config, load_config
from tumorscope.data.dicom import read_dicom_series
from tumorscope.data.types import DataError
from tumorscope.inference.predictor import Predictor
from tumorscope.training.checkpoint import CheckpointError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def tiny_config(*overrides: str) -> Config:
    return load_config(CONFIGS / "tiny.yaml", overrides)


def head(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A bright ellipsoid 'head' with a brighter off-centre blob on a dark noisy background."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    r2 = sum(g**2 for g in grid)
    blob = sum((g - 0.3) ** 2 for g in grid)
    x = np.where(r2 < 0.7, 100.0, 0.0) + np.where(blob < 0.08, 120.0, 0.0)
    return (x + rng.uniform(0, 5, size=shape)).astype(np.float32)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)
    return path


def write_mr_series(folder: Path, n_slices: int = 6, gap: float = 4.0) -> Path:
    """An MR DICOM series from pydicom's MR_small.dcm, with a 'head' volume as pixels."""
    folder.mkdir(parents=True)
    path = get_testdata_file("MR_small.dcm")
    assert path is not None
    vol = (head((64, 64, n_slices), seed=3) * 10).astype(np.int16)
    uid = generate_uid()
    for k in range(n_slices):
        ds = pydicom.dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + gap * k]
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PixelData = np.ascontiguousarray(vol[:, :, k]).tobytes()
        ds.save_as(folder / f"IM{k:03d}.dcm")
    return folder


BASELINE_RISK = np.array([-1.0, -0.5, 0.0, 0.2, 0.4, 0.9, 1.3, -0.2])
BASELINE_TIME = np.array([100.0, 220.0, 300.0, 310.0, 450.0, 500.0, 640.0, 800.0])
BASELINE_EVENT = np.array([1, 0, 1, 1, 0, 1, 1, 0], dtype=bool)


@pytest.fixture(scope="module")
def breslow() -> BreslowEstimator:
    return BreslowEstimator().fit(BASELINE_RISK, BASELINE_EVENT, BASELINE_TIME)


@pytest.fixture(scope="module")
def predictor(breslow: BreslowEstimator) -> Predictor:
    fn = breslow.cum_baseline_hazard_
    q = np.linspace(0, 1, 5)
    calibration = {
        "temperature": 1.7,
        "threshold": 0.4,
        "baseline_hazard": {"times": fn.x.tolist(), "cumulative": fn.y.tolist()},
        "risk_quantiles": {"q": q.tolist(), "value": np.quantile(BASELINE_RISK, q).tolist()},
    }
    return Predictor.from_config(tiny_config(), calibration=calibration, seed=3)


@pytest.fixture(scope="module")
def volume_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("vol")
    affine = np.diag([-4.0, 4.0, 5.0, 1.0])  # stored L-A-S: canonical flips the first axis
    return write_nifti(folder / "case_a.nii.gz", head((30, 26, 14)), affine)


# --------------------------------------------------------------------------- reload


def test_saved_and_reloaded_predictor_gives_bit_identical_outputs(
    predictor: Predictor, volume_file: Path, tmp_path: Path
) -> None:
    run = predictor.save(tmp_path / "run")
    again = Predictor.from_run(run)
    assert again.temperature == 1.7 and again.threshold == 0.4 and again.gate_threshold == 0.3
    image = head((37, 41), seed=5)
    a, b = predictor.predict(image, gate_threshold=0.0), again.predict(image, gate_threshold=0.0)
    assert a.tumour_probability == b.tumour_probability
    assert a.probabilities is not None and b.probabilities is not None
    assert np.array_equal(a.probabilities, b.probabilities)
    va = predictor.predict_volume(volume_file, gate_threshold=0.0)
    vb = again.predict_volume(volume_file, gate_threshold=0.0)
    assert va.slice_probabilities == vb.slice_probabilities
    assert np.array_equal(va.masks, vb.masks) and va.masks.any()
    assert va.risk is not None and vb.risk is not None
    assert va.risk.log_hazard == vb.risk.log_hazard and va.risk.survival == vb.risk.survival
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        predictor.save(run)


def test_unfinished_or_altered_runs_are_refused(predictor: Predictor, tmp_path: Path) -> None:
    run = predictor.save(tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["calibration"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="manifest has no calibration"):
        Predictor.from_run(run)
    other = predictor.save(tmp_path / "other")
    with (other / "model.safetensors").open("r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\1\2\3")
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        Predictor.from_run(other)


def test_trained_run_reloads_identically(tiny_run: Path, synth_brain: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_run, tmp_path / "copy"))
    a, b = Predictor.from_run(tiny_run), Predictor.from_run(copy)
    assert a.temperature == float(a.manifest["calibration"]["temperature"])
    case = next(p for p in sorted((synth_brain / "brats").iterdir()) if p.is_dir())
    ra, rb = a.predict_volume(case), b.predict_volume(case)
    assert ra.slice_probabilities == rb.slice_probabilities
    assert np.array_equal(ra.masks_ungated, rb.masks_ungated)
    assert ra.risk is not None and rb.risk is not None and ra.risk.log_hazard == rb.risk.log_hazard


# --------------------------------------------------------------------------- calibration, gate


def test_temperature_scales_the_logit(predictor: Predictor) -> None:
    flat = Predictor.from_config(tiny_config(), seed=3)  # same weights, T = 1
    image = head((40, 44), seed=1)
    p1 = flat.predict(image).tumour_probability
    pt = predictor.predict(image).tumour_probability
    logit = np.log(p1 / (1 - p1))
    assert pt == pytest.approx(1 / (1 + np.exp(-logit / 1.7)), rel=1e-9)
    assert predictor.predict(image).tumour == (pt >= 0.4)


def test_gate_threshold_defaults_to_the_manifest_and_is_overridable(predictor: Predictor) -> None:
    image = head((37, 41), seed=2)
    p = predictor.predict(image, gate_threshold=0.0)
    assert p.mask is not None and p.mask.shape == (1, 37, 41) and p.mask.dtype == np.uint8
    above = predictor.predict(image, gate_threshold=min(1.0, p.tumour_probability + 1e-6))
    assert above.mask is None and above.gated
    assert above.mask_reason is not None and "under the gate threshold" in above.mask_reason
    default = predictor.predict(image)
    assert default.gate_threshold == 0.3
    assert (default.mask is None) == (p.tumour_probability < 0.3)
    open_run = Predictor.from_config(tiny_config(), calibration={"gate_threshold": 0.0}, seed=3)
    assert open_run.predict(image).mask is not None
    with pytest.raises(ValueError, match="gate_threshold"):
        predictor.predict(image, gate_threshold=1.5)


def test_gated_volume_returns_empty_mask_with_reason(
    predictor: Predictor, volume_file: Path
) -> None:
    r = predictor.predict_volume(volume_file, gate_threshold=1.0)
    assert r.gated and not r.masks.any() and r.masks_ungated.any()
    assert r.volumes_ml == {"WT": 0.0}
    assert r.to_json()["mask_returned"] is False and "gate" in r.to_json()["mask_reason"]


# --------------------------------------------------------------------------- risk


def test_survival_curve_and_percentile_match_scikit_survival(
    predictor: Predictor, volume_file: Path, breslow: BreslowEstimator
) -> None:
    r = predictor.predict_volume(volume_file)
    assert r.risk is not None
    lh = r.risk.log_hazard
    expected = breslow.get_survival_function(np.array([lh]))[0]
    times = np.asarray(r.risk.survival_times)
    np.testing.assert_allclose(r.risk.survival, expected(times), rtol=1e-10)
    assert r.risk.percentile == pytest.approx(
        np.interp(lh, np.quantile(BASELINE_RISK, np.linspace(0, 1, 5)), np.linspace(0, 100, 5))
    )
    # The head pools the slices training would have: slices_per_patient of them, a
    # tumour_slice_fraction share from the slices the model calls tumour. A threshold at
    # the 70th percentile of the slice probabilities makes both kinds of slices exist.
    cut = float(np.quantile(list(r.slice_probabilities.values()), 0.7))
    manifest = {**predictor.manifest}
    manifest["calibration"] = {**predictor.calibration, "threshold": cut}
    split = Predictor(predictor.model, predictor.cfg, manifest)
    r = split.predict_volume(volume_file)
    assert r.risk is not None
    spec = predictor.spec
    used = r.risk.slices_used
    assert set(used) <= set(r.slice_probabilities) and used == sorted(used)
    called = {z for z, q in r.slice_probabilities.items() if q >= cut}
    assert 0 < len(called) < len(r.slice_probabilities)
    n = min(spec.slices_per_patient, len(r.slice_probabilities))
    n_t = min(len(called), round(spec.slices_per_patient * spec.tumour_slice_fraction))
    n_t = max(n_t, n - (len(r.slice_probabilities) - len(called)))
    assert len(used) == n and len(called & set(used)) == n_t


def test_clinical_covariates_are_imputed_from_the_run(volume_file: Path) -> None:
    calibration = {
        "imputation": {"columns": ["age", "eor"], "values": [60.0, 1.0], "center": [55.0, 0.5],
                       "scale": [10.0, 0.5]},
    }  # fmt: skip
    p = Predictor.from_config(
        tiny_config("model.clinical_features=2"), calibration=calibration, seed=1
    )
    p.manifest = p.manifest.replace(clinical_columns=("age", "eor"))
    imputed = p.predict_volume(volume_file, clinical={"age": None})
    explicit = p.predict_volume(volume_file, clinical={"age": 60.0, "eor": 1.0})
    older = p.predict_volume(volume_file, clinical={"age": 90.0})
    assert imputed.risk is not None and explicit.risk is not None and older.risk is not None
    assert imputed.risk.imputed == ["age", "eor"] and explicit.risk.imputed == []
    assert imputed.risk.log_hazard == explicit.risk.log_hazard
    assert older.risk.log_hazard != explicit.risk.log_hazard
    with pytest.raises(ValueError, match="unknown covariate"):
        p.predict_volume(volume_file, clinical={"weight": 70.0})


# --------------------------------------------------------------------------- inputs


def test_png_jpeg_and_arrays_in_one_batch_keep_their_sizes(
    predictor: Predictor, tmp_path: Path
) -> None:
    grey = (head((45, 52), seed=4) * 2).clip(0, 255).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "scan.png")
    Image.fromarray(grey[:40, :33]).convert("RGB").save(tmp_path / "photo.jpg", quality=90)
    arr = head((29, 35), seed=6)
    results = predictor.predict_batch(
        [tmp_path / "scan.png", str(tmp_path / "photo.jpg"), arr], gate_threshold=0.0
    )
    assert [r.name for r in results] == ["scan", "photo", "array_2"]
    assert [r.mask.shape for r in results if r.mask is not None] == [
        (1, 45, 52), (1, 40, 33), (1, 29, 35)
    ]  # fmt: skip
    single = predictor.predict(arr, name="mine")
    assert single.name == "mine"
    assert single.tumour_probability == pytest.approx(results[2].tumour_probability, abs=1e-6)
    named = predictor.predict_batch([arr], names=["given"])
    assert named[0].name == "given"


@pytest.mark.parametrize("stored_2d", [True, False])
def test_2d_nifti_matches_the_same_slice_as_a_volume(
    predictor: Predictor, tmp_path: Path, stored_2d: bool
) -> None:
    plane = head((34, 30), seed=8)
    affine = np.array([[0, -3.0, 0, 10], [-3.0, 0, 0, 5], [0, 0, 4.0, 0], [0, 0, 0, 1]])
    as_volume = write_nifti(tmp_path / "slice_vol.nii.gz", plane[:, :, None], affine)
    path = write_nifti(tmp_path / "slice.nii", plane if stored_2d else plane[:, :, None], affine)
    s = predictor.predict(path, gate_threshold=0.0)
    # Component removal is volume post-processing, which a 2D prediction does not get.
    v = predictor.predict_volume(as_volume, gate_threshold=0.0, min_component_ml=0.0)
    assert s.name == "slice" and s.mask is not None and s.mask.shape == (1, 34, 30)
    # A NIfTI slice is cut exactly as a one-slice volume is: same numbers, same mask.
    assert s.tumour_probability == v.slice_probabilities[0]
    vol_mask = v.masks_in_input_geometry()[:, :, :, 0]
    assert np.array_equal(vol_mask, s.mask) and s.mask.any() and not s.mask.all()
    assert s.image is not None and np.array_equal(s.image, plane)


def test_dicom_series_folder(predictor: Predictor, tmp_path: Path) -> None:
    folder = write_mr_series(tmp_path / "series")
    r = predictor.predict_volume(folder, gate_threshold=0.0)
    vol, meta = read_dicom_series(folder)
    assert r.name == "series" and r.masks.shape == (1, *vol.shape)
    assert r.masks_in_input_geometry().shape == (1, *meta.original_shape)
    assert any("DICOM MR series taken as the model's flair channel" in w for w in r.warnings)
    written = nib.load(predictor.write_mask(r, tmp_path / "series_mask.nii.gz"))
    assert written.shape == meta.original_shape
    assert meta.original_affine is not None
    np.testing.assert_allclose(written.affine, meta.original_affine, atol=1e-4)
    assert np.array_equal(np.asarray(written.dataobj), r.masks_in_input_geometry()[0])
    voxel_ml = 0.3125 * 0.3125 * 4.0 / 1000
    assert r.volumes_ml["WT"] == pytest.approx(r.masks.sum() * voxel_ml)


def test_brats_case_folder_and_case_records(predictor: Predictor, synth_brain: Path) -> None:
    from tumorscope.data.layout import discover, load_case

    case = discover([synth_brain]).cases[0]
    folder = predictor.predict_volume(case.channels["flair"].parent)
    record = predictor.predict_volume(case)
    loaded = load_case(case, ["flair"])  # with its mask: prediction must ignore it
    in_memory = predictor.predict_volume(loaded, source="brats")
    assert folder.slice_probabilities == record.slice_probabilities
    assert folder.slice_probabilities == in_memory.slice_probabilities
    assert folder.masks.shape == (1, *loaded.image.shape[1:])
    assert folder.warnings == []  # realistic synthetic data raises no domain warning


def test_hecktor_case_folder_with_pet_on_its_own_grid(tmp_path: Path) -> None:
    cfg = load_config(
        CONFIGS / "demo-petct.yaml",
        ["model.base_channels=4", "model.depth=2", "data.image_size=32"],
    )
    p = Predictor.from_config(cfg, calibration={"gate_threshold": 0.0}, seed=1)
    folder = tmp_path / "CHUM-007"
    folder.mkdir()
    body = head((28, 24, 10), seed=4)
    ct = np.where(body > 50, body - 60.0, -1000.0)  # air around soft tissue, in HU
    ct_affine = np.diag([3.0, 3.0, 4.0, 1.0])
    write_nifti(folder / "CHUM-007__CT.nii.gz", ct.astype(np.float32), ct_affine)
    pet_affine = np.diag([6.0, 6.0, 4.0, 1.0])  # coarser PET grid, resampled onto the CT
    write_nifti(folder / "CHUM-007__PT.nii.gz", head((14, 12, 10), seed=5) / 20, pet_affine)
    r = p.predict_volume(folder)
    assert r.name == "CHUM-007" and r.regions == ["GTVp"]
    assert r.masks.shape == (1, 28, 24, 10) and r.masks.any()
    assert r.warnings == []
    with pytest.raises(DataError, match="a greyscale image has no place among channels"):
        p.predict(head((30, 30)), name="grey")


def test_array_volume_with_affine_equals_the_nifti_file(
    predictor: Predictor, volume_file: Path
) -> None:
    img = nib.load(volume_file)
    arr = np.asarray(img.dataobj)
    a = predictor.predict_volume(arr, affine=img.affine, gate_threshold=0.0)
    f = predictor.predict_volume(volume_file, gate_threshold=0.0)
    assert a.slice_probabilities == f.slice_probabilities
    assert np.array_equal(a.masks_in_input_geometry(), f.masks_in_input_geometry())
    assert a.masks_in_input_geometry().shape == (1, *arr.shape)


def test_empty_volume_is_gated_with_reason(predictor: Predictor) -> None:
    r = predictor.predict_volume(np.zeros((12, 10, 8), dtype=np.float32))
    assert r.gated and r.tumour_probability == 0.0 and not r.masks.any()
    assert r.mask_reason == "no slice inside the brain/body mask"
    assert any("constant" in w for w in r.warnings)


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs_get_errors_naming_the_input(predictor: Predictor, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^two: image has 2 channels; the model takes 1"):
        predictor.predict_batch([np.ones((4, 4)), np.ones((2, 30, 30))], names=["one", "two"])
    with pytest.raises(DataError, match=r"^array: .*3D volume where a 2D image is expected"):
        predictor.predict(head((30, 30, 30)))
    nan = head((20, 20))
    nan[3, 4] = np.nan
    with pytest.raises(DataError, match=r"^x: image holds NaN"):
        predictor.predict(nan, name="x")
    vol = write_nifti(tmp_path / "vol.nii.gz", head((20, 20, 6)), np.eye(4))
    with pytest.raises(DataError, match=r"vol\.nii\.gz: expected a 2D image, got a 3D volume"):
        predictor.predict(vol)
    bad = write_nifti(
        tmp_path / "bad.nii.gz", np.where(head((8, 8, 4)) > 50, np.nan, 1.0), np.eye(4)
    )
    with pytest.raises(DataError, match=r"bad\.nii\.gz: .*NaN"):
        predictor.predict_volume(bad)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(DataError, match=r"broken\.png: "):
        predictor.predict(tmp_path / "broken.png")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"notes\.txt: unsupported file type"):
        predictor.predict(tmp_path / "notes.txt")
    with pytest.raises(DataError, match=r"missing\.png: no such file"):
        predictor.predict(tmp_path / "missing.png")
    with pytest.raises(DataError, match=r"^array: volume of shape \(3, 8, 8, 8\)"):
        predictor.predict_volume(np.ones((3, 8, 8, 8)))
    with pytest.raises(DataError, match=r"is a folder; use predict_volume"):
        predictor.predict(tmp_path)


# --------------------------------------------------------------------------- domain check


def test_domain_check_warns_on_far_spacing_masks_and_zero_filled_channels(
    predictor: Predictor, tmp_path: Path
) -> None:
    tiny_voxels = write_nifti(
        tmp_path / "micro.nii.gz", head((24, 24, 8)), np.diag([0.05, 0.05, 0.05, 1])
    )
    r = predictor.predict_volume(tiny_voxels)
    assert any("in-plane spacing (0.05, 0.05) mm is outside" in w for w in r.warnings)
    assert any("mm across, outside" in w for w in r.warnings)
    label_image = (head((40, 40), seed=2) > 50).astype(np.float32)
    assert any("distinct values" in w for w in predictor.predict(label_image).warnings)
    normalised = head((40, 40), seed=2) - 80.0
    assert any("negative" in w for w in predictor.predict(normalised).warnings)
    four = Predictor.from_config(
        tiny_config(
            "data.channels=[flair,t1,t1ce,t2]", "model.in_channels=4",
            "data.missing_channels=zero_fill",
        )
    )  # fmt: skip
    w = four.predict(head((40, 40), seed=2)).warnings
    assert "greyscale image: channels ['t1', 't1ce', 't2'] zero-filled" in w
    strict = Predictor.from_config(tiny_config("data.channels=[flair,t1]", "model.in_channels=2"))
    with pytest.raises(DataError, match="volume has 1 channel; the model takes 2"):
        strict.predict_volume(tiny_voxels)


def test_segmentation_only_model_uses_its_largest_pixel_probability(volume_file: Path) -> None:
    p = Predictor.from_config(tiny_config("model.heads=[]"), calibration={"gate_threshold": 0.0})
    r = p.predict(head((36, 40), seed=3))
    assert r.probabilities is not None and r.tumour_type is None
    # The maximum over the resized map back in the input grid can only be lower.
    assert r.tumour_probability >= float(r.probabilities.max()) - 1e-6
    v = p.predict_volume(volume_file)
    assert v.risk is None and v.masks.any() and v.mask_reason is None
