from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from tumorscope.cli import app

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
runner = CliRunner()


def test_help_lists_the_contract_commands() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for name in ("data", "train", "evaluate", "compare", "predict", "info"):
        assert name in res.output
    res = runner.invoke(app, ["data", "--help"])
    for name in ("synth", "inspect", "validate", "prepare"):
        assert name in res.output


def test_info_json_reports_runtime_and_resolved_config() -> None:
    res = runner.invoke(
        app, ["info", "--json", "--config", str(CONFIGS / "tiny.yaml"), "--set", "data.fold=1"]
    )
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["runtime"]["torch"].startswith("2.13")
    assert isinstance(payload["runtime"]["bf16_supported"], bool)
    assert payload["config"]["data"]["fold"] == 1


def test_train_rejects_bad_config_before_reading_data(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("modle: {}\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(
        app, ["train", "--config", str(bad), "--data", str(empty), "--out", str(tmp_path / "run")]
    )
    assert res.exit_code == 2
    assert "modle" in res.output and str(bad) in res.output
    assert not (tmp_path / "run").exists()


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "tumorscope"
    res = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=False)
    assert res.returncode == 0
    assert "not a medical device" in res.stdout.replace("\n", " ")
