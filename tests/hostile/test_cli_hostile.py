"""The CLI boundary under hostile input: one ``error:`` line, no traceback, bounded memory.

Each case of :mod:`cases_cli` runs in a subprocess (:func:`runner.run_cli`), which measures
the child's own peak RSS. Every case must end with its exit code and exactly one line
``error: ...`` naming the file or key and the fault, no traceback, peak RSS under
:data:`runner.PEAK_RSS_BOUND_MB`, no crash log, the user's files unchanged, and no planted
pickle or tag executed.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import cases_cli as cases
import pytest
from runner import PEAK_RSS_BOUND_MB, TRACEBACK, CliRun, run_cli

Cli = Callable[[list[str]], CliRun]


@pytest.fixture(scope="session")
def mpl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mplconfig")


@pytest.fixture
def cli(tmp_path: Path, mpl_dir: Path) -> Cli:
    """``run_cli`` with crash logs (the unexpected-error path) in ``tmp_path/xdg``."""
    # matplotlib keeps its font cache under XDG_CACHE_HOME too: give it one for the session
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "MPLCONFIGDIR": str(mpl_dir)}
    return lambda argv: run_cli(argv, env=env)


def _assert_one_error(run: CliRun, tmp: Path, *fragments: str, code: int = 2) -> str:
    assert run.returncode == code, run.output
    assert TRACEBACK not in run.output, run.output
    lines = run.error_lines()
    assert len(lines) == 1, run.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert len(lines[0]) < 2200, lines[0]  # messages are clipped
    assert run.peak_rss_mb < PEAK_RSS_BOUND_MB, run.peak_rss_mb
    crashes = list((tmp / "xdg").rglob("crash-*.log"))
    assert not crashes, "an expected failure must not write a crash log"
    return lines[0]


Case = Callable[[Path], list[str]]

CONFIG_CASES: list[tuple[Case, str]] = [
    (cases.billion_laughs_config, "aliases"),
    (cases.duplicate_keys_config, "duplicate key 'image_size'"),
    (cases.python_tag_config, "python/object/apply:os.system' is not allowed"),
    (cases.binary_config, "binary file"),
    (cases.latin1_config, "not UTF-8"),
    (cases.huge_config, "bytes"),
    (cases.deeply_nested_config, "nested deeper"),
    (cases.bad_yaml_set, "--set"),
    (cases.inf_lr_config, "stages[0].lr"),
    (cases.nan_weight_config, "loss.task_weights.tumour"),
    (cases.huge_seed_config, "runtime.seed"),
    (cases.huge_batch_config, "stages[0].batch_size"),
    (cases.float_batch_config, "stages[0].batch_size"),
    (cases.huge_slices_config, "data.slices_per_patient"),
    (cases.stage_name_traversal_config, "stages[0].name"),
    (cases.markup_config_path, "not found"),
]


@pytest.mark.parametrize(("case", "fault"), CONFIG_CASES, ids=[c.__name__ for c, _ in CONFIG_CASES])
def test_a_hostile_config_is_one_line_naming_file_and_fault(
    tmp_path: Path, cli: Cli, case: Case, fault: str
) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    argv = case(folder)
    config = argv[argv.index("--config") + 1]
    before = cases.tree_digest(folder)
    run = cli(argv)
    _assert_one_error(run, tmp_path, config, fault)
    assert not (folder / "run").exists()  # refused before anything is written
    assert not (folder / cases.MARKER).exists()
    assert cases.tree_digest(folder) == before


PATH_CASES: list[tuple[Case, str]] = [
    (cases.markup_missing_folder, "[red]x"),
    (cases.out_is_a_file, "notes.txt"),
    (cases.name_too_long_out, "File name too long"),
    (cases.bad_shape, "--shape"),
    (cases.huge_shape, "--shape"),
    (cases.negative_seed, "--seed"),
]


@pytest.mark.parametrize(("case", "fault"), PATH_CASES, ids=[c.__name__ for c, _ in PATH_CASES])
def test_a_hostile_path_or_option_is_one_line(
    tmp_path: Path, cli: Cli, case: Case, fault: str
) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    argv = case(folder)
    before = cases.tree_digest(folder)
    line = _assert_one_error(cli(argv), tmp_path, fault)
    assert cases.tree_digest(folder) == before
    if case is cases.markup_missing_folder:  # the markup is printed as it is, not applied
        assert argv[-1] in line


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs")
def test_an_out_where_nobody_may_write_is_one_line(tmp_path: Path, cli: Cli) -> None:
    argv = cases.system_folder_out(tmp_path)
    out = argv[argv.index("--out") + 1]
    line = _assert_one_error(cli(argv), tmp_path, "/sys/tumorscope-hostile")
    assert "Operation not permitted" in line or "Permission denied" in line
    assert not Path(out).exists()


def test_file_names_cannot_forge_problem_lines_or_reach_the_terminal(
    tmp_path: Path, cli: Cli
) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    argv = cases.forging_file_names(folder)
    root = argv[-1]
    before = cases.tree_digest(folder)
    run = cli(argv)
    assert run.returncode == 1, run.output  # problems found
    assert TRACEBACK not in run.output
    assert "\x1b" not in run.output
    counted = re.search(r"(\d+) problem\(s\) found", run.stderr)
    assert counted, run.stderr
    lines = run.stdout.splitlines()  # universal newlines: a raw \r would split a line here
    assert len(lines) == int(counted.group(1)) >= len(cases.FORGING_NAMES)
    assert all(line.startswith(root) for line in lines), lines
    assert not any(line.startswith("error:") for line in run.output.splitlines())
    for escaped in ("scan\\nerror: forged.png", "scan\\x1b[2J\\x1b[31mred.png", "scan\\rerror"):
        assert sum(escaped in line for line in lines) == 1, (escaped, lines)
    assert cases.tree_digest(folder) == before
    assert run.peak_rss_mb < PEAK_RSS_BOUND_MB


def test_a_library_traceback_does_not_repeat_our_one_line(tmp_path: Path, cli: Cli) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    run = cli(cases.undecodable_dicom_pixels(folder))
    assert run.returncode == 1, run.output  # one problem found
    assert TRACEBACK not in run.output
    problems = run.stdout.splitlines()
    assert problems and all(line.startswith(str(folder / "dicom")) for line in problems)
    assert any("0.dcm" in line for line in problems), problems
    assert len(run.stderr.splitlines()) <= 1, run.stderr  # "N problem(s) found" only


# --- cases on a copy of the session's tiny trained run ---------------------------------

RunCase = Callable[[Path, Path, Path], list[str]]

RUN_CASES: list[tuple[RunCase, str]] = [
    (cases.truncated_weights, "model.safetensors"),
    (cases.truncated_weights_rehashed, "model.safetensors"),
    (cases.oversized_header_weights, "model.safetensors"),
    (cases.lying_header_weights, "model.safetensors"),
    (cases.pickled_weights, "model.safetensors"),
    (cases.pickled_manifest, "manifest.json"),
]


@pytest.fixture(scope="module")
def an_image(synth_brain: Path) -> Path:
    return next(p for p in sorted((synth_brain / "kaggle").rglob("*")) if p.is_file())


@pytest.mark.parametrize(("case", "fault"), RUN_CASES, ids=[c.__name__ for c, _ in RUN_CASES])
def test_a_broken_run_folder_is_one_line_naming_the_run(
    tmp_path: Path, cli: Cli, tiny_run: Path, an_image: Path, case: RunCase, fault: str
) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    original = cases.tree_digest(tiny_run)
    argv = case(folder, tiny_run, an_image)
    run_dir = argv[argv.index("--run") + 1]
    before = cases.tree_digest(folder)
    _assert_one_error(cli(argv), tmp_path, run_dir, fault)
    assert not (folder / cases.MARKER).exists()  # no planted pickle ever runs
    assert cases.tree_digest(folder) == before
    assert cases.tree_digest(tiny_run) == original


def test_predict_out_that_is_a_file_is_one_line(
    tmp_path: Path, cli: Cli, tiny_run: Path, an_image: Path
) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    argv = cases.predict_out_is_a_file(folder, tiny_run, an_image)
    before = cases.tree_digest(folder)
    _assert_one_error(cli(argv), tmp_path, "results.csv")
    assert cases.tree_digest(folder) == before


def test_evaluate_a_split_the_run_lacks_is_one_line(
    tmp_path: Path, cli: Cli, tiny_run: Path, synth_brain: Path
) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    run = folder / "run"
    shutil.copytree(tiny_run, run)
    argv = cases.bogus_split(folder, run, synth_brain)
    _assert_one_error(cli(argv), tmp_path, str(run), "'bogus'")
    assert not (folder / "report").exists()
