"""Writers never destroy: user files where outputs would go stay byte-identical.

Every case of :mod:`cases_writers` runs the real CLI in a subprocess and must end with one
``error:`` line naming the file, exit code 2, no traceback, bounded memory, and the
user's files unchanged (sha256 before and after). Then the atomic writers themselves: a
write that fails half-way (a full disk, a file-size limit) leaves no partial file under
the final name and an existing file as it was.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cases_writers import CASES, sha256s, user_file
from runner import PEAK_RSS_BOUND_MB, TRACEBACK, run_cli

from tumorscope import fileio
from tumorscope.data.readers import save_nifti
from tumorscope.fileio import (
    OUTPUT_RECORD,
    OutputExistsError,
    OutputFolder,
    atomic_save_figure,
    atomic_write_bytes,
)


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused_in_one_line_and_user_files_unchanged(
    name: str, tiny_run: Path, synth_brain: Path, tmp_path: Path
) -> None:
    case = CASES[name](tiny_run, synth_brain, tmp_path)
    before = sha256s(case.user_files)
    run = run_cli(case.args)
    assert run.returncode == 2, run.output
    assert TRACEBACK not in run.output
    lines = run.error_lines()
    assert len(lines) == 1, run.output
    assert str(case.names) in lines[0], lines[0]
    assert sha256s(case.user_files) == before
    for path in case.absent:
        assert not os.path.lexists(path), f"{path} was written"
    assert run.peak_rss_mb < PEAK_RSS_BOUND_MB


def _fsize_limit(limit: int) -> None:
    # A full disk, as a process sees one: writes past `limit` bytes fail with EFBIG.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_leaves_no_partial_overlay(
    tiny_run: Path, synth_brain: Path, tmp_path: Path
) -> None:
    image = next(iter(sorted((synth_brain / "kaggle").rglob("*.jpg"))))
    out = tmp_path / "out"
    mine = user_file(out / "notes.txt")
    before = sha256s([mine])
    proc = subprocess.run(
        [sys.executable, "-m", "tumorscope.cli", "predict", str(image), "--run", str(tiny_run),
         "--out", str(out)],
        capture_output=True, text=True, check=False, preexec_fn=lambda: _fsize_limit(8192),
        env={**os.environ, "COLUMNS": "200", "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert TRACEBACK not in output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"], "a partial file was left"
    assert sha256s([mine]) == before


# --- the writers themselves ----------------------------------------------------------


def test_rerun_needs_overwrite_and_replaces_only_its_own_files(tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path)
    folder.write_bytes("a.json", b"1")
    mine = user_file(tmp_path / "b.json")
    with pytest.raises(OutputExistsError, match="pass --overwrite") as err:
        OutputFolder(tmp_path).check("a.json")
    assert str(err.value) == f"{tmp_path / 'a.json'}: {err.value.fault}"
    assert f"{err.value.filename}: {err.value.strerror}" == str(err.value)  # OSError form
    again = OutputFolder(tmp_path, overwrite=True)
    again.write_bytes("a.json", b"2")
    assert (tmp_path / "a.json").read_bytes() == b"2"
    with pytest.raises(OutputExistsError, match="not written by tumorscope"):
        again.write_bytes("b.json", b"x")
    (tmp_path / "a.json").write_bytes(b"edited")
    with pytest.raises(OutputExistsError, match="changed after tumorscope wrote it"):
        again.write_bytes("a.json", b"3")
    assert (tmp_path / "a.json").read_bytes() == b"edited"
    assert mine.read_text().startswith("the user's own")
    assert set(again.written()) == {"a.json"}
    with pytest.raises(ValueError, match="not a plain output file name"):
        again.check(OUTPUT_RECORD)
    with pytest.raises(ValueError, match="not a plain output file name"):
        again.check("../escape.json")


def test_a_record_file_tumorscope_did_not_write_is_refused(tmp_path: Path) -> None:
    for data in (b"[]", b'{"format": "tumorscope-outputs", "files": []}', b"\xff", b"[" * 99_999):
        (tmp_path / OUTPUT_RECORD).write_bytes(data)
        with pytest.raises(OutputExistsError, match=OUTPUT_RECORD):
            OutputFolder(tmp_path)


def _fail_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full)


def test_failed_writes_leave_the_old_file_and_no_partial_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    old = {n: user_file(tmp_path / n).read_bytes() for n in ("a.json", "m.nii.gz", "p.png")}
    _fail_fsync(monkeypatch)
    writes = {
        "a.json": lambda p: atomic_write_bytes(p, b"new"),
        "m.nii.gz": lambda p: save_nifti(np.zeros((3, 4, 5), np.uint8), np.eye(4), p),
        "p.png": lambda p: atomic_save_figure(Figure(figsize=(2, 2)), p),
        "fresh.png": lambda p: atomic_save_figure(Figure(figsize=(2, 2)), p),
    }
    for name, write in writes.items():
        with pytest.raises(OSError, match="No space left"):
            write(tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(old)
    assert {n: (tmp_path / n).read_bytes() for n in old} == old


def test_written_files_get_the_umask_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        OutputFolder(tmp_path).write_bytes("x.json", b"{}")
        save_nifti(np.zeros((3, 4, 5), np.uint8), np.eye(4), tmp_path / "m.nii.gz")
    finally:
        os.umask(umask)
    for name in ("x.json", "m.nii.gz", OUTPUT_RECORD):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644
