from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tumorscope.config import load_config
from tumorscope.data.types import DataError
from tumorscope.training.checkpoint import read_manifest
from tumorscope.training.run import RunError, train_run
from tumorscope.training.runfolder import run_problem

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SHAPE = (48, 56, 40)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tumorscope.synthetic import synthesize

    out = tmp_path_factory.mktemp("synth")
    synthesize(
        profile="brain-mri", patients=8, out=out, kaggle=12, difficulty="easy", seed=1, shape=SHAPE
    )
    return out


@pytest.fixture(scope="module")
def tiny_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "run"
    train_run(cfg=load_config(CONFIGS / "tiny.yaml"), data=[tiny_data], out=run)
    return run


def test_run_folder_contract(tiny_run: Path) -> None:
    manifest = read_manifest(tiny_run)  # verifies every hash
    assert (tiny_run / "model.safetensors").is_file()
    assert set(manifest["files"]) >= {"model.safetensors"}
    for stage in ("seg_warmup", "cls_head", "joint", "surv_head"):
        stage_manifest = read_manifest(tiny_run / "stages" / stage)
        assert stage_manifest["stage"] == stage
        assert (tiny_run / "stages" / stage / "model.safetensors").is_file()
    assert (tiny_run / "stages" / "seg_warmup" / "log.csv").is_file()
    assert manifest["preprocessing"]["channels"] == ["flair"]
    assert manifest["world_size"] == 1
    splits = manifest["splits"]
    assert not set(splits["train"]) & set(splits["val"])
    assert not set(splits["train"]) & set(splits["test"])


def test_calibration_is_stored(tiny_run: Path) -> None:
    cal = json.loads((tiny_run / "manifest.json").read_text())["calibration"]
    assert cal["temperature"] > 0
    assert 0.0 <= cal["threshold"] <= 1.0
    assert cal["gate_threshold"] == pytest.approx(0.3)
    if cal["baseline_hazard"] is not None:
        cum = np.asarray(cal["baseline_hazard"]["cumulative"])
        assert np.all(np.diff(cum) >= 0) and cum[0] >= 0
        q = cal["risk_quantiles"]["value"]
        assert q == sorted(q)
        assert 0 < cal["tau"] <= max(cal["train_survival"]["time"])


def test_frozen_encoder_is_unchanged_by_cls_head(tiny_run: Path) -> None:
    warm = load_file(str(tiny_run / "stages" / "seg_warmup" / "model.safetensors"))
    cls = load_file(str(tiny_run / "stages" / "cls_head" / "model.safetensors"))
    enc = [k for k in warm if k.startswith("encoder.")]
    assert enc
    for k in enc:
        np.testing.assert_array_equal(warm[k], cls[k])
    head = [k for k in warm if k.startswith("tumour_head.")]
    assert head and any(not np.array_equal(warm[k], cls[k]) for k in head)


def test_existing_run_folder_is_refused(tiny_run: Path, tiny_data: Path) -> None:
    with pytest.raises(RunError, match="not empty"):
        train_run(cfg=load_config(CONFIGS / "tiny.yaml"), data=[tiny_data], out=tiny_run)


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [4, 12, 21])
def test_resume_after_sigkill_gives_identical_weights(
    tiny_data: Path, tmp_path: Path, kill_after: int
) -> None:
    """Kill a real training subprocess mid-stage with SIGKILL, resume, compare bitwise.

    Three moments: early, after a validation and best-checkpoint save (step 10), and
    during the second one (step 20); benchmarks/faults.py kills checkpoint writes at random.
    """
    overrides = [
        "runtime.checkpoint_every=1",
        "stages.seg_warmup.max_steps=30",
        "stages.seg_warmup.eval_every=10",
    ]
    cache = tmp_path / "cache"
    straight = tmp_path / "straight"
    train_run(
        cfg=load_config(CONFIGS / "tiny.yaml", overrides),
        data=[tiny_data],
        out=straight,
        cache=cache,
    )

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "tumorscope.cli", "train", "--config", str(CONFIGS / "tiny.yaml"),
           "--data", str(tiny_data), "--out", str(killed), "--cache", str(cache)]  # fmt: skip
    for o in overrides:
        cmd += ["--set", o]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    log = killed / "stages" / "seg_warmup" / "log.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (
            log.is_file()
            and sum(1 for ln in log.read_text().splitlines() if ",loss," in ln) >= kill_after
        ):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "manifest.json").exists()  # it really was interrupted
    res = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=env, check=False)
    assert res.returncode == 0, res.stderr[-6000:]
    a = load_file(str(straight / "model.safetensors"))
    b = load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_default_cache_is_inside_the_run_and_marked(tiny_run: Path) -> None:
    marker = json.loads((tiny_run / "cache" / "tumorscope-cache.json").read_text())
    assert marker["format"] == "tumorscope-cache" and len(marker["spec_hash"]) > 0
    assert (tiny_run / "cache" / "prepared.json").is_file()
    record = json.loads((tiny_run / "tumorscope-outputs.json").read_text())
    assert "config.yaml" in record["files"]
    assert run_problem(tiny_run) is None


def test_resume_refuses_a_folder_that_is_not_a_run(tiny_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.yaml").write_text("lr: 0.1\n")
    (folder / "manifest.json").write_text('{"files": {}}')
    cfg = load_config(CONFIGS / "tiny.yaml")
    with pytest.raises(RunError, match=r"not a tumorscope run \(no config\.yaml recorded"):
        train_run(cfg=cfg, data=[tiny_data], out=folder, resume=True)
    with pytest.raises(RunError, match="nothing to resume"):
        train_run(cfg=cfg, data=[tiny_data], out=tmp_path / "absent", resume=True)
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "manifest.json"]
    assert (folder / "config.yaml").read_text() == "lr: 0.1\n"


def test_a_users_cache_folder_is_refused_before_the_run_starts(
    tiny_data: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "mycache"
    cache.mkdir()
    (cache / "splits.json").write_text('{"train": ["p1"]}')
    with pytest.raises(DataError, match=r"splits\.json: not written by tumorscope"):
        train_run(
            cfg=load_config(CONFIGS / "tiny.yaml"), data=[tiny_data], out=tmp_path / "run",
            cache=cache,
        )  # fmt: skip
    assert not (tmp_path / "run").exists()
    assert sorted(p.name for p in cache.iterdir()) == ["splits.json"]
