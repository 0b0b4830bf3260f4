"""prepare(): cache layout and content, reuse, atomic rebuilds, splits, duplicates, tiny cohorts."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tumorscope.config import Config, config_from_dict
from tumorscope.data.cache import load_prepared, prepare
from tumorscope.data.imagefolder import load_image
from tumorscope.data.layout import discover, load_case
from tumorscope.data.spec import PreprocessSpec
from tumorscope.data.splits import load_splits
from tumorscope.data.transforms import preprocess_image, preprocess_volume
from tumorscope.data.types import DataError

Factory = Callable[..., Path]

torch.set_num_threads(1)


def small_cfg(**data: Any) -> Config:
    d = {
        "image_size": 16,
        "slices_per_patient": 4,
        "n_folds": 2,
        "test_fraction": 0.25,
        "bag_patients": 2,
        "bag_slices": 2,
    }
    d.update(data)
    channels = d.get("channels", ["flair"])
    return config_from_dict(
        {"data": d, "model": {"in_channels": len(channels), "clinical_features": 2}}
    )


@pytest.fixture
def roots(tmp_path: Path, make_brats: Factory, make_kaggle: Factory) -> Path:
    base = tmp_path / "data"
    make_brats(base / "brats", n_patients=6, shape=(20, 22, 12))
    make_kaggle(base / "kaggle", n_yes=3, n_no=3)
    return base


def test_prepare_builds_caches_and_splits(roots: Path, tmp_path: Path) -> None:
    cfg = small_cfg()
    calls: list[tuple[int, int, str]] = []
    p = prepare([roots], cfg, tmp_path / "out", progress=lambda d, t, m: calls.append((d, t, m)))
    assert len(p.caches) == 2 and sorted(p.built or []) == sorted(p.caches) and p.reused == []
    assert calls and calls[-1][0] == calls[-1][1]
    by_source = p.slices.groupby("source").size().to_dict()
    assert by_source == {"brats": 6 * 4, "kaggle": 6}
    for i, name in enumerate(p.caches):
        folder = p.cache_dir(i)
        images = np.load(folder / "images.npy", mmap_mode="r")
        assert images.dtype == np.float16 and images.shape[1:] == (1, 16, 16)
        assert images.shape[0] == (p.slices["cache"] == i).sum()
        assert PreprocessSpec.from_dict(json.loads((folder / "spec.json").read_text())) == p.spec
        assert (folder / "masks.npy").is_file() == name.startswith("brats")
    splits = load_splits(tmp_path / "out" / "splits.json")
    assert splits == p.splits
    assert sorted(splits.patients("all")) == sorted(p.slices["patient_id"].unique())
    assert set(p.slice_table("train")["patient_id"]) == set(splits.train)
    assert len(p.outcomes) == 6 and p.clinical_columns == ("Age", "Extent_of_Resection")
    assert "train:" in str(p)


def test_cached_slices_equal_direct_preprocessing(roots: Path, tmp_path: Path) -> None:
    cfg = small_cfg()
    p = prepare([roots], cfg, tmp_path / "out")
    index = discover([roots])
    case = next(c for c in index.cases if c.patient_id == "BraTS20_Training_002")
    vs = preprocess_volume(load_case(case, ["flair"]), p.spec, source="brats")
    rows = p.slices[p.slices["patient_id"] == case.patient_id]
    images = np.load(p.cache_dir(int(rows["cache"].iloc[0])) / "images.npy")
    masks = np.load(p.cache_dir(int(rows["cache"].iloc[0])) / "masks.npy")
    np.testing.assert_allclose(
        images[rows["row"]].astype(np.float32), vs.images, atol=2e-2, rtol=1e-2
    )
    assert vs.masks is not None and vs.tumour is not None
    np.testing.assert_array_equal(masks[rows["row"]], vs.masks)
    np.testing.assert_array_equal(rows["slice_index"], vs.slice_index)
    np.testing.assert_array_equal(rows["tumour"], vs.tumour.astype(int))
    item = next(i for i in index.images if i.patient_id == "yes/Y1")
    row = p.slices[p.slices["patient_id"] == "yes/Y1"].iloc[0]
    kimg = np.load(p.cache_dir(int(row["cache"])) / "images.npy")[int(row["row"])]
    np.testing.assert_allclose(
        kimg.astype(np.float32), preprocess_image(load_image(item)[0], p.spec), atol=2e-2, rtol=1e-2
    )
    assert row["tumour"] == 1 and bool(row["has_tumour"]) and not bool(row["has_mask"])


def test_rerun_reuses_and_spec_change_rebuilds(roots: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = prepare([roots], small_cfg(), out)
    stamps = {n: (out / "cache" / n / "images.npy").stat().st_mtime_ns for n in first.caches}
    again = prepare([roots], small_cfg(), out)
    assert again.built == [] and sorted(again.reused or []) == sorted(first.caches)
    assert {
        n: (out / "cache" / n / "images.npy").stat().st_mtime_ns for n in again.caches
    } == stamps
    assert again.splits == first.splits
    other = prepare([roots], small_cfg(image_size=20), out)
    assert set(other.caches).isdisjoint(first.caches) and len(other.built or []) == 2
    loaded = load_prepared(out, small_cfg(image_size=20))
    assert loaded.splits == other.splits and loaded.slices.equals(other.slices)
    with pytest.raises(DataError, match="different preprocessing spec"):
        load_prepared(out, small_cfg(image_size=24))


def test_incomplete_cache_is_rebuilt(roots: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = prepare([roots], small_cfg(), out)
    name = first.caches[0]
    (out / "cache" / name / "meta.json").unlink()  # as if killed before the last write
    (out / "cache" / f".tmp-{name}-999").mkdir()  # a stale temp folder is ignored
    again = prepare([roots], small_cfg(), out)
    assert again.built == [name]
    assert (out / "cache" / name / "meta.json").is_file()


def test_four_channels_skip_kaggle_unless_zero_fill(
    roots: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    four = ["flair", "t1", "t1ce", "t2"]
    with caplog.at_level(logging.WARNING):
        p = prepare([roots], small_cfg(channels=four), tmp_path / "a")
    assert set(p.slices["source"]) == {"brats"} and "kaggle skipped" in caplog.text
    z = prepare([roots], small_cfg(channels=four, missing_channels="zero_fill"), tmp_path / "b")
    row = z.slices[z.slices["source"] == "kaggle"].iloc[0]
    img = np.load(z.cache_dir(int(row["cache"])) / "images.npy")[int(row["row"])]
    assert np.any(img[0] != 0) and np.all(img[1:] == 0)


def test_exact_duplicate_images_are_reported(tmp_path: Path, make_kaggle: Factory) -> None:
    root = make_kaggle(tmp_path / "kaggle", n_yes=4, n_no=4)
    for k in range(6):
        shutil.copy(root / "yes" / "Y0.jpg", root / "yes" / f"copy{k}.jpg")
    p = prepare([root], small_cfg(), tmp_path / "out")
    split_of = dict(zip(p.slices["patient_id"], p.slices["split"], strict=True))
    groups: dict[str, list[str]] = {}
    for f in sorted(root.rglob("*")):
        if f.suffix.lower() in (".jpg", ".png"):
            digest = hashlib.sha1(f.read_bytes()).hexdigest()
            groups.setdefault(digest, []).append(f.relative_to(root).with_suffix("").as_posix())
    expected = [
        {"sha1": h, "patients": sorted(ps), "splits": sorted({split_of[x] for x in ps})}
        for h, ps in sorted(groups.items())
        if len({split_of[x] for x in ps}) > 1
    ]
    assert len(groups[hashlib.sha1((root / "yes" / "Y0.jpg").read_bytes()).hexdigest()]) >= 7
    assert expected and p.duplicates == expected


def test_tiny_cohort_and_bad_roots(
    tmp_path: Path, make_brats: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_brats(tmp_path / "brats", n_patients=4, shape=(16, 16, 8))
    with caplog.at_level(logging.WARNING):
        p = prepare([root], small_cfg(n_folds=5, fold=4, test_fraction=0.25), tmp_path / "out")
    assert len(p.patients("test")) == 1 and len(p.splits.folds) == 3
    assert "clamped" in caplog.text
    assert sorted(p.patients("all")) == sorted(p.slices["patient_id"].unique())
    with pytest.raises(DataError, match="does not exist"):
        prepare([tmp_path / "nothing"], small_cfg(), tmp_path / "out2")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no usable data"):
        prepare([tmp_path / "empty"], small_cfg(), tmp_path / "out3")


def test_petct_hecktor_two_channels_and_clinical(tmp_path: Path, make_hecktor: Factory) -> None:
    root = make_hecktor(tmp_path / "hecktor", n_patients=4, ct_shape=(20, 22, 16))
    cfg = config_from_dict(
        {
            "profile": "petct",
            "data": {
                "channels": ["ct", "pet"],
                "image_size": 16,
                "slices_per_patient": 6,
                "n_folds": 2,
                "test_fraction": 0.25,
            },
            "model": {"in_channels": 2, "regions": ["GTVp", "GTVn"], "clinical_features": 8},
        }
    )
    p = prepare([root], cfg, tmp_path / "out")
    assert p.spec.tumour_region == "GTVp" and set(p.slices["source"]) == {"hecktor"}
    images = np.load(p.cache_dir(0) / "images.npy")
    masks = np.load(p.cache_dir(0) / "masks.npy")
    assert images.shape[1:] == (2, 16, 16) and masks.shape[1:] == (2, 16, 16)
    assert np.all(images[:, 1].std(axis=(1, 2)) > 0)  # PET resampled onto the CT grid, not zero
    gtvp_z = set(range(5, 8))  # the fixture's GTVp cube spans z 5..7
    for _, r in p.slices.iterrows():
        assert r["tumour"] == int(r["slice_index"] in gtvp_z)
        assert (masks[r["row"], 0].sum() > 0) == bool(r["tumour"])
    assert (
        len(p.outcomes) == 4
        and "Age" in p.clinical_columns
        and "HPV status (0=-, 1=+)" in p.clinical_columns
    )
    again = p.with_fold(1)
    assert again.splits.val == p.splits.folds[1] and set(
        again.slice_table("val")["patient_id"]
    ) == set(p.splits.folds[1])


@pytest.mark.slow  # spawns two worker processes that import torch
def test_worker_processes_build_the_same_cache(tmp_path: Path, make_brats: Factory) -> None:
    root = make_brats(tmp_path / "brats", n_patients=3, shape=(16, 18, 10))
    one = prepare([root], small_cfg(), tmp_path / "one")
    cfg = small_cfg()
    two = prepare(
        [root],
        dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, num_workers=2)),
        tmp_path / "two",
    )
    assert one.caches == two.caches
    for f in ("images.npy", "masks.npy", "slices.csv"):
        assert (one.cache_dir(0) / f).read_bytes() == (two.cache_dir(0) / f).read_bytes()


def test_a_folder_tumorscope_did_not_make_is_never_read_or_replaced(
    roots: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    p = prepare([roots], small_cfg(), out)
    marker = json.loads((out / "tumorscope-cache.json").read_text())
    assert marker == {"format": "tumorscope-cache", "version": 1, "spec_hash": p.spec.hash()}
    for name in ("prepared.json", "splits.json", "notes.txt"):
        mine = tmp_path / f"mine-{name}"
        mine.mkdir()
        (mine / name).write_text('{"mine": true}')
        where = mine / name if name != "notes.txt" else mine
        with pytest.raises(DataError, match=re.escape(f"{where}: not written by tumorscope")):
            prepare([roots], small_cfg(), mine)
        assert sorted(f.name for f in mine.iterdir()) == [name]
        assert (mine / name).read_text() == '{"mine": true}'
    with pytest.raises(DataError, match=r"prepared\.json: not written by tumorscope"):
        load_prepared(tmp_path / "mine-prepared.json", small_cfg())
    (out / "tumorscope-cache.json").write_text('{"format": "other"}')
    with pytest.raises(DataError, match="is not a tumorscope-cache marker"):
        prepare([roots], small_cfg(), out)
