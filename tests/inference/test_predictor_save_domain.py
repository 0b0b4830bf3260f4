"""``Predictor.save`` keeps the domain model: the saved run carries ``domain.safetensors``
under a manifest hash that matches it, and the reloaded predictor scores and thresholds
an input as the original does."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata

from tumorscope.config import load_config
from tumorscope.data.layout import discover
from tumorscope.inference.ood import NO_DOMAIN_MODEL
from tumorscope.inference.predictor import Predictor
from tumorscope.runs import load_run
from tumorscope.runs.files import DOMAIN_FILE, MANIFEST_FILE

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_saved_predictor_keeps_its_domain_model(
    tiny_run: Path, synth_brain: Path, tmp_path: Path
) -> None:
    original = Predictor.from_run(tiny_run)
    stats = original.domain.stats
    assert stats is not None
    saved = original.save(tmp_path / "saved")
    manifest = json.loads((saved / MANIFEST_FILE).read_text())
    assert (saved / DOMAIN_FILE).is_file()
    assert manifest["files"][DOMAIN_FILE] == _sha256(saved / DOMAIN_FILE)
    assert all(manifest["files"][name] == _sha256(saved / name) for name in manifest["files"])
    back = load_run(saved).domain  # verifies every hash of the manifest
    assert back is not None
    np.testing.assert_array_equal(back.mean, stats.mean)
    np.testing.assert_array_equal(back.precision, stats.precision)
    kept = (back.image_threshold, back.volume_threshold, back.quantile, back.n_train)
    assert kept == (stats.image_threshold, stats.volume_threshold, stats.quantile, stats.n_train)

    reloaded = Predictor.from_run(saved)
    image = skdata.camera().astype(np.float32)
    a, b = original.predict(image).domain, reloaded.predict(image).domain
    assert b.score is not None and b.score == pytest.approx(a.score, rel=1e-6)
    assert b.threshold == a.threshold == stats.image_threshold
    assert b.in_domain == a.in_domain
    case = discover([synth_brain]).cases[0]
    va, vb = original.predict_volume(case).domain, reloaded.predict_volume(case).domain
    assert vb.score is not None and vb.score == pytest.approx(va.score, rel=1e-6)
    assert vb.threshold == va.threshold == stats.volume_threshold
    assert vb.in_domain == va.in_domain
    assert vb.slice_scores == pytest.approx(va.slice_scores, rel=1e-6)


def test_a_predictor_without_a_domain_model_saves_none(tmp_path: Path) -> None:
    untrained = Predictor.from_config(load_config(CONFIGS / "tiny.yaml"), seed=3)
    saved = untrained.save(tmp_path / "run")
    assert not (saved / DOMAIN_FILE).exists()
    assert DOMAIN_FILE not in json.loads((saved / MANIFEST_FILE).read_text())["files"]
    reloaded = Predictor.from_run(saved)
    assert reloaded.domain.stats is None
    r = reloaded.predict(np.zeros((37, 41), np.float32))
    assert r.domain.score is None and r.domain.reason == NO_DOMAIN_MODEL
