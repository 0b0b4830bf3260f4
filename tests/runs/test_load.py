"""load_run: finished runs and stage checkpoints through one loader; the schema policy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tumorscope.data.types import DataError
from tumorscope.inference.predictor import Predictor
from tumorscope.runs import (
    SCHEMA_VERSION,
    Calibration,
    CheckpointError,
    ManifestError,
    RunManifest,
    TorchBackend,
    load_run,
)


def _edit_manifest(run: Path, **changes: object) -> dict[str, object]:
    path = run / "manifest.json"
    raw = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    path.write_text(json.dumps(raw))
    return raw


def test_a_finished_run_loads_with_its_typed_manifest(tiny_run: Path) -> None:
    run = load_run(tiny_run)
    stored = json.loads((tiny_run / "manifest.json").read_text())
    assert run.manifest.schema_version == SCHEMA_VERSION == stored["schema_version"]
    assert run.calibration is not None and not run.manifest.is_stage
    assert run.calibration.temperature == stored["calibration"]["temperature"]
    assert run.calibration.threshold == stored["calibration"]["threshold"]
    assert run.manifest.splits == stored["splits"]
    assert list(run.manifest.regions) == stored["regions"] == list(run.config.model.regions)
    assert run.spec.to_dict() == stored["preprocessing"]
    # The typed manifest reads like its file, key for key.
    assert {k: run.manifest[k] for k in stored} == stored


def test_the_backend_computes_what_the_model_computes(tiny_run: Path) -> None:
    run = load_run(tiny_run, batch_size=3)
    assert isinstance(run.backend, TorchBackend)
    x = np.random.default_rng(0).normal(size=(5, 1, 64, 64)).astype(np.float32)
    out = run.backend.forward_slices(x)
    with torch.no_grad():
        ref = run.model(torch.from_numpy(x))
    assert ref.seg_logits is not None and ref.tumour_logit is not None
    np.testing.assert_allclose(out["seg_prob"], torch.sigmoid(ref.seg_logits).numpy(), atol=1e-6)
    np.testing.assert_allclose(out["tumour_logit"], ref.tumour_logit.reshape(-1).numpy(), atol=1e-5)
    assert ref.survival_embedding is not None
    emb = ref.survival_embedding[:4].numpy()
    with torch.no_grad():
        head = run.model.survival_head
        assert head is not None
        expected = float(head(torch.from_numpy(emb), torch.zeros(4, dtype=torch.long))[0])
    assert run.backend.patient_log_hazard(emb, None) == pytest.approx(expected, abs=1e-6)


def test_a_stage_checkpoint_loads_with_stage_calibration_and_parent_data(tiny_run: Path) -> None:
    parent = load_run(tiny_run)
    stage_dir = next(p for p in sorted((tiny_run / "stages").iterdir()) if p.is_dir())
    stage = load_run(stage_dir)
    assert stage.manifest.is_stage and stage.manifest.stage == stage_dir.name
    cal = stage.calibration
    assert cal is not None and parent.calibration is not None
    assert (cal.temperature, cal.threshold) == (1.0, 0.5)
    assert cal.baseline_hazard is None and cal.risk_quantiles is None
    assert cal.tau == parent.calibration.tau
    assert cal.train_survival == parent.calibration.train_survival
    assert stage.manifest.splits == parent.manifest.splits
    # A stage checkpoint outside its run: stage defaults, no parent data, every patient.
    lone = Path(shutil.copytree(stage_dir, Path(str(tiny_run) + "-lone-stage")))
    try:
        alone = load_run(lone)
        assert alone.calibration is not None and alone.calibration.tau is None
        assert alone.calibration.threshold == 0.5 and alone.manifest.splits is None
    finally:
        shutil.rmtree(lone)


def test_a_manifest_without_calibration_or_stage_is_not_a_finished_run(
    tiny_run: Path, tmp_path: Path
) -> None:
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    _edit_manifest(run, calibration=None)
    assert load_run(run).calibration is None
    with pytest.raises(DataError, match="manifest has no calibration"):
        Predictor.from_run(run)


def test_an_older_schema_loads_with_defaults_and_a_newer_one_fails(
    tiny_run: Path, tmp_path: Path
) -> None:
    old = Path(shutil.copytree(tiny_run, tmp_path / "old"))
    # Schema 1 had ``format_version`` and no ``schema_version``.
    raw = _edit_manifest(old, schema_version=None, format_version=1)
    assert "schema_version" not in raw
    loaded = load_run(old)
    assert loaded.manifest.schema_version == SCHEMA_VERSION
    current = load_run(tiny_run).calibration
    assert loaded.calibration is not None and current is not None
    assert loaded.calibration.to_dict() == current.to_dict()
    new = Path(shutil.copytree(tiny_run, tmp_path / "new"))
    _edit_manifest(new, schema_version=SCHEMA_VERSION + 1)
    with pytest.raises(ManifestError, match=r"new/manifest.json: .*upgrade tumorscope"):
        load_run(new)
    other = Path(shutil.copytree(tiny_run, tmp_path / "other"))
    _edit_manifest(other, format="something-else")
    with pytest.raises(ManifestError, match="is not a tumorscope run"):
        load_run(other)


def test_altered_weights_are_refused(tiny_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    with (run / "model.safetensors").open("r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\1\2\3")
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        load_run(run)


def test_calibration_round_trip_and_validation() -> None:
    cal = Calibration.from_dict(
        {"temperature": 2, "threshold": 0.25, "tau": 300, "baseline_hazard": None}
    )
    assert (cal.temperature, cal.threshold, cal.gate_threshold, cal.tau) == (2.0, 0.25, 0.3, 300.0)
    assert Calibration.from_dict(cal.to_dict()).to_dict() == cal.to_dict()
    assert dict(cal)["threshold"] == 0.25  # the mapping view is the JSON form
    with pytest.raises(ValueError, match=r"temperature -1\.0 is not positive"):
        Calibration(temperature=-1.0)
    with pytest.raises(ValueError, match=r"gate_threshold 1\.5 is not a probability"):
        Calibration(gate_threshold=1.5)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['temprature'\]"):
        Calibration.from_dict({"temprature": 1.0})


def test_manifest_round_trip_keeps_unknown_keys() -> None:
    raw = {
        "format": "tumorscope-run",
        "schema_version": SCHEMA_VERSION,
        "config": {"model": {}},
        "preprocessing": {"profile": "brain-mri"},
        "regions": ["WT"],
        "world_size": 2,
        "stage": "joint",
        "step": 7,
        "metrics": {"dice": 0.5},
        "note": {"kept": True},
    }
    m = RunManifest.from_dict(raw)
    assert m.is_stage and m.world_size == 2 and m.regions == ("WT",) and m.step == 7
    assert m.extra == {"note": {"kept": True}}
    again = m.to_dict()
    assert {k: again[k] for k in raw} == raw
    with pytest.raises(ManifestError, match="manifest has no 'preprocessing' mapping"):
        RunManifest.from_dict({"config": {}})


def test_a_run_of_an_earlier_network_fails_in_one_line_that_says_to_retrain(tmp_path: Path) -> None:
    # The weights of a run made before the network changed: the encoder stages' second
    # block under its old names (Sequential index 1) and no deep-supervision heads.
    import re

    from tumorscope.config import load_config
    from tumorscope.inference.predictor import Predictor
    from tumorscope.runs import load_run
    from tumorscope.runs.files import MODEL_FILE, read_manifest, read_tensors, write_checkpoint

    configs = Path(__file__).resolve().parents[2] / "configs"
    run = Predictor.from_config(load_config(configs / "tiny.yaml")).save(tmp_path / "new")
    state = read_tensors(run / MODEL_FILE)
    old = {
        re.sub(r"(encoder\.stages\.\d+)\.pre\.1\.", r"\1.1.0.", k): v
        for k, v in state.items()
        if "aux_convs" not in k
    }
    manifest = dict(read_manifest(run))
    manifest.pop("files", None)
    write_checkpoint(tmp_path / "old", model_state=old, manifest=manifest)
    with pytest.raises(DataError) as err:
        load_run(tmp_path / "old")
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "old") in message
    assert "retrain" in message and "missing" in message and "unexpected" in message
    load_run(run)  # the run of this network loads
