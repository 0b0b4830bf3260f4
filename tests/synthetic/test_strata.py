"""Kaggle-style folders: ``strata.csv`` beside the images and the fixed 2D test set."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from tumorscope.data.layout import discover
from tumorscope.data.types import DataError
from tumorscope.synthetic import read_strata, synthesize, synthesize_kaggle
from tumorscope.synthetic.cohort import STREAM_KAGGLE, STREAM_KAGGLE_TEST
from tumorscope.synthetic.kaggle import (
    STRATA_COLUMNS,
    render_kaggle,
    sample_kaggle,
    strata_rows,
    write_strata,
)

SHAPE = (48, 56, 40)
SEED = 5
HEADER = "file,label,contrast,plane,skull,offset_mm"


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("strata") / "train"
    synthesize(
        profile="brain-mri",
        patients=1,
        out=out,
        kaggle=6,
        difficulty="hard",
        seed=SEED,
        shape=SHAPE,
    )
    return out / "kaggle"


@pytest.fixture(scope="module")
def holdout_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("strata") / "test2d"
    summary = synthesize_kaggle(count=5, out=out, difficulty="hard", seed=SEED)
    assert summary.patients == 0 and summary.kaggle_images == 5
    assert summary.roots == {"kaggle": out}
    assert out / "strata.csv" in summary.paths and summary.files == 6
    assert summary.bytes == sum(p.stat().st_size for p in summary.paths)
    return out


def _images(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))


def test_strata_csv_lists_every_image_with_its_sampled_params(train_dir: Path) -> None:
    path = train_dir / "strata.csv"
    assert path.read_text(encoding="utf-8").splitlines()[0] == HEADER
    rows = read_strata(path)
    assert [r["file"] for r in rows] == _images(train_dir)  # one row per image, sorted
    assert all(str(r["file"]).split("/")[0] == r["label"] for r in rows)
    assert all(list(r) == list(STRATA_COLUMNS) for r in rows)
    params = {
        f"{'yes' if k.tumour else 'no'}/{k.filename}": k
        for k in sample_kaggle(count=6, difficulty="hard", seed=SEED)
    }
    for r in rows:
        kp = params[str(r["file"])]
        assert (r["contrast"], r["plane"], r["skull"]) == (kp.contrast, kp.orientation, True)
    assert rows == strata_rows(list(params.values()))  # typed values round-trip


def test_offset_mm_is_the_fraction_times_the_main_lesions_smallest_radius(train_dir: Path) -> None:
    rows = {r["file"]: r for r in read_strata(train_dir / "strata.csv")}
    for kp in sample_kaggle(count=6, difficulty="hard", seed=SEED):
        if kp.tumour:
            largest = max(kp.patient.lesions, key=lambda les: math.prod(les.radii_mm))
            expected = kp.offset_mm * min(largest.radii_mm)
            assert abs(kp.offset_mm) <= 0.3  # a fraction, not mm
            assert rows[f"yes/{kp.filename}"]["offset_mm"] == pytest.approx(expected, abs=0.051)
        else:
            assert rows[f"no/{kp.filename}"]["offset_mm"] == pytest.approx(kp.offset_mm, abs=0.051)


def test_test_set_has_prefixed_names_other_patients_and_reads_back(
    train_dir: Path, holdout_dir: Path
) -> None:
    names = _images(holdout_dir)
    assert names == ["no/TN1.jpg", "no/TN2.jpg", "yes/TY1.jpg", "yes/TY2.jpg", "yes/TY3.jpg"]
    train = {Path(n).name for n in _images(train_dir)}
    assert train == {"Y1.jpg", "Y2.jpg", "Y3.jpg", "N1.jpg", "N2.jpg", "N3.jpg"}
    assert not train & {Path(n).name for n in names}
    assert [r["file"] for r in read_strata(holdout_dir / "strata.csv")] == names
    for root, labels in ((holdout_dir, [0, 0, 1, 1, 1]), (train_dir, [0, 0, 0, 1, 1, 1])):
        index = discover([root])
        assert index.problems == [] and set(index.layouts) == {"kaggle"}
        assert sorted(i.path.relative_to(root).as_posix() for i in index.images) == _images(root)
        assert sorted(i.tumour for i in index.images) == labels
    # A different seed stream: other patients than the training folder's, same seed.
    train_kp = sample_kaggle(count=6, difficulty="hard", seed=SEED)[0]
    test_kp = sample_kaggle(
        count=5, difficulty="hard", seed=SEED, prefix="T", stream=STREAM_KAGGLE_TEST
    )[0]
    assert train_kp.patient.anatomy != test_kp.patient.anatomy
    with pytest.raises(DataError, match="not empty"):
        synthesize_kaggle(count=2, out=holdout_dir, seed=SEED)
    with pytest.raises(ValueError, match="prefix"):
        synthesize_kaggle(count=2, out=holdout_dir / "x", prefix="a/b")


def test_sampling_is_unchanged_by_the_new_options_and_render_is_deterministic() -> None:
    items = sample_kaggle(count=4, difficulty="easy", seed=0)
    assert [k.filename for k in items] == ["Y1.jpg", "Y2.jpg", "N1.jpg", "N2.jpg"]
    assert all(k.skull for k in items)
    assert items == sample_kaggle(count=4, difficulty="easy", seed=0, stream=STREAM_KAGGLE)
    prefixed = sample_kaggle(count=4, difficulty="easy", seed=0, prefix="X")
    for a, b in zip(items, prefixed, strict=True):
        assert b.filename == f"X{a.filename}" and b.patient.patient_id == f"X{a.patient.patient_id}"
        same = dataclasses.replace(b, filename=a.filename, patient=a.patient)
        assert same == a  # the prefix draws no random numbers
        assert dataclasses.replace(b.patient, patient_id=a.patient.patient_id) == a.patient
    kp = items[2]
    first = np.asarray(render_kaggle(kp).convert("L"))
    np.testing.assert_array_equal(first, np.asarray(render_kaggle(kp).convert("L")))
    bare = np.asarray(render_kaggle(dataclasses.replace(kp, skull=False)).convert("L"))
    assert bare.shape == first.shape and not np.array_equal(bare, first)


def test_skull_stripped_share_draws_only_when_asked() -> None:
    """The test stream strips a share of its images; the same images otherwise."""
    kw = {"count": 40, "difficulty": "easy", "seed": 0, "stream": STREAM_KAGGLE_TEST}
    plain = sample_kaggle(**kw)
    stripped = sample_kaggle(**kw, skull_stripped=0.5)
    assert all(k.skull for k in plain)
    assert 8 <= sum(not k.skull for k in stripped) <= 32
    for a, b in zip(plain, stripped, strict=True):  # the extra draw comes last
        assert dataclasses.replace(b, skull=True) == a
    with pytest.raises(ValueError, match="skull_stripped"):
        sample_kaggle(count=1, difficulty="easy", seed=0, skull_stripped=1.5)


def test_skull_false_is_written_as_no(tmp_path: Path) -> None:
    kp = dataclasses.replace(sample_kaggle(count=1, difficulty="easy", seed=0)[0], skull=False)
    path = write_strata(tmp_path, [kp])
    assert path.read_text(encoding="utf-8").splitlines()[1].split(",")[4] == "no"
    assert read_strata(path)[0]["skull"] is False


def test_read_strata_names_the_file_when_a_column_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "strata.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(
            [["file", "label", "contrast", "plane"], ["yes/Y1.jpg", "yes", "t2", "axial"]]
        )
    with pytest.raises(ValueError, match=r"strata\.csv.*skull, offset_mm"):
        read_strata(path)
    path.write_text(f"{HEADER}\nyes/Y1.jpg,yes,t2,axial,maybe,0.5\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"strata\.csv: line 2: skull"):
        read_strata(path)
