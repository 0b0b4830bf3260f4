"""Kaggle yes/no and 4-class folders written with Pillow and read back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from tumorscope.data.imagefolder import discover_kaggle, discover_kaggle4, load_image
from tumorscope.data.layout import discover
from tumorscope.data.types import TUMOUR_TYPES

Factory = Callable[..., Path]


def test_kaggle_yes_no_items_and_labels(tmp_path: Path, make_kaggle: Factory) -> None:
    root = make_kaggle(tmp_path / "brain_tumor_dataset", n_yes=3, n_no=2)
    items, problems = discover_kaggle(root)
    assert problems == []
    by_id = {it.patient_id: it for it in items}
    assert set(by_id) == {"yes/Y0", "yes/Y1", "yes/Y2", "no/0 no", "no/N1"}  # Thumbs.db ignored
    assert all(by_id[f"yes/Y{i}"].tumour == 1 for i in range(3))
    assert by_id["no/N1"].tumour == 0 and by_id["no/0 no"].tumour == 0
    assert all(it.source == "kaggle" and it.tumour_type is None for it in items)


def test_kaggle_images_decode_rgb_and_grey_mixed_sizes(
    tmp_path: Path, make_kaggle: Factory
) -> None:
    root = make_kaggle(tmp_path / "k", n_yes=2, n_no=2, sizes=((40, 36), (52, 48)))
    items = {it.patient_id: it for it in discover_kaggle(root)[0]}
    png, meta = load_image(items["no/N1"])
    expected = np.asarray(Image.open(root / "no" / "N1.png"), dtype=np.float32)
    np.testing.assert_array_equal(png, expected)  # lossless
    assert meta.shape == (40, 36) and meta.path == root / "no" / "N1.png"
    jpg, meta = load_image(items["yes/Y1"])
    assert jpg.shape == (52, 48) and jpg.dtype == np.float32
    rgb = np.asarray(Image.open(root / "yes" / "Y1.jpg").convert("RGB"), dtype=np.float64)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(jpg, luma, atol=1.0)


def test_kaggle4_types_tumour_flags_and_splits(tmp_path: Path, make_kaggle4: Factory) -> None:
    root = make_kaggle4(tmp_path / "k4", n_per_class=2, splits=("Training", "Testing"))
    items, problems = discover_kaggle4(root)
    assert problems == [] and len(items) == 16
    for it in items:
        cls = it.path.parent.name
        assert it.tumour_type == TUMOUR_TYPES.index(cls)
        assert it.tumour == int(cls != "notumor")
        assert it.split_hint == it.path.parent.parent.name
        assert it.source == "kaggle4"
    assert len({it.patient_id for it in items}) == 16


def test_kaggle_and_brats_side_by_side_two_levels_up(
    tmp_path: Path, make_kaggle: Factory, make_brats: Factory, make_kaggle4: Factory
) -> None:
    make_kaggle(tmp_path / "data" / "kaggle")
    make_brats(tmp_path / "data" / "BraTS2020" / "train", n_patients=2, shape=(6, 7, 8))
    make_kaggle4(tmp_path / "data" / "four", n_per_class=1, splits=("Testing",))
    index = discover([tmp_path / "data"])
    assert index.layouts == {
        "brats": tmp_path / "data" / "BraTS2020" / "train",
        "kaggle4": tmp_path / "data" / "four",
        "kaggle": tmp_path / "data" / "kaggle",
    }
    assert len(index.cases) == 2 and len(index.images) == 5 + 4
    assert index.problems == []
