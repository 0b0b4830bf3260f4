"""nnU-Net v2 raw layout: one file per channel, dataset.json names channels and labels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tumorscope.config import config_from_dict
from tumorscope.data import errors as E
from tumorscope.data.cache import prepare
from tumorscope.data.inspect import inspect_dataset, validate_dataset
from tumorscope.data.layout import discover, load_case, read_case, region_masks

Factory = Callable[..., Path]
W = Callable[..., Path]


def test_discover_cases_channels_and_ids(tmp_path: Path, make_nnunet: Factory) -> None:
    root = make_nnunet(tmp_path / "Dataset001_BrainTumour", n_patients=3)
    index = discover([tmp_path])
    assert index.layouts == {"nnunet": root} and index.problems == []
    assert [c.patient_id for c in index.cases] == ["BraTS_001", "BraTS_002", "BraTS_003"]
    case = index.cases[1]
    images = root / "imagesTr"
    assert case.source == "nnunet" and case.mask == root / "labelsTr" / "BraTS_002.nii.gz"
    assert case.channels == {
        "flair": images / "BraTS_002_0000.nii.gz",
        "t1": images / "BraTS_002_0001.nii.gz",
        "t1ce": images / "BraTS_002_0002.nii.gz",
        "t2": images / "BraTS_002_0003.nii.gz",
    }
    assert case.label_map == {1: "ED", 2: "NET", 3: "ET"}


def test_channel_names_map_case_insensitively_in_file_order(
    tmp_path: Path, make_nnunet: Factory
) -> None:
    names = {"0": "t2", "1": "T1-Gd", "2": "Flair"}
    root = make_nnunet(tmp_path / "Dataset002_X", n_patients=2, channel_names=names)
    case = next(c for c in discover([root]).cases if c.patient_id == "BraTS_002")
    assert sorted(case.channels) == ["flair", "t1ce", "t2"]
    loaded = load_case(case, ["flair", "t1ce", "t2"])
    # file channel k of patient i has mean 100 (k + 1) + i (see conftest).
    np.testing.assert_allclose(
        loaded.image.reshape(3, -1).mean(axis=1), [302.0, 202.0, 102.0], atol=0.3
    )
    with pytest.raises(E.MissingChannelError, match="no t1 channel"):
        load_case(case, ["t1"])


def test_region_masks_by_label_names(tmp_path: Path, make_nnunet: Factory) -> None:
    root = make_nnunet(tmp_path / "Dataset001_B", n_patients=1, shape=(12, 12, 10))
    loaded = load_case(discover([root]).cases[0], ["flair"])
    assert loaded.mask is not None and loaded.labels is not None
    regions = region_masks(loaded.mask, loaded.labels, ["ET", "WT", "TC"])
    np.testing.assert_array_equal(regions[0], loaded.mask == 3)
    np.testing.assert_array_equal(regions[1], loaded.mask > 0)
    np.testing.assert_array_equal(regions[2], np.isin(loaded.mask, (2, 3)))
    assert loaded.labels.tumour_region == "WT"


def test_region_based_labels(tmp_path: Path, make_nnunet: Factory) -> None:
    labels = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3}
    root = make_nnunet(tmp_path / "Dataset137_BraTS", n_patients=1, labels=labels)
    case = discover([root]).cases[0]
    assert case.labels is not None
    assert dict(case.labels.regions) == {
        "WT": frozenset({1, 2, 3}),
        "TC": frozenset({2, 3}),
        "ET": frozenset({3}),
    }
    assert case.label_map == {1: "WT", 2: "TC", 3: "ET"}  # innermost region of each value
    assert validate_dataset([root]) == []


def test_hecktor_style_labels(tmp_path: Path, make_nnunet: Factory) -> None:
    root = make_nnunet(
        tmp_path / "Dataset500_HNC",
        n_patients=1,
        channel_names={"0": "CT", "1": "PET"},
        labels={"background": 0, "GTVp": 1, "GTVn": 2},
    )
    case = discover([root]).cases[0]
    assert sorted(case.channels) == ["ct", "pet"] and case.labels is not None
    assert dict(case.labels.regions) == {"GTVp": frozenset({1}), "GTVn": frozenset({2})}
    assert case.labels.tumour_region == "GTVp"


def test_inspect_and_validate_clean_dataset(tmp_path: Path, make_nnunet: Factory) -> None:
    root = make_nnunet(tmp_path / "Dataset001_B", n_patients=2, shape=(8, 9, 10))
    (summary,) = inspect_dataset(tmp_path).layouts
    assert (summary.name, summary.patients, summary.slices) == ("nnunet", 2, 20)
    assert summary.spacings == {(1.0, 1.0, 1.0): 8}
    assert summary.label_balance["1 (ED)"] == 2 * (8 * 8 * 6 - 4 * 4 * 4)
    assert validate_dataset([root]) == []


def test_unmappable_channel_or_label_names_dataset_json(
    tmp_path: Path, make_nnunet: Factory
) -> None:
    a = make_nnunet(tmp_path / "a", n_patients=1, channel_names={"0": "FLAIR", "1": "ADC"})
    (problem,) = validate_dataset([a])
    assert isinstance(problem, E.DatasetJsonError) and problem.path == a / "dataset.json"
    assert "channel_names 1 'ADC' is not a channel the model takes" in problem.fault
    b = make_nnunet(tmp_path / "b", n_patients=1, labels={"background": 0, "liver": 1})
    (problem,) = validate_dataset([b])
    assert isinstance(problem, E.DatasetJsonError) and problem.path == b / "dataset.json"
    assert "label 1 'liver' cannot be mapped onto a region" in problem.fault
    c = make_nnunet(tmp_path / "c", n_patients=1, channel_names={"0": "FLAIR", "1": "flair"})
    (problem,) = validate_dataset([c])
    assert "both name the flair channel" in problem.fault


def test_missing_channel_file_names_dataset_json(tmp_path: Path, make_nnunet: Factory) -> None:
    root = make_nnunet(tmp_path / "Dataset001_B", n_patients=2)
    (root / "imagesTr" / "BraTS_002_0002.nii.gz").unlink()
    index = discover([root])
    (problem,) = index.problems
    assert isinstance(problem, E.MissingChannelError) and problem.path == root / "dataset.json"
    assert "case BraTS_002: channel 2 (t1ce) has no file imagesTr/BraTS_002_0002.nii.gz" in str(
        problem
    )
    case = next(c for c in index.cases if c.patient_id == "BraTS_002")
    assert "t1ce" not in case.channels and load_case(case, ["flair"]).image.shape[0] == 1


def test_stray_label_and_channel_files(
    tmp_path: Path, make_nnunet: Factory, write_nifti: W
) -> None:
    root = make_nnunet(tmp_path / "Dataset001_B", n_patients=1, shape=(4, 5, 6))
    stray = write_nifti(root / "labelsTr" / "ghost.nii.gz", np.zeros((4, 5, 6), np.uint8))
    extra = write_nifti(
        root / "imagesTr" / "BraTS_001_0007.nii.gz", np.zeros((4, 5, 6), np.float32)
    )
    kinds = {(type(p), p.path) for p in discover([root]).problems}
    assert kinds == {(E.MissingFileError, stray), (E.CaseLayoutError, extra)}


def test_read_case_from_one_channel_file(tmp_path: Path, make_nnunet: Factory) -> None:
    root = make_nnunet(tmp_path / "Dataset001_B", n_patients=2)
    case, problems = read_case(root / "imagesTr" / "BraTS_001_0003.nii.gz")
    assert problems == [] and case is not None
    assert case.patient_id == "BraTS_001" and len(case.channels) == 4


def test_prepare_caches_an_nnunet_dataset(tmp_path: Path, make_nnunet: Factory) -> None:
    root = make_nnunet(tmp_path / "Dataset001_B", n_patients=4, shape=(20, 22, 12))
    cfg = config_from_dict(
        {
            "data": {
                "channels": ["flair", "t2"],
                "image_size": 16,
                "slices_per_patient": 4,
                "n_folds": 2,
            },
            "model": {"in_channels": 2, "regions": ["WT", "ET"]},
        }
    )
    p = prepare([root], cfg, tmp_path / "out")
    assert set(p.slices["source"]) == {"nnunet"} and len(p.slices) == 4 * 4
    images = np.load(p.cache_dir(0) / "images.npy")
    masks = np.load(p.cache_dir(0) / "masks.npy")
    assert images.shape[1:] == (2, 16, 16) and masks.shape[1:] == (2, 16, 16)
    assert np.all(masks[:, 0] >= masks[:, 1])
    np.testing.assert_array_equal(masks[:, 0].any(axis=(1, 2)), p.slices["tumour"].to_numpy() == 1)
