"""``Predictor.predict_volume`` on MSD and nnU-Net cases, read through the layout registry."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tumorscope.config import load_config
from tumorscope.data.layout import discover
from tumorscope.data.types import DataError
from tumorscope.inference.predictor import Predictor

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SHAPE = (24, 28, 12)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_config(load_config(CONFIGS / "tiny.yaml"), seed=3)


def _save(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([1.2, 1.0, 2.0, 1.0])), path)
    return path


def _head(seed: int) -> np.ndarray:
    """A bright ellipsoid on a dark background, with texture (so slices have foreground)."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij")
    inside = sum(g**2 for g in grid) < 0.7
    return np.where(inside, 100 + 20 * rng.random(SHAPE), 0).astype(np.float32)


def test_msd_image_file_and_case_record(predictor: Predictor, tmp_path: Path) -> None:
    root = tmp_path / "Task01_BrainTumour"
    channels = [_head(seed) for seed in range(4)]  # file order: FLAIR, T1w, t1gd, T2w
    image = _save(root / "imagesTr" / "BRATS_007.nii.gz", np.stack(channels, axis=-1))
    _save(root / "labelsTr" / "BRATS_007.nii.gz", np.zeros(SHAPE, np.uint8))
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
                "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor",
                           "3": "enhancing tumour"},
                "training": [{"image": "./imagesTr/BRATS_007.nii.gz",
                              "label": "./labelsTr/BRATS_007.nii.gz"}],
                "test": [],
            }
        )
    )  # fmt: skip
    flair = _save(tmp_path / "flair.nii.gz", channels[0])
    from_file = predictor.predict_volume(image, gate_threshold=0.0)
    from_case = predictor.predict_volume(discover([root]).cases[0], gate_threshold=0.0)
    reference = predictor.predict_volume(flair, gate_threshold=0.0)
    assert from_file.name == "BRATS_007" and from_file.masks.shape == (1, *SHAPE)
    # The model's one channel (flair) is channel 0 of the 4-D file, nothing else.
    assert from_file.slice_probabilities == reference.slice_probabilities
    assert from_case.slice_probabilities == reference.slice_probabilities
    assert np.array_equal(from_file.masks, reference.masks)


def test_nnunet_channel_file_names_its_case(predictor: Predictor, tmp_path: Path) -> None:
    root = tmp_path / "Dataset001_BrainTumour"
    t2, flair = _head(5), _head(6)
    _save(root / "imagesTr" / "BraTS_001_0000.nii.gz", t2)
    _save(root / "imagesTr" / "BraTS_001_0001.nii.gz", flair)
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "T2", "1": "FLAIR"},
                "labels": {"background": 0, "edema": 1, "enhancing tumor": 2},
                "file_ending": ".nii.gz",
            }
        )
    )
    reference = predictor.predict_volume(_save(tmp_path / "flair.nii.gz", flair))
    r = predictor.predict_volume(root / "imagesTr" / "BraTS_001_0000.nii.gz")
    assert r.name == "BraTS_001" and r.masks.shape == (1, *SHAPE)
    assert r.slice_probabilities == reference.slice_probabilities  # FLAIR is file _0001
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "DWI"}}))
    with pytest.raises(DataError, match=r"dataset\.json: channel_names 0 'DWI'"):
        predictor.predict_volume(root / "imagesTr" / "BraTS_001_0000.nii.gz")
