"""MSD Task01_BrainTumour layout: 4-D NIfTI images, dataset.json, read back through the registry."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tumorscope.config import config_from_dict
from tumorscope.data import errors as E
from tumorscope.data.cache import prepare
from tumorscope.data.inspect import inspect_dataset, validate_dataset
from tumorscope.data.layout import discover, load_case, read_case, region_masks

Factory = Callable[..., Path]
W = Callable[..., Path]


def test_discover_cases_channels_and_ids(tmp_path: Path, make_msd: Factory) -> None:
    root = make_msd(tmp_path / "Task01_BrainTumour", n_patients=3, n_test=1)
    index = discover([tmp_path])
    assert index.layouts == {"msd": root} and index.problems == []
    assert [c.patient_id for c in index.cases] == [
        "BRATS_001",
        "BRATS_002",
        "BRATS_003",
        "BRATS_004",
    ]
    case = index.cases[0]
    image = root / "imagesTr" / "BRATS_001.nii.gz"
    assert case.source == "msd" and case.mask == root / "labelsTr" / "BRATS_001.nii.gz"
    assert case.channels == {"flair": image, "t1": image, "t1ce": image, "t2": image}
    assert case.channel_index == {"flair": 0, "t1": 1, "t1ce": 2, "t2": 3}
    assert case.label_map == {1: "ED", 2: "NET", 3: "ET"}
    assert index.cases[3].mask is None  # a "test" image has no label


def test_load_case_reads_each_channel_from_the_4d_file(tmp_path: Path, make_msd: Factory) -> None:
    root = make_msd(tmp_path / "msd", n_patients=2, shape=(11, 13, 9))
    case = next(c for c in discover([root]).cases if c.patient_id == "BRATS_002")
    loaded = load_case(case, ["t2", "flair", "t1ce"])
    stored = np.asanyarray(nib.load(case.channels["t2"]).dataobj)
    assert loaded.image.shape == (3, 11, 13, 9) and loaded.image.dtype == np.float32
    np.testing.assert_array_equal(loaded.image[0], stored[..., 3])
    np.testing.assert_array_equal(loaded.image[1], stored[..., 0])
    # channel k (file order) of patient i has mean 100 (k + 1) + i (see conftest).
    means = loaded.image.reshape(3, -1).mean(axis=1)
    np.testing.assert_allclose(means, [402.0, 102.0, 302.0], atol=0.3)
    assert loaded.mask is not None and set(np.unique(loaded.mask)) == {0, 1, 2, 3}


def test_modality_names_map_onto_model_channels_in_any_order(
    tmp_path: Path, make_msd: Factory
) -> None:
    modality = {"0": "T2w", "1": "flair", "2": "T1Gd", "3": "t1"}
    root = make_msd(tmp_path / "msd", n_patients=1, modality=modality)
    case = discover([root]).cases[0]
    assert case.channel_index == {"t2": 0, "flair": 1, "t1ce": 2, "t1": 3}
    loaded = load_case(case, ["flair", "t1", "t1ce", "t2"])
    np.testing.assert_allclose(
        loaded.image.reshape(4, -1).mean(axis=1), [201.0, 401.0, 301.0, 101.0], atol=0.3
    )


def test_region_masks_of_msd_labels(tmp_path: Path, make_msd: Factory) -> None:
    root = make_msd(tmp_path / "msd", n_patients=1, shape=(12, 12, 10))
    loaded = load_case(discover([root]).cases[0], ["flair"])
    assert loaded.mask is not None and loaded.labels is not None
    regions = region_masks(loaded.mask, loaded.labels, ["WT", "TC", "ET"])
    np.testing.assert_array_equal(regions[0], np.isin(loaded.mask, (1, 2, 3)))
    np.testing.assert_array_equal(regions[1], np.isin(loaded.mask, (2, 3)))
    np.testing.assert_array_equal(regions[2], loaded.mask == 3)
    assert [int(r.sum()) for r in regions] == [8 * 8 * 6, 4 * 4 * 4, 2 * 2 * 2]
    by_name = region_masks(loaded.mask, "msd", ["TC"])  # the layout's own convention
    np.testing.assert_array_equal(by_name[0], regions[1])


def test_inspect_and_validate_clean_task(tmp_path: Path, make_msd: Factory) -> None:
    root = make_msd(tmp_path / "Task01_BrainTumour", n_patients=2, shape=(8, 9, 10))
    report = inspect_dataset(tmp_path)
    (summary,) = report.layouts
    assert (summary.name, summary.root, summary.patients, summary.slices) == ("msd", root, 2, 20)
    assert summary.spacings == {(1.0, 1.0, 1.0): 2}  # one 4-D file per case
    assert summary.label_balance["3 (ET)"] == 2 * 2 * 2 * 2
    assert summary.intensity["t1ce"][0] > 250  # file channel 2: values near 300
    assert f"layout msd at {root}" in report.render()
    assert validate_dataset([root]) == []


def test_bad_dataset_json_is_named(tmp_path: Path, make_msd: Factory) -> None:
    root = make_msd(tmp_path / "msd", n_patients=1)
    (root / "dataset.json").write_text("{not json")
    (problem,) = validate_dataset([root])
    assert isinstance(problem, E.DatasetJsonError) and problem.path == root / "dataset.json"
    assert "not valid JSON" in str(problem)


def test_unknown_modality_and_label_names_are_named(tmp_path: Path, make_msd: Factory) -> None:
    root = make_msd(tmp_path / "a", n_patients=1, modality={"0": "FLAIR", "1": "DWI"})
    (problem,) = discover([root]).problems
    assert isinstance(problem, E.DatasetJsonError) and problem.path == root / "dataset.json"
    assert "modality 1 'DWI'" in problem.fault
    labels = {"0": "background", "1": "liver"}
    other = make_msd(tmp_path / "b", n_patients=1, labels=labels)
    (problem,) = discover([other]).problems
    assert isinstance(problem, E.DatasetJsonError) and "label 1 'liver'" in problem.fault


def test_validate_names_files_with_faults(
    tmp_path: Path, make_msd: Factory, write_nifti: W
) -> None:
    root = make_msd(tmp_path / "msd", n_patients=3, shape=(6, 7, 8))
    three = root / "imagesTr" / "BRATS_001.nii.gz"
    write_nifti(three, np.zeros((6, 7, 8, 3), np.float32))  # one channel short of "modality"
    label = root / "labelsTr" / "BRATS_002.nii.gz"
    bad = np.zeros((6, 7, 8), np.uint8)
    bad[1, 1, 1] = 4  # BraTS's ET value is not an MSD label
    write_nifti(label, bad)
    (root / "imagesTr" / "BRATS_003.nii.gz").unlink()
    problems = validate_dataset([root])
    kinds = {(type(p), p.path) for p in problems}
    assert kinds == {
        (E.DimensionError, three),
        (E.LabelValueError, label),
        (E.MissingFileError, root / "imagesTr" / "BRATS_003.nii.gz"),
    }, [str(p) for p in problems]
    assert inspect_dataset(root).layouts[0].left_out == 1


def test_read_case_of_one_image_file(tmp_path: Path, make_msd: Factory) -> None:
    root = make_msd(tmp_path / "msd", n_patients=2)
    image = root / "imagesTr" / "BRATS_002.nii.gz"
    case, problems = read_case(image)
    assert problems == [] and case is not None
    assert (case.source, case.patient_id, case.mask) == (
        "msd",
        "BRATS_002",
        root / "labelsTr" / "BRATS_002.nii.gz",
    )
    loose = tmp_path / "elsewhere" / "BRATS_002.nii.gz"
    loose.parent.mkdir()
    loose.write_bytes(image.read_bytes())
    assert read_case(loose) == (None, [])  # no dataset.json: not an MSD case


def test_prepare_caches_an_msd_task(tmp_path: Path, make_msd: Factory) -> None:
    root = make_msd(tmp_path / "msd", n_patients=4, shape=(20, 22, 12))
    cfg = config_from_dict(
        {
            "data": {"image_size": 16, "slices_per_patient": 4, "n_folds": 2},
            "model": {"in_channels": 1, "regions": ["WT", "TC", "ET"]},
        }
    )
    p = prepare([root], cfg, tmp_path / "out")
    assert set(p.slices["source"]) == {"msd"} and len(p.slices) == 4 * 4
    assert p.spec.tumour_region == "WT"
    masks = np.load(p.cache_dir(0) / "masks.npy")
    assert masks.shape[1:] == (3, 16, 16)
    # WT ⊇ TC ⊇ ET on every slice, and tumour slices are those where WT is present.
    assert np.all(masks[:, 0] >= masks[:, 1]) and np.all(masks[:, 1] >= masks[:, 2])
    np.testing.assert_array_equal(masks[:, 0].any(axis=(1, 2)), p.slices["tumour"].to_numpy() == 1)
    assert json.loads((tmp_path / "out" / "prepared.json").read_text())["problems"] == []


@pytest.mark.parametrize("key", ["training", "modality"])
def test_malformed_entries(tmp_path: Path, make_msd: Factory, key: str) -> None:
    root = make_msd(tmp_path / "msd", n_patients=1)
    meta = json.loads((root / "dataset.json").read_text())
    meta[key] = "oops"
    (root / "dataset.json").write_text(json.dumps(meta))
    (problem,) = discover([root]).problems
    assert isinstance(problem, E.DatasetJsonError) and key in problem.fault
