"""Faults during checkpoint writes (a few trials of benchmarks/faults.py, which runs 50)."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from faults import disk_full_trial, kill_trial

from tumorscope.fileio import atomic_save_tensors, atomic_write_json, sha256_file
from tumorscope.runs.files import MANIFEST_FILE, MODEL_FILE, STAGED, read_manifest, settle
from tumorscope.training.checkpoint import load_checkpoint, save_checkpoint


@pytest.mark.slow
def test_kill_9_during_writes_always_leaves_the_last_good_checkpoint(tmp_path: Path) -> None:
    rng = random.Random(1)
    for i in range(3):
        result = kill_trial(tmp_path / f"ck{i}", rng)
        assert result["loaded"] >= result["last_completed"] >= 1


def test_a_full_disk_leaves_the_old_checkpoint_and_no_partial_file(tmp_path: Path) -> None:
    full = disk_full_trial(tmp_path / "ck")
    assert full == {"write_failed": True, "unchanged": True, "loaded": 1}


def _state(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((3, 4), value), "b": torch.full((4,), value)}


def test_a_write_stopped_after_its_commit_point_is_finished_by_the_writer(tmp_path: Path) -> None:
    folder = tmp_path / "ck"
    save_checkpoint(folder, model_state=_state(1.0), manifest={"step": 1}, state={"step": 1})
    save_checkpoint(folder, model_state=_state(2.0), manifest={"step": 2}, state={"step": 2})
    # Replay the rename phase half done: stage step 3, commit its journal, rename one file.
    atomic_save_tensors(folder / (MODEL_FILE + STAGED), _state(3.0))
    atomic_write_json(folder / ("state.json" + STAGED), {"step": 3})
    files = {n: sha256_file(folder / (n + STAGED)) for n in (MODEL_FILE, "state.json")}
    atomic_write_json(folder / (MANIFEST_FILE + STAGED), {"step": 3, "files": files})
    (folder / (MODEL_FILE + STAGED)).replace(folder / MODEL_FILE)
    # Readers never write: the old manifest no longer verifies, and nothing vouches wrongly.
    with pytest.raises(Exception, match="sha256 does not match"):
        read_manifest(folder)
    manifest, model, _, state = load_checkpoint(folder)  # the writer's loader settles first
    assert manifest["step"] == 3 and state["step"] == 3
    assert float(model["w"].unique()) == 3.0
    assert not list(folder.glob("*" + STAGED))
    assert json.loads((folder / MANIFEST_FILE).read_text())["files"] == files


def test_a_write_stopped_before_its_commit_point_is_dropped(tmp_path: Path) -> None:
    folder = tmp_path / "ck"
    save_checkpoint(folder, model_state=_state(1.0), manifest={"step": 1})
    (folder / (MODEL_FILE + STAGED)).write_bytes(b"half a file")
    assert read_manifest(folder)["step"] == 1  # the old checkpoint is untouched
    settle(folder)
    assert not list(folder.glob("*" + STAGED))
    assert read_manifest(folder)["step"] == 1
