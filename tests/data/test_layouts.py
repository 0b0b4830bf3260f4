"""The layout registry: one getter, one entry per layout, labels owned by the layouts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tumorscope.config import config_from_dict
from tumorscope.data.cache import prepare
from tumorscope.data.layout import discover
from tumorscope.data.layouts import (
    LAYOUTS,
    NO_LABELS,
    Layout,
    default_tumour_region,
    get_layout,
    layout_labels,
    region_labels,
)
from tumorscope.data.layouts.dataset_json import label_name, model_channel
from tumorscope.data.spec import PreprocessSpec

Factory = Callable[..., Path]


def test_registry_names_and_getter() -> None:
    assert list(LAYOUTS) == ["brats", "kaggle", "kaggle4", "hecktor", "dicom", "msd", "nnunet"]
    assert all(isinstance(v, Layout) and v.name == k for k, v in LAYOUTS.items())
    assert get_layout("msd") is LAYOUTS["msd"]
    with pytest.raises(KeyError) as err:
        get_layout("brats2023")
    message = str(err.value)
    assert "unknown layout 'brats2023'" in message
    assert all(name in message for name in LAYOUTS)


def test_layout_label_conventions() -> None:
    brats = get_layout("brats").labels
    assert dict(brats.regions) == {
        "WT": frozenset({1, 2, 3, 4}),
        "TC": frozenset({1, 3, 4}),
        "ET": frozenset({3, 4}),
    }
    hecktor = get_layout("hecktor").labels
    assert dict(hecktor.regions) == {"GTVp": frozenset({1}), "GTVn": frozenset({2})}
    msd = get_layout("msd").labels
    assert dict(msd.regions) == {
        "WT": frozenset({1, 2, 3}),
        "TC": frozenset({2, 3}),
        "ET": frozenset({3}),
    }
    assert (brats.tumour_region, hecktor.tumour_region, msd.tumour_region) == ("WT", "GTVp", "WT")
    assert get_layout("kaggle").labels is NO_LABELS and layout_labels("volume") is NO_LABELS


def test_region_labels_from_label_names() -> None:
    legacy = region_labels("BraTS 2018-2021", {1: "NCR", 2: "ED", 4: "ET"})
    assert legacy.allowed == {0, 1, 2, 4}
    mask = np.array([[0, 1, 2], [4, 4, 2]])
    np.testing.assert_array_equal(legacy.masks(mask, ["TC"])[0], np.isin(mask, (1, 4)))
    with pytest.raises(ValueError, match=r"regions \['GTVp'\] unknown for BraTS 2018-2021"):
        legacy.masks(mask, ["GTVp"])
    with pytest.raises(ValueError, match="liver"):
        region_labels("x", {1: "liver"})


def test_tumour_region_comes_from_the_layouts_labels() -> None:
    assert default_tumour_region(["TC", "ET"]) == "WT"
    assert default_tumour_region(["GTVn", "GTVp"]) == "GTVp"
    assert default_tumour_region(["liver"]) == "liver"
    petct = config_from_dict(
        {
            "profile": "petct",
            "data": {"channels": ["ct", "pet"]},
            "model": {"in_channels": 2, "regions": ["GTVp", "GTVn"]},
        }
    )
    assert PreprocessSpec.from_config(petct).tumour_region == "GTVp"
    assert PreprocessSpec.from_config(config_from_dict({})).tumour_region == "WT"


@pytest.mark.parametrize(
    ("name", "channel"),
    [("FLAIR", "flair"), ("T2-FLAIR", "flair"), ("T1w", "t1"), ("t1gd", "t1ce"),
     ("T1ce", "t1ce"), ("T2w", "t2"), ("CT", "ct"), ("PT", "pet"), ("ADC", None)],
)  # fmt: skip
def test_channel_names(name: str, channel: str | None) -> None:
    assert model_channel(name) == channel


@pytest.mark.parametrize(
    ("name", "label"),
    [("edema", "ED"), ("Peritumoural Oedema", "ED"), ("non-enhancing tumor", "NET"),
     ("enhancing tumour", "ET"), ("NCR/NET", "NCR"), ("necrosis", "NCR"), ("GTVp", "GTVp"),
     ("liver", None)],
)  # fmt: skip
def test_label_names(name: str, label: str | None) -> None:
    assert label_name(name) == label


def test_new_layouts_side_by_side_with_the_others(
    tmp_path: Path,
    make_brats: Factory,
    make_hecktor: Factory,
    make_msd: Factory,
    make_nnunet: Factory,
) -> None:
    d = tmp_path / "d"
    make_brats(d / "brats", n_patients=1, shape=(4, 5, 6), survival=False)
    make_hecktor(d / "hecktor", n_patients=1, ct_shape=(6, 6, 6), endpoint=False, clinical=False)
    make_msd(d / "Task01_BrainTumour", n_patients=2, shape=(4, 5, 6))
    make_nnunet(d / "Dataset001_BrainTumour", n_patients=2, shape=(4, 5, 6))
    index = discover([tmp_path])
    assert index.problems == []
    assert index.layouts == {
        "brats": d / "brats",
        "hecktor": d / "hecktor",
        "msd": d / "Task01_BrainTumour",
        "nnunet": d / "Dataset001_BrainTumour",
    }
    by_source: dict[str, list[str]] = {}
    for c in index.cases:
        by_source.setdefault(c.source, []).append(c.patient_id)
    assert by_source == {
        "brats": ["BraTS20_Training_001"],
        "hecktor": ["CHUM-001"],
        "msd": ["BRATS_001", "BRATS_002"],
        "nnunet": ["BraTS_001", "BraTS_002"],
    }


def test_kaggle_in_data_sources_selects_the_four_class_set(
    tmp_path: Path, make_kaggle4: Factory
) -> None:
    root = make_kaggle4(tmp_path / "k4", n_per_class=2, splits=("Training",))
    cfg = config_from_dict(
        {"data": {"sources": ["kaggle"], "image_size": 16, "n_folds": 2, "test_fraction": 0.25}}
    )
    p = prepare([root], cfg, tmp_path / "out")
    assert set(p.slices["source"]) == {"kaggle4"} and len(p.slices) == 8


def test_brats_and_hecktor_regions() -> None:
    """Moved from tests/metrics: the region masks now come from the layouts alone."""
    from tumorscope.data.layout import region_masks
    from tumorscope.data.layouts.brats import LABELS_2023, LABELS_LEGACY

    lab = np.array([[0, 1, 2], [4, 4, 2]])
    wt, tc, et = region_masks(lab, "brats", ["WT", "TC", "ET"]).astype(bool)
    np.testing.assert_array_equal(wt, lab > 0)
    np.testing.assert_array_equal(tc, np.isin(lab, (1, 4)))
    np.testing.assert_array_equal(et, lab == 4)
    assert int(region_masks(np.array([[3, 1], [0, 2]]), LABELS_2023, ["ET"]).sum()) == 1
    assert 3 not in LABELS_LEGACY.allowed and 3 in LABELS_2023.allowed
    gtvp, gtvn = region_masks(np.array([[0, 1], [2, 2]]), "hecktor", ["GTVp", "GTVn"])
    assert int(gtvp.sum()) == 1 and int(gtvn.sum()) == 2
