"""Identity terms of a DICOM header, and names that carry them; content identities of units."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image, PngImagePlugin
from pydicom.data import get_testdata_file

from tumorscope.data.identity import (
    carries_identity,
    content_id,
    file_content_id,
    identity_terms,
    image_content_id,
    load_seen,
    pseudonym,
    seen_units,
)
from tumorscope.data.types import Case, DataError, DatasetIndex, ImageItem


def test_terms_come_from_the_identifying_attributes(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = "Doe^Jane^M"
    ds.PatientID = "AB12345"
    ds.InstitutionName = "St Elsewhere"
    ds.Modality = "CT"  # not identifying: never a term
    ds.save_as(tmp_path / "IM1.dcm")
    terms = identity_terms(tmp_path)
    assert {"doe", "jane", "ab12345", "elsewhere", "st elsewhere", "doe^jane^m"} <= terms
    assert "ct" not in terms and "m" not in terms  # too short to mean anyone
    assert carries_identity("DOE_JANE_2019", terms)
    assert carries_identity("export-ab12345", terms)
    assert not carries_identity("case_001", terms)


def test_no_dicom_no_terms_and_a_stable_pseudonym(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    assert identity_terms(tmp_path) == frozenset()
    assert identity_terms(tmp_path / "absent") == frozenset()
    (tmp_path / "bad.dcm").write_bytes(b"not dicom")
    assert identity_terms(tmp_path / "bad.dcm") == frozenset()
    a, b = pseudonym(tmp_path / "x"), pseudonym(tmp_path / "x")
    assert a == b and a.startswith("dicom-") and len(a) == 16 and a != pseudonym(tmp_path / "y")


# ---------------------------------------------------------------------------- content
def _png(path: Path, pixels: np.ndarray, **save: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG", **save)
    return path


def _pixels(seed: int, shape: tuple[int, int] = (37, 41)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_image_identity_follows_pixels_not_names(tmp_path: Path) -> None:
    a = _png(tmp_path / "a" / "yes" / "Y1.png", _pixels(0))
    b = _png(tmp_path / "b" / "yes" / "Y1.png", _pixels(1))  # same name, other pixels
    c = _png(tmp_path / "c" / "no" / "renamed.png", _pixels(0))  # other name, same pixels
    # same pixels, other bytes: another compression level and a text chunk
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "exported again")
    d = _png(tmp_path / "d" / "Y1.png", _pixels(0), compress_level=9, pnginfo=info)
    assert hashlib.sha256(a.read_bytes()).digest() != hashlib.sha256(d.read_bytes()).digest()
    ids = {p: image_content_id(p) for p in (a, b, c, d)}
    assert ids[a] == ids[c] == ids[d]
    assert ids[a] != ids[b]
    assert len(ids[a]) == 64 and int(ids[a], 16) >= 0
    # one pixel changed is another image
    changed = _pixels(0)
    changed[36, 40] ^= 1
    assert image_content_id(_png(tmp_path / "e" / "Y1.png", changed)) != ids[a]
    # the same values in 16 bit are other pixels (another mode)
    wide = _png(tmp_path / "f" / "Y1.png", _pixels(0).astype(np.uint16))
    assert image_content_id(wide) != ids[a]


def test_undecodable_image_is_identified_by_its_bytes(tmp_path: Path) -> None:
    bad = tmp_path / "Y1.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert image_content_id(bad) == "file-" + hashlib.sha256(bad.read_bytes()).hexdigest()
    with pytest.raises(DataError, match=r"absent\.png"):
        file_content_id(tmp_path / "absent.png")


def _gz(path: Path, payload: bytes, *, mtime: int, name: str) -> Path:
    with (
        path.open("wb") as raw,
        gzip.GzipFile(filename=name, fileobj=raw, mode="wb", mtime=mtime) as f,
    ):
        f.write(payload)
    return path


def test_gzip_time_stamp_and_name_are_not_content(tmp_path: Path) -> None:
    payload = np.arange(4096, dtype=np.int16).tobytes()
    one = _gz(tmp_path / "one.nii.gz", payload, mtime=1, name="one.nii")
    two = _gz(tmp_path / "two.nii.gz", payload, mtime=1_700_000_000, name="other-name.nii")
    assert one.read_bytes() != two.read_bytes()
    assert file_content_id(one) == file_content_id(two)
    three = _gz(tmp_path / "three.nii.gz", payload[::-1], mtime=1, name="one.nii")
    assert file_content_id(three) != file_content_id(one)
    plain = tmp_path / "plain.nii"
    plain.write_bytes(payload)
    assert file_content_id(plain) == hashlib.sha256(payload).hexdigest()


def test_volume_identity_is_its_image_files_not_its_mask_or_folder(tmp_path: Path) -> None:
    def case(folder: str, flair: bytes, mask: bytes, pid: str) -> Case:
        d = tmp_path / folder
        d.mkdir()
        (d / "flair.nii").write_bytes(flair)
        (d / "t1.nii").write_bytes(b"t1 voxels")
        (d / "seg.nii").write_bytes(mask)
        return Case(
            patient_id=pid,
            source="brats",
            channels={"flair": d / "flair.nii", "t1": d / "t1.nii"},
            mask=d / "seg.nii",
        )

    a = case("a", b"flair voxels", b"mask 1", "BraTS_001")
    b = case("b", b"flair voxels", b"mask 2", "BraTS_777")  # same images, other mask and id
    c = case("c", b"flair voxels!", b"mask 1", "BraTS_001")  # same id, other images
    assert content_id(a) == content_id(b) != content_id(c)
    swapped = Case("BraTS_001", "brats", {"flair": a.channels["t1"], "t1": a.channels["flair"]})
    assert content_id(swapped) != content_id(a)  # channels are part of the content


def test_seen_units_per_split_and_their_file(tmp_path: Path) -> None:
    y1 = _png(tmp_path / "k" / "yes" / "Y1.png", _pixels(0))
    n1 = _png(tmp_path / "k" / "no" / "N1.png", _pixels(1))
    n2 = _png(tmp_path / "k" / "no" / "N2.png", _pixels(2))
    index = DatasetIndex(
        images=[
            ImageItem(y1, "yes/Y1", "kaggle", 1),
            ImageItem(n1, "no/N1", "kaggle", 0),
            ImageItem(n2, "no/N2", "kaggle", 0),  # skipped when the cache was built
        ]
    )
    slices = pd.DataFrame(
        {
            # a patient id two sources share is prefixed by source
            "patient_id": ["yes/Y1", "kaggle:no/N1", "other"],
            "source": ["kaggle", "kaggle", "brats"],
            "split": ["train", "test", "val"],
        }
    )
    seen = seen_units(index, slices)
    assert seen.splits == {
        "train": frozenset({("kaggle", image_content_id(y1))}),
        "test": frozenset({("kaggle", image_content_id(n1))}),
    }
    assert seen.splits_of("kaggle", image_content_id(y1)) == ("train",)
    assert seen.splits_of("kaggle4", image_content_id(y1)) == ()  # another dataset
    assert seen.splits_of("kaggle", image_content_id(n2)) == ()
    path = tmp_path / "seen.json"
    path.write_text(json.dumps(seen.to_dict()))
    assert load_seen(path) == seen


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("{not json", "cannot be read"),
        ('{"format": "other"}', "not a tumorscope-seen file"),
        ('{"format": "tumorscope-seen", "version": 99, "splits": {}}', "version 99"),
        ('{"format": "tumorscope-seen", "version": 1, "splits": []}', "'splits' is not"),
        (
            '{"format": "tumorscope-seen", "version": 1, "splits": {"train": {"kaggle": [1]}}}',
            "split 'train' is not",
        ),
    ],
)
def test_malformed_seen_file_names_the_file_and_fault(
    tmp_path: Path, text: str, fault: str
) -> None:
    path = tmp_path / "seen.json"
    path.write_text(text)
    with pytest.raises(DataError, match=fault) as err:
        load_seen(path)
    assert err.value.path == path
