"""Partial-label samples, collate, training samplers and train-only imputation on prepared tiny data.

These are the pieces ``StageData`` (training/data.py) assembles its batches from.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from tumorscope.config import Config, config_from_dict
from tumorscope.data.batch import Batch
from tumorscope.data.cache import prepare
from tumorscope.data.dataset import NpyRows, SliceDataset, collate, train_samplers
from tumorscope.data.imputation import ClinicalImputer
from tumorscope.data.prepared import PreparedData
from tumorscope.data.types import DataError

torch.set_num_threads(1)
Factory = Callable[..., Path]


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
    return config_from_dict({"data": d, "model": {"clinical_features": 2}})


@pytest.fixture
def prepared(
    tmp_path: Path, make_brats: Factory, make_kaggle: Factory, make_kaggle4: Factory
) -> PreparedData:
    make_brats(tmp_path / "data" / "brats", n_patients=8, shape=(20, 22, 12))
    make_kaggle(tmp_path / "data" / "kaggle", n_yes=3, n_no=3)
    make_kaggle4(tmp_path / "data" / "kaggle4", n_per_class=1, splits=("Training",))
    return prepare([tmp_path / "data"], small_cfg(), tmp_path / "out")


def survival_csv(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "survival_info.csv", dtype=str, keep_default_na=False).set_index(
        "Brats20ID"
    )


def test_partial_label_batch_carries_the_right_flags(
    prepared: PreparedData, tmp_path: Path
) -> None:
    ds = SliceDataset(prepared, "all")
    t = prepared.slices
    i_mask = int(np.nonzero((t["source"] == "brats") & (t["tumour"] == 1))[0][0])
    pid = t["patient_id"].iloc[i_mask]
    i_same = int(np.nonzero((t["patient_id"] == pid) & (t["tumour"] == 0))[0][0])
    i_kaggle = int(np.nonzero(t["source"] == "kaggle")[0][0])
    i_type = int(np.nonzero((t["source"] == "kaggle4") & (t["tumour_type"] == 3))[0][0])
    b = collate([ds[i_mask], ds[i_kaggle], ds[i_same], ds[i_type]])
    assert isinstance(b, Batch) and len(b) == 4
    assert (
        b.image.shape == (4, 1, 16, 16)
        and b.mask.shape == (4, 1, 16, 16)
        and b.image.dtype == torch.float32
    )
    assert b.has_mask.tolist() == [True, False, True, False]
    assert b.mask[0].sum() > 0 and b.mask[1].sum() == 0 and b.mask[2].sum() == 0
    assert b.has_tumour.tolist() == [True, True, True, True]
    assert b.tumour.tolist() == [1.0, float(t["tumour"].iloc[i_kaggle]), 0.0, 1.0]
    assert b.has_tumour_type.tolist() == [False, False, False, True] and b.tumour_type.tolist() == [
        -1,
        -1,
        -1,
        3,
    ]
    assert b.has_survival.tolist() == [True, False, True, False]
    row = survival_csv(tmp_path / "data" / "brats").loc[pid]
    days = row["Survival_days"]
    assert b.time[0].item() == pytest.approx(
        float(days.split("(")[-1].split()[0] if "ALIVE" in days else days)
    )
    assert b.event[0].item() == ("ALIVE" not in days) and b.event[0] == b.event[2]
    assert b.patient_index.tolist() == [0, 1, 0, 2] and b.patient_ids[0] == pid == b.patient_ids[2]
    assert b.sources == ["brats", "kaggle", "brats", "kaggle4"]
    assert b.slice_index[1].item() == -1 and b.slice_index[0].item() >= 0
    assert b.clinical.shape == (4, 2) and torch.isfinite(b.clinical).all()
    assert SliceDataset(prepared, "all", use_clinical=False)[i_mask].clinical.shape == (0,)


def test_imputation_uses_train_statistics_only(prepared: PreparedData, tmp_path: Path) -> None:
    root = tmp_path / "data" / "brats"
    held_out = set(prepared.patients("val")) | set(prepared.patients("test"))
    rows = list(csv.reader((root / "survival_info.csv").open()))
    for r in rows[1:]:
        if r[0] in held_out:
            r[1], r[3] = "1000", "GTR"  # extreme values outside train must not move the statistics
    with (root / "survival_info.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    p = prepare([tmp_path / "data"], small_cfg(), tmp_path / "out")
    assert p.splits == prepared.splits and p.built == []
    df = survival_csv(root)
    train = df.loc[[x for x in p.patients("train") if x in df.index]]
    age = train["Age"].astype(float)
    res = train["Extent_of_Resection"].map({"GTR": 1.0, "STR": 0.0}).dropna()
    imp = p.imputer
    assert imp.columns == ("Age", "Extent_of_Resection")
    assert imp.values[0] == pytest.approx(age.median())
    assert imp.values[1] == pytest.approx(float(res.mode().min()))
    assert imp.center[0] == pytest.approx(age.mean()) and imp.scale[0] == pytest.approx(
        age.std(ddof=0)
    )
    assert ClinicalImputer.from_dict(imp.to_dict()) == imp
    na = df.index[df["Extent_of_Resection"] == "NA"][0]
    vec = imp.transform(p.outcomes[na].clinical)
    assert vec[1] == pytest.approx((imp.values[1] - imp.center[1]) / imp.scale[1])


def test_imputer_against_pandas() -> None:
    rows = [
        {"age": 40.0, "hpv": 1.0},
        {"age": None, "hpv": 1.0},
        {"age": 70.0, "hpv": None},
        {"age": 61.0, "hpv": 0.0},
    ]
    imp = ClinicalImputer.fit(rows, ["age", "hpv", "never"])
    df = pd.DataFrame(rows)
    assert imp.values == (df["age"].median(), 1.0, 0.0)
    filled = df["age"].fillna(df["age"].median())
    np.testing.assert_allclose(
        imp.transform({"age": None, "hpv": None}),
        [(filled.median() - filled.mean()) / filled.std(ddof=0), (1 - 0.75) / np.sqrt(0.1875), 0.0],
        rtol=1e-5,
    )


def test_survival_training_samplers_give_patient_bags(prepared: PreparedData) -> None:
    ds = SliceDataset(prepared, "train", train=True, seed=0)
    tasks = ("segmentation", "tumour", "survival")
    data = prepared.cfg.data
    _, bags = train_samplers(ds, tasks, batch_size=6, seed=0, data=data)
    assert bags is not None
    train_events = sum(
        prepared.outcomes[p].event for p in prepared.patients("train") if p in prepared.outcomes
    )
    for step in range(8):
        b = collate([ds.get(i, draw=step * 100 + j) for j, i in enumerate(bags.next_batch())])
        assert len(b) == 6
        bag = b.patient_ids[:4]
        assert bag[0] == bag[1] and bag[2] == bag[3] and bag[0] != bag[2]
        assert b.has_survival[:4].all()
        assert int(b.event[[0, 2]].sum()) >= min(2, train_events)
        assert (b.has_mask[4:] | b.has_tumour[4:]).all()  # the fill carries the other tasks
        assert set(b.patient_ids) <= set(prepared.patients("train"))

    def bag_ids(seed: int) -> list[list[str]]:
        _, bags = train_samplers(ds, ("survival",), batch_size=4, seed=seed, data=data)
        assert bags is not None
        return [[ds.patient_ids[i] for i in bags.next_batch()] for _ in range(6)]

    assert bag_ids(0) == bag_ids(0) and bag_ids(0) != bag_ids(1)
    assert train_samplers(ds, ("tumour",), batch_size=4, seed=0, data=data)[1] is None


def test_validation_slices_are_every_eligible_slice_once_unaugmented(
    prepared: PreparedData,
) -> None:
    tasks = ("segmentation", "tumour")
    ds = SliceDataset(prepared, "val")
    idx = np.nonzero(ds.eligible(tasks))[0]
    rows = prepared.slice_table("val")
    rows = rows[rows["has_mask"] | rows["has_tumour"]]
    assert [ds.patient_ids[i] for i in idx] == rows["patient_id"].tolist()
    has_outcome = [p in prepared.outcomes for p in ds.patient_ids]
    assert ds.eligible(("survival",)).tolist() == has_outcome and any(has_outcome)
    first = rows.iloc[0]
    cached = np.load(prepared.cache_dir(int(first["cache"])) / "images.npy")[int(first["row"])]
    batch = collate([ds[int(i)] for i in idx[:3]])
    np.testing.assert_array_equal(batch.image[0].numpy(), cached.astype(np.float32))
    np.testing.assert_array_equal(ds[int(idx[0])].image, cached.astype(np.float32))  # no draws
    with pytest.raises(ValueError, match="unknown tasks"):
        ds.eligible(("dice",))


def test_balanced_sampler_draws_only_slices_with_targets(prepared: PreparedData) -> None:
    ds = SliceDataset(prepared, "train", train=True, seed=1)
    data = prepared.cfg.data
    seg, _ = train_samplers(ds, ("segmentation",), batch_size=4, seed=1, data=data)
    assert ds.has_mask[seg.draw(200)].all()
    assert collate([ds.get(int(i)) for i in seg.draw(4)]).has_mask.all()
    cls, _ = train_samplers(ds, ("tumour",), batch_size=8, seed=1, data=data)
    sources = [ds.sources[i] for i in cls.draw(5 * cls.indices.size)]
    counts = pd.Series(sources).value_counts(normalize=True)
    assert set(counts.index) == {"brats", "kaggle", "kaggle4"} and counts.min() > 0.15


def test_augmentation_moves_image_and_mask_together(prepared: PreparedData) -> None:
    plain = SliceDataset(prepared, "all")
    aug = SliceDataset(prepared, "all", train=True, seed=3)
    i = int(np.nonzero(prepared.slices["tumour"] == 1)[0][0])
    base = plain[i]
    flips = [
        lambda a: a,
        lambda a: a[..., ::-1],
        lambda a: a[..., ::-1, :],
        lambda a: a[..., ::-1, ::-1],
    ]
    seen = set()
    for _ in range(12):
        s = aug[i]
        match = [
            k
            for k, f in enumerate(flips)
            if np.array_equal(f(base.mask), s.mask)
            and np.array_equal(f(base.image) != 0, s.image != 0)
        ]
        assert match
        seen.add(match[0])
        assert not np.allclose(s.image[s.image != 0], flips[match[0]](base.image)[s.image != 0])
    assert len(seen) > 1


def test_empty_split_draws_nothing(tmp_path: Path, make_brats: Factory) -> None:
    make_brats(tmp_path / "brats", n_patients=2, shape=(12, 12, 6))
    p = prepare([tmp_path / "brats"], small_cfg(test_fraction=0.0), tmp_path / "out")
    assert p.patients("test") == []
    tasks = ("segmentation", "survival")
    for train in (True, False):
        ds = SliceDataset(p, "test", train=train)
        assert len(ds) == 0 and not ds.eligible(tasks).any()
        balanced, bags = train_samplers(ds, tasks, batch_size=2, seed=0, data=p.cfg.data)
        assert bags is None and balanced.draw(2).size == 0
    with pytest.raises(ValueError, match="empty list"):
        collate([])


def test_npy_rows_reads_like_numpy(tmp_path: Path) -> None:
    a = np.arange(5 * 2 * 3 * 3, dtype=np.float16).reshape(5, 2, 3, 3)
    np.save(tmp_path / "a.npy", a)
    for mode in ("pread", "mmap"):
        rows = NpyRows(tmp_path / "a.npy", mode)
        assert len(rows) == 5
        for i in range(5):
            np.testing.assert_array_equal(rows[i], a[i])
        with pytest.raises(IndexError, match=r"a\.npy: row 5"):
            rows[5]


def test_truncated_cache_file_is_a_data_error(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((4, 8), dtype=np.float32))
    data = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "a.npy").write_bytes(data[:-40])
    with pytest.raises(DataError, match=r"a\.npy: truncated: row 3"):
        NpyRows(tmp_path / "a.npy")[3]


def test_get_with_draw_is_reproducible(prepared: PreparedData) -> None:
    ds = SliceDataset(prepared, "train", train=True, seed=9)
    a, b = ds.get(3, draw=17), ds.get(3, draw=17)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert any(not np.array_equal(a.image, ds.get(3, draw=d).image) for d in range(5))
    plain = SliceDataset(prepared, "train").get(3, draw=17)
    assert np.array_equal(plain.image, SliceDataset(prepared, "train")[3].image)
