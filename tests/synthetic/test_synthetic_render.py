"""Synthetic generator, rendering side: files on disk, determinism, readers round trip.

Volumes are tiny (48×56×40 on the BraTS field of view, so 5×4.3×3.9 mm voxels) to keep the
whole file fast; the default 240×240×155 grid is checked without rendering it.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tumorscope.data.inspect import validate_dataset
from tumorscope.data.layout import discover, load_case
from tumorscope.data.types import BRAIN_CHANNELS, DataError
from tumorscope.synthetic import example_grid, sample_cohort, synthesize
from tumorscope.synthetic.anatomy import lesion_centre, load_atlas
from tumorscope.synthetic.brain import render_brain
from tumorscope.synthetic.kaggle import render_kaggle, sample_kaggle
from tumorscope.synthetic.presets import get_preset

SHAPE = (48, 56, 40)
PET_SHAPE = (40, 40, 28)


@pytest.fixture(scope="module")
def brain_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "one"
    synthesize(
        profile="brain-mri", patients=3, out=out, kaggle=6, difficulty="hard", seed=3, shape=SHAPE
    )
    return out


@pytest.fixture(scope="module")
def petct_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "pet"
    synthesize(profile="petct", patients=3, out=out, difficulty="standard", seed=3, shape=PET_SHAPE)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_brats_layout_dtypes_labels_and_geometry(brain_dir: Path) -> None:
    root = brain_dir / "brats"
    cases = sorted(p for p in root.iterdir() if p.is_dir())
    assert [c.name for c in cases] == [f"BraTS20_Training_{i:03d}" for i in (1, 2, 3)]
    for case in cases:
        names = sorted(p.name for p in case.iterdir())
        assert names == sorted(f"{case.name}_{m}.nii.gz" for m in (*BRAIN_CHANNELS, "seg"))
        seg_img = nib.load(case / f"{case.name}_seg.nii.gz")
        seg = np.asarray(seg_img.dataobj)
        assert seg.shape == SHAPE and seg.dtype == np.uint8
        assert set(np.unique(seg).tolist()) <= {0, 1, 2, 4}
        zooms = seg_img.header.get_zooms()
        np.testing.assert_allclose(zooms, (240 / 48, 240 / 56, 155 / 40), rtol=1e-5)
        assert np.sign(np.diag(seg_img.affine)[:3]).tolist() == [
            -1.0,
            -1.0,
            1.0,
        ]  # BraTS: LPS voxel axes
        wt_ml = np.count_nonzero(seg) * math.prod(zooms) / 1000.0
        assert wt_ml >= 0.1, f"{case.name}: whole tumour {wt_ml:.3f} mL"
        for m in BRAIN_CHANNELS:
            img = nib.load(case / f"{case.name}_{m}.nii.gz")
            data = np.asarray(img.dataobj)
            assert data.dtype == np.int16 and data.shape == SHAPE
            np.testing.assert_array_equal(img.affine, seg_img.affine)
            assert (
                data.min() == 0
                and max(data[0].max(), data[-1].max(), data[:, 0].max(), data[:, -1].max()) == 0
            )
            assert 0.05 < np.mean(data > 0) < 0.6  # a skull-stripped brain fills part of the box
            assert np.all(data[seg > 0] > 0)  # labels lie inside the brain


def test_survival_and_true_risk_csvs_match_the_sampled_cohort(brain_dir: Path) -> None:
    root = brain_dir / "brats"
    cohort = sample_cohort(profile="brain-mri", patients=3, difficulty="hard", seed=3)
    surv = pd.read_csv(root / "survival_info.csv", dtype=str, keep_default_na=False)
    assert list(surv.columns) == ["Brats20ID", "Age", "Survival_days", "Extent_of_Resection"]
    risk = pd.read_csv(root / "true_risk.csv")
    assert list(risk.columns) == ["patient_id", "true_log_hazard", "observable_log_hazard"]
    for p, row, rrow in zip(cohort, surv.itertuples(), risk.itertuples(), strict=True):
        # The observable part: the true log-hazard less its latent term (s·β_latent·x).
        latent = rrow.true_log_hazard - rrow.observable_log_hazard
        scale = get_preset("hard").scales("brain-mri")[0]
        assert latent == pytest.approx(scale * 0.45 * p.features["latent"], abs=2e-6)
        assert row.Brats20ID == p.patient_id == rrow.patient_id
        expected = f"{p.time:.0f}" if p.event else f"ALIVE ({p.time:.0f} days later)"
        assert row.Survival_days == expected
        assert row.Extent_of_Resection in ("GTR", "STR", "NA")
        assert rrow.true_log_hazard == pytest.approx(p.log_hazard, abs=1e-6)


def test_generated_folders_pass_validate_dataset_and_read_back(
    brain_dir: Path, petct_dir: Path
) -> None:
    assert validate_dataset([brain_dir]) == []
    assert validate_dataset([petct_dir]) == []
    index = discover([brain_dir, petct_dir])
    assert set(index.layouts) == {"brats", "kaggle", "hecktor"}
    assert index.problems == []
    assert len([c for c in index.cases if c.source == "brats"]) == 3
    assert len([c for c in index.cases if c.source == "hecktor"]) == 3
    assert sorted(i.tumour for i in index.images) == [0, 0, 0, 1, 1, 1]
    cohort = sample_cohort(profile="brain-mri", patients=3, difficulty="hard", seed=3)
    for p in cohort:
        assert index.true_risk[p.patient_id] == pytest.approx(p.log_hazard, abs=1e-6)
        assert index.observable_risk[p.patient_id] == pytest.approx(
            p.observable_log_hazard, abs=1e-6
        )
        assert index.outcomes[p.patient_id].event == p.event
        assert index.outcomes[p.patient_id].time == p.time
    case = next(c for c in index.cases if c.source == "brats")
    loaded = load_case(case, list(BRAIN_CHANNELS))
    ref = nib.as_closest_canonical(nib.load(case.channels["flair"]))
    np.testing.assert_array_equal(loaded.image[0], np.asarray(ref.dataobj, dtype=np.float32))
    assert loaded.mask is not None and set(np.unique(loaded.mask).tolist()) <= {0, 1, 2, 4}
    # The file stores LPS axes; read back in RAS it equals what the renderer made.
    vol = render_brain(cohort[0], SHAPE)
    np.testing.assert_array_equal(loaded.image[0], vol.images["flair"].astype(np.float32))
    np.testing.assert_array_equal(loaded.mask, vol.seg)
    pet_case = next(c for c in index.cases if c.source == "hecktor")
    pet = load_case(pet_case, ["ct", "pet"])
    assert pet.image.shape == (2, *PET_SHAPE)  # PET resampled from its half-resolution grid
    assert pet.image[1].max() > 1.0  # hot uptake (SUV) survives resampling


def test_kaggle_folder_is_balanced_varied_jpeg(brain_dir: Path) -> None:
    root = brain_dir / "kaggle"
    yes, no = sorted((root / "yes").iterdir()), sorted((root / "no").iterdir())
    assert len(yes) == len(no) == 3
    sizes, modes = set(), set()
    for path in (*yes, *no):
        assert path.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG magic
        with Image.open(path) as im:
            assert im.format == "JPEG"
            assert min(im.size) >= 200 and max(im.size) <= 512
            sizes.add(im.size)
            modes.add(im.mode)
            arr = np.asarray(im.convert("L"))
        assert arr.max() > 200 and arr[:3, :3].mean() < 40  # full 8-bit range, dark corners
    assert len(sizes) > 1 and modes <= {"L", "RGB"}


def test_kaggle_yes_planes_show_a_tumour_and_no_patients_have_none() -> None:
    items = sample_kaggle(count=4, difficulty="easy", seed=0)
    assert [k.tumour for k in items] == [True, True, False, False]
    assert all(k.patient.lesions == () for k in items if not k.tumour)
    yes = items[0]
    with_tumour = np.asarray(render_kaggle(yes).convert("L"), dtype=float)
    clean = dataclasses.replace(yes, patient=dataclasses.replace(yes.patient, lesions=()))
    without = np.asarray(render_kaggle(clean).convert("L"), dtype=float)
    changed = np.abs(with_tumour - without) > 40
    assert changed.sum() > 50  # the plane passes through the tumour


@pytest.mark.slow
def test_same_seed_same_bytes_whatever_the_worker_count(brain_dir: Path, tmp_path: Path) -> None:
    again = tmp_path / "two"
    synthesize(
        profile="brain-mri",
        patients=3,
        out=again,
        kaggle=6,
        difficulty="hard",
        seed=3,
        shape=SHAPE,
        workers=2,
    )
    a, b = _files(brain_dir), _files(again)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    other = tmp_path / "other"
    synthesize(profile="brain-mri", patients=1, out=other, difficulty="hard", seed=4, shape=SHAPE)
    first = "brats/BraTS20_Training_001/BraTS20_Training_001_flair.nii.gz"
    assert _files(other)[first] != a[first]


def test_hecktor_layout_and_csvs(petct_dir: Path) -> None:
    root = petct_dir / "hecktor"
    ct = nib.load(root / "imagesTr" / "SYN-001__CT.nii.gz")
    pt = nib.load(root / "imagesTr" / "SYN-001__PT.nii.gz")
    lab = nib.load(root / "labelsTr" / "SYN-001.nii.gz")
    ct_data = np.asarray(ct.dataobj)
    assert ct_data.dtype == np.int16 and ct_data.shape == PET_SHAPE
    assert ct_data[0, 0, 0] == -1000 and ct_data.max() > 300  # air outside, bone inside
    assert pt.shape == tuple(n // 2 for n in PET_SHAPE) and pt.get_data_dtype() == np.float32
    labels = np.asarray(lab.dataobj)
    assert 1 in labels and set(np.unique(labels).tolist()) <= {0, 1, 2}
    end = pd.read_csv(root / "hecktor2022_endpoint_training.csv")
    assert list(end.columns) == ["PatientID", "Relapse", "RFS"]
    assert set(end["Relapse"]) <= {0, 1}
    clin = pd.read_csv(root / "hecktor2022_clinical_info_training.csv")
    assert list(clin.columns) == [
        "PatientID",
        "Age",
        "Gender",
        "Tobacco",
        "Alcohol",
        "Performance status",
        "HPV status (0=-, 1=+)",
        "Surgery",
        "Chemotherapy",
    ]


@pytest.fixture(scope="module")
def patient():
    return sample_cohort(profile="brain-mri", patients=1, difficulty="standard", seed=11)[0]


def _one_lesion(patient, **changes):
    les = dataclasses.replace(patient.lesions[0], **changes)
    return dataclasses.replace(patient, lesions=(les,), mimics=())


def test_tumours_sit_in_white_matter(patient) -> None:
    atlas = load_atlas()
    for p in sample_cohort(profile="brain-mri", patients=20, difficulty="hard", seed=0):
        for les in (*p.lesions, *p.mimics):
            c = lesion_centre(atlas, les.site).astype(int)
            assert atlas.wm[tuple(c)] > 0.9


def test_contrasts_show_oedema_on_flair_and_an_enhancing_rim_on_t1ce(patient) -> None:
    p = _one_lesion(
        patient,
        radii_mm=(14.0, 12.0, 13.0),
        oedema=1.8,
        necrosis=0.5,
        enhancing=True,
        conspicuity=1.0,
    )
    vol = render_brain(p, (96, 96, 62))
    seg = vol.seg
    brain = vol.images["t1"] > 0
    normal = brain & (seg == 0)
    flair, t1ce = vol.images["flair"].astype(float), vol.images["t1ce"].astype(float)
    assert {1, 2, 4} <= set(np.unique(seg).tolist())
    assert flair[seg == 2].mean() > 1.4 * flair[normal].mean()  # oedema hyperintense on FLAIR
    assert t1ce[seg == 4].mean() > 1.5 * t1ce[normal].mean()  # enhancing rim bright on T1ce
    assert t1ce[seg == 1].mean() < t1ce[seg == 4].mean()  # necrotic core dark inside the rim
    non_enh = render_brain(_one_lesion(p, enhancing=False), (96, 96, 62))
    assert 4 not in non_enh.seg and 1 in non_enh.seg
    ratio = non_enh.images["t1ce"][non_enh.seg == 1].mean() / t1ce[normal].mean()
    assert ratio < 1.1


def test_mimics_change_the_image_but_not_the_labels(patient) -> None:
    hard = sample_cohort(profile="brain-mri", patients=1, difficulty="hard", seed=2)[0]
    assert len(hard.mimics) >= 3
    with_m = render_brain(hard, (80, 80, 52))
    without = render_brain(dataclasses.replace(hard, mimics=()), (80, 80, 52))
    np.testing.assert_array_equal(with_m.seg, without.seg)
    diff = with_m.images["flair"].astype(float) - without.images["flair"].astype(float)
    outside = with_m.seg == 0
    assert diff[outside].max() > 0.3 * without.images["flair"][outside].mean()


def test_small_lesion_is_under_1cm_and_at_least_01_ml(patient) -> None:
    p = _one_lesion(patient, radii_mm=(3.6, 3.6, 3.6), oedema=1.1, necrosis=0.0)
    assert p.lesions[0].diameter_mm < 10.0
    vol = render_brain(p)  # the default grid: 240×240×155 at 1 mm
    assert vol.seg.shape == (240, 240, 155) and vol.spacing == (1.0, 1.0, 1.0)
    idx = np.argwhere(vol.seg > 0)
    extent_mm = (idx.max(0) - idx.min(0) + 1) * np.array(vol.spacing)
    assert extent_mm.max() <= 11.0  # under 1 cm, plus one voxel of quantisation
    assert len(idx) * math.prod(vol.spacing) / 1000.0 >= 0.1
    tiny = render_brain(_one_lesion(patient, radii_mm=(2.0, 2.0, 2.0), oedema=1.0), SHAPE)
    assert np.count_nonzero(tiny.seg) * math.prod(tiny.spacing) / 1000.0 >= 0.1


def test_rendered_volume_tracks_the_nominal_volume(patient) -> None:
    p = _one_lesion(patient, radii_mm=(12.0, 10.0, 11.0), oedema=1.5)
    vol = render_brain(p, (120, 120, 78))
    wt = np.count_nonzero(vol.seg) * math.prod(vol.spacing) / 1000.0
    assert 0.4 * p.tumour_volume_ml < wt < 1.4 * p.tumour_volume_ml


def test_bad_requests_fail_clearly(brain_dir: Path) -> None:
    with pytest.raises(DataError, match="not empty"):
        synthesize(profile="brain-mri", patients=1, out=brain_dir, shape=SHAPE)
    with pytest.raises(ValueError, match="brain-mri profile only"):
        synthesize(profile="petct", patients=1, out=brain_dir / "x", kaggle=2)
    with pytest.raises(ValueError, match="shape"):
        synthesize(profile="brain-mri", patients=1, out=brain_dir / "x", shape=(4, 4, 4))
    with pytest.raises(ValueError, match="difficulty"):
        synthesize(profile="brain-mri", patients=1, out=brain_dir / "x", difficulty="extreme")


@pytest.mark.slow
def test_example_grid_writes_a_small_png(tmp_path: Path) -> None:
    out = example_grid(difficulty="hard", out_png=tmp_path / "g.png", patients=1, shape=SHAPE)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 300
    assert out.stat().st_size < 300_000
    pet = example_grid(
        difficulty="easy", out_png=tmp_path / "p.png", profile="petct", patients=1, shape=PET_SHAPE
    )
    assert pet.stat().st_size < 300_000
