from __future__ import annotations

import errno
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
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


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_an_unexpected_error_is_one_line_and_a_log_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise KeyError("boom")

    monkeypatch.setattr("tumorscope.runtime.runtime_info", broken)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    res = runner.invoke(app, ["info"])
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    (line,) = _error_lines(res.output)
    assert "unexpected KeyError" in line and "a bug" in line
    (log,) = (tmp_path / "tumorscope" / "crashes").glob("crash-*.log")
    assert str(log) in line
    assert "Traceback" in log.read_text() and "boom" in log.read_text()
    assert log.stat().st_mode & 0o077 == 0  # private: a traceback may hold paths


def test_memory_error_is_an_expected_one_liner(monkeypatch: pytest.MonkeyPatch) -> None:
    def greedy() -> None:
        raise MemoryError

    monkeypatch.setattr("tumorscope.runtime.runtime_info", greedy)
    res = runner.invoke(app, ["info"])
    assert res.exit_code == 2
    (line,) = _error_lines(res.output)
    assert "not enough memory" in line


def test_paths_are_printed_literally_and_escaped(tmp_path: Path) -> None:
    bad = tmp_path / "a[/]b\x1b[31m" / "c[bold].yaml"
    res = runner.invoke(app, ["info", "--config", str(bad)])
    assert res.exit_code == 2, res.output
    assert "\x1b" not in res.output
    (line,) = _error_lines(res.output)
    assert "a[/]b\\x1b[31m/c[bold].yaml: config file not found" in line


def test_os_errors_name_the_path_and_the_reason(tmp_path: Path) -> None:
    from tumorscope.cli.boundary import _os_fault

    err = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x.json"))
    assert _os_fault(err, None) == f"{tmp_path / 'x.json'}: Permission denied"
    full = OSError(errno.ENOSPC, "No space left on device")
    assert (
        _os_fault(full, tmp_path)
        == f"{tmp_path}: No space left on device (while writing the output)"
    )
    moved = OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b")
    assert _os_fault(moved, None) == "a -> b: Invalid cross-device link"


def test_library_errors_become_one_line_naming_the_source(tmp_path: Path) -> None:
    import yaml
    from safetensors import SafetensorError

    from tumorscope.cli.boundary import _expected

    run = tmp_path / "run"
    assert _expected(SafetensorError("header too large"), {"run": run}) == (
        f"{run}: not a readable safetensors file (header too large)"
    )
    assert "not valid YAML" in (_expected(yaml.YAMLError("x\ny"), {"config": run}) or "")
    try:
        b"\xff".decode("utf-8")
    except UnicodeDecodeError as e:
        assert (
            _expected(e, {"config": run}) == f"{run}: not UTF-8 text (invalid start byte at byte 0)"
        )
    assert _expected(ValueError("a bug"), {}) is None


def test_option_errors_are_one_error_line() -> None:
    exe = Path(sys.executable).parent / "tumorscope"
    res = subprocess.run(
        [str(exe), "data", "synth", "--out", "x", "--patients", "[/]"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    (line,) = _error_lines(res.stderr)
    assert "--patients" in line


def test_logging_escapes_messages_and_silences_pydicom_tracebacks() -> None:
    from tumorscope.cli.boundary import _no_foreign_traceback, _SafeFormatter, setup_logging

    setup_logging(verbose=False)
    import pydicom  # noqa: F401  (pydicom resets its own logger when it loads)

    assert logging.getLogger("pydicom.pixels").getEffectiveLevel() == logging.CRITICAL
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "read %s", ("a\nb\x1b",), None)
    assert _SafeFormatter("%(message)s").format(record) == "read a\\nb\\x1b"
    try:
        raise RuntimeError("inner")
    except RuntimeError:
        foreign = logging.LogRecord("lib", logging.ERROR, __file__, 1, "m", (), sys.exc_info())
    assert _no_foreign_traceback(foreign) and foreign.exc_info is None
