"""The calibration's volume post-processing keys: stored by calibrate, read with defaults."""

from __future__ import annotations

import math

import pytest

from tumorscope.config import CalibrationConfig
from tumorscope.runs import SCHEMA_VERSION, Calibration, ManifestError, RunManifest
from tumorscope.runs.load import stage_calibration
from tumorscope.training.calibrate import calibrate
from tumorscope.training.loop import ValidationOutputs


def _manifest(
    calibration: dict[str, object], config_calibration: dict[str, object]
) -> dict[str, object]:
    return {
        "format": "tumorscope-run",
        "schema_version": 2,  # before the keys existed
        "config": {"calibration": config_calibration},
        "preprocessing": {"profile": "brain-mri"},
        "calibration": calibration,
    }


def test_a_calibration_without_the_keys_gets_the_defaults() -> None:
    cal = Calibration.from_dict({"temperature": 1.5, "threshold": 0.4})
    assert (cal.slice_gate, cal.min_component_ml, cal.gate_threshold) == (True, 0.1, 0.3)
    stored = cal.to_dict()
    assert stored["slice_gate"] is True and stored["min_component_ml"] == 0.1
    assert Calibration.from_dict(stored).to_dict() == stored


def test_the_run_config_fills_keys_an_older_manifest_lacks_and_stored_keys_win() -> None:
    old = RunManifest.from_dict(
        _manifest(
            {"temperature": 1.0},
            {"gate_threshold": 0.2, "slice_gate": False, "min_component_ml": 0.5},
        )
    )
    assert old.calibration is not None and old.schema_version == SCHEMA_VERSION == 5
    assert (old.calibration.gate_threshold, old.calibration.slice_gate) == (0.2, False)
    assert old.calibration.min_component_ml == 0.5
    bare = RunManifest.from_dict(_manifest({"temperature": 1.0}, {}))
    assert bare.calibration is not None
    assert (bare.calibration.slice_gate, bare.calibration.min_component_ml) == (True, 0.1)
    stored = RunManifest.from_dict(
        _manifest(
            {"slice_gate": True, "min_component_ml": 0.05},
            {"slice_gate": False, "min_component_ml": 0.5},
        )
    )
    assert stored.calibration is not None
    assert (stored.calibration.slice_gate, stored.calibration.min_component_ml) == (True, 0.05)
    assert stored.to_dict()["calibration"]["min_component_ml"] == 0.05


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"slice_gate": "yes"}, r"slice_gate 'yes' is not true or false"),
        ({"min_component_ml": -0.1}, r"min_component_ml -0\.1 is not a volume >= 0 mL"),
        ({"min_component_ml": math.inf}, r"min_component_ml inf is not a volume"),
    ],
)
def test_bad_post_processing_values_are_refused(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Calibration.from_dict(changes)
    with pytest.raises(ManifestError, match=match):
        RunManifest.from_dict(_manifest(changes, {}))


def test_calibrate_and_stage_checkpoints_carry_the_configured_post_processing() -> None:
    cfg = CalibrationConfig(gate_threshold=0.25, slice_gate=False, min_component_ml=0.3)
    cal = calibrate(cfg, ValidationOutputs(), ValidationOutputs(), None)
    assert (cal.gate_threshold, cal.slice_gate, cal.min_component_ml) == (0.25, False, 0.3)
    stage = stage_calibration(cfg, None)
    assert (stage.gate_threshold, stage.slice_gate, stage.min_component_ml) == (0.25, False, 0.3)
    assert stage.temperature == 1.0 and stage.threshold == 0.5
