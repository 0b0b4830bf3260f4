"""Hostile cases for the writers: user files exactly where tumorscope would write.

Each generator builds one case under ``tmp`` from a trained run and a data folder (both
only read) and returns a :class:`WriterCase`: the CLI arguments, the user's files that
must come out byte-identical, the path the one refusal line must name, and outputs that
must not appear. They are plain functions so that other suites (the HTTP service's,
later) can replay the same cases.

The rule under test (README, "Command line"): an output is written only where no file
exists, or with ``--overwrite`` over a file tumorscope itself wrote there and nobody changed
since (``tumorscope-outputs.json``); ``--out`` is never an input's folder unless
``--allow-inside-input``; ``--resume`` only continues a run; caches carry
``tumorscope-cache.json``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = str(CONFIGS / "tiny.yaml")


@dataclass(frozen=True)
class WriterCase:
    """One hostile writer case.

    Attributes:
        args: ``tumorscope`` arguments.
        user_files: The user's files; their bytes must not change.
        names: The path the single ``error:`` line must contain.
        absent: Paths that must not exist afterwards (nothing written beside the refusal).
    """

    args: list[str]
    user_files: tuple[Path, ...]
    names: Path
    absent: tuple[Path, ...] = ()


def sha256s(paths: Iterable[Path]) -> dict[str, str]:
    """Path → sha256 of each file (``"missing"`` for a file that is gone)."""
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "missing"
        for p in paths
    }


def user_file(path: Path, text: str = "") -> Path:
    """A recognisable user file (it would be a ground truth, notes, a report of their own)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((text or f"the user's own {path.name}; not tumorscope's\n").encode())
    return path


def _case_folder(data: Path) -> Path:
    return next(p for p in sorted((data / "brats").iterdir()) if p.is_dir())


def _volume(data: Path, folder: Path) -> Path:
    """A copy of one BraTS FLAIR volume as ``folder/case.nii.gz`` (a volume input)."""
    case = _case_folder(data)
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(case / f"{case.name}_flair.nii.gz", folder / "case.nii.gz"))


def _image(data: Path, folder: Path) -> Path:
    """A copy of one Kaggle-style JPEG as ``folder/scan.jpg`` (a 2D input)."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(sorted((data / "kaggle").rglob("*.jpg"))[0], folder / "scan.jpg"))


def _predict(run: Path, inputs: list[Path], out: Path, *flags: str) -> list[str]:
    return ["predict", *map(str, inputs), "--run", str(run), "--out", str(out), *flags]


# --- predict -------------------------------------------------------------------------


def predict_out_is_the_input_folder(run: Path, data: Path, tmp: Path) -> WriterCase:
    """``--out`` = the input's folder, which holds the ground truth ``case_mask.nii.gz``."""
    folder = tmp / "in"
    volume = _volume(data, folder)
    truth = Path(
        shutil.copy(next(_case_folder(data).glob("*_seg.nii.gz")), folder / "case_mask.nii.gz")
    )
    return WriterCase(
        _predict(run, [volume], folder), (volume, truth), folder, (folder / "case.json",)
    )


def predict_inside_input_allowed_still_keeps_the_truth(
    run: Path, data: Path, tmp: Path
) -> WriterCase:
    """``--allow-inside-input``: the ground truth ``case_mask.nii.gz`` is still never replaced."""
    folder = tmp / "in"
    volume = _volume(data, folder)
    truth = Path(
        shutil.copy(next(_case_folder(data).glob("*_seg.nii.gz")), folder / "case_mask.nii.gz")
    )
    args = _predict(run, [volume], folder, "--allow-inside-input", "--overwrite")
    return WriterCase(args, (volume, truth), truth, (folder / "case.json",))


def predict_out_inside_a_case_folder(run: Path, data: Path, tmp: Path) -> WriterCase:
    """``--out`` inside a case folder given as the input."""
    case = Path(shutil.copytree(_case_folder(data), tmp / "case"))
    files = tuple(sorted(p for p in case.iterdir()))
    return WriterCase(_predict(run, [case], case / "pred"), files, case, (case / "pred",))


def predict_json_exists(run: Path, data: Path, tmp: Path) -> WriterCase:
    image = _image(data, tmp / "in")
    mine = user_file(tmp / "out" / "scan.json", '{"mine": true}\n')
    return WriterCase(_predict(run, [image], tmp / "out"), (image, mine), mine)


def predict_json_exists_overwrite(run: Path, data: Path, tmp: Path) -> WriterCase:
    """``--overwrite`` replaces only tumorscope's own outputs, never a user's file."""
    image = _image(data, tmp / "in")
    mine = user_file(tmp / "out" / "scan.json", '{"mine": true}\n')
    return WriterCase(_predict(run, [image], tmp / "out", "--overwrite"), (image, mine), mine)


def predict_overlay_exists(run: Path, data: Path, tmp: Path) -> WriterCase:
    image = _image(data, tmp / "in")
    mine = user_file(tmp / "out" / "scan_overlay.png")
    return WriterCase(
        _predict(run, [image], tmp / "out"), (image, mine), mine, (tmp / "out" / "scan.json",)
    )


def predict_mask_exists_overwrite(run: Path, data: Path, tmp: Path) -> WriterCase:
    volume = _volume(data, tmp / "in")
    mine = user_file(tmp / "out" / "case_mask.nii.gz")
    args = _predict(run, [volume], tmp / "out", "--overwrite")
    return WriterCase(args, (volume, mine), mine, (tmp / "out" / "case.json",))


def predict_uncertainty_exists(run: Path, data: Path, tmp: Path) -> WriterCase:
    volume = _volume(data, tmp / "in")
    mine = user_file(tmp / "out" / "case_uncertainty.nii.gz")
    args = _predict(run, [volume], tmp / "out", "--mc-samples", "2")
    return WriterCase(args, (volume, mine), mine, (tmp / "out" / "case_mask.nii.gz",))


def predict_gradcam_exists(run: Path, data: Path, tmp: Path) -> WriterCase:
    image = _image(data, tmp / "in")
    mine = user_file(tmp / "out" / "scan_gradcam.png")
    args = _predict(run, [image], tmp / "out", "--gradcam", "--overwrite")
    return WriterCase(args, (image, mine), mine, (tmp / "out" / "scan_overlay.png",))


def predict_figure_exists(run: Path, data: Path, tmp: Path) -> WriterCase:
    image = _image(data, tmp / "in")
    mine = user_file(tmp / "out" / "scan_figure.png")
    args = _predict(run, [image], tmp / "out", "--figure")
    return WriterCase(args, (image, mine), mine, (tmp / "out" / "scan.json",))


def predict_output_changed_since_written(run: Path, data: Path, tmp: Path) -> WriterCase:
    """A file the record lists, edited by the user since: not replaced, ``--overwrite`` or not."""
    image = _image(data, tmp / "in")
    mine = user_file(tmp / "out" / "scan.json", '{"edited": "by the user"}\n')
    record = {"format": "tumorscope-outputs", "version": 1, "files": {"scan.json": "0" * 64}}
    rec = user_file(tmp / "out" / "tumorscope-outputs.json", json.dumps(record))
    args = _predict(run, [image], tmp / "out", "--overwrite")
    return WriterCase(args, (image, mine, rec), mine)


def predict_foreign_record_file(run: Path, data: Path, tmp: Path) -> WriterCase:
    """A user's own ``tumorscope-outputs.json`` (not a record we wrote) is never replaced."""
    image = _image(data, tmp / "in")
    rec = user_file(tmp / "out" / "tumorscope-outputs.json", '{"files": {"scan.json": "x"}}')
    return WriterCase(_predict(run, [image], tmp / "out", "--overwrite"), (image, rec), rec)


def predict_out_is_a_file(run: Path, data: Path, tmp: Path) -> WriterCase:
    image = _image(data, tmp / "in")
    mine = user_file(tmp / "notes.txt")
    return WriterCase(_predict(run, [image], mine), (image, mine), mine)


def predict_output_is_a_link(run: Path, data: Path, tmp: Path) -> WriterCase:
    """``out/scan.json`` is a link to a user's file elsewhere: neither is replaced."""
    image = _image(data, tmp / "in")
    target = user_file(tmp / "elsewhere" / "precious.json", '{"precious": 1}\n')
    link = tmp / "out" / "scan.json"
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    return WriterCase(_predict(run, [image], tmp / "out", "--overwrite"), (image, target), link)


# --- evaluate, compare ---------------------------------------------------------------


def _evaluate(run: Path, data: Path, out: Path, *flags: str) -> list[str]:
    return ["evaluate", "--run", str(run), "--data", str(data), "--out", str(out), *flags]


def evaluate_report_md_exists(run: Path, data: Path, tmp: Path) -> WriterCase:
    mine = user_file(tmp / "rep" / "report.md", "# my own notes\n")
    absent = (tmp / "rep" / "metrics.json", tmp / "rep" / "predictions.json")
    return WriterCase(_evaluate(run, data, tmp / "rep"), (mine,), mine, absent)


def evaluate_metrics_exists_overwrite(run: Path, data: Path, tmp: Path) -> WriterCase:
    mine = user_file(tmp / "rep" / "metrics.json", '{"dice": 0.99}\n')
    args = _evaluate(run, data, tmp / "rep", "--overwrite")
    return WriterCase(args, (mine,), mine, (tmp / "rep" / "report.md",))


def evaluate_plot_exists(run: Path, data: Path, tmp: Path) -> WriterCase:
    mine = user_file(tmp / "rep" / "roc.png")
    return WriterCase(
        _evaluate(run, data, tmp / "rep"), (mine,), mine, (tmp / "rep" / "metrics.json",)
    )


def evaluate_out_inside_data(run: Path, data: Path, tmp: Path) -> WriterCase:
    copy = Path(shutil.copytree(data, tmp / "data"))
    files = tuple(sorted(p for p in copy.rglob("*") if p.is_file()))
    return WriterCase(_evaluate(run, copy, copy / "report"), files, copy, (copy / "report",))


def compare_md_exists(run: Path, data: Path, tmp: Path) -> WriterCase:
    mine = user_file(tmp / "cmp" / "compare.md", "# my comparison\n")
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    args = ["compare", str(tmp / "a"), str(tmp / "b"), "--out", str(tmp / "cmp")]
    return WriterCase(args, (mine,), mine, (tmp / "cmp" / "compare.json",))


def compare_json_exists(run: Path, data: Path, tmp: Path) -> WriterCase:
    mine = user_file(tmp / "cmp" / "compare.json", "{}\n")
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    args = ["compare", str(tmp / "a"), str(tmp / "b"), "--out", str(tmp / "cmp")]
    return WriterCase(args, (mine,), mine)


# --- train, caches, data -------------------------------------------------------------


def _train(data: Path, out: Path, *flags: str) -> list[str]:
    return ["train", "--config", TINY, "--data", str(data), "--out", str(out), *flags]


def train_resume_on_a_user_folder(run: Path, data: Path, tmp: Path) -> WriterCase:
    """``--resume`` on a folder with a user's ``config.yaml``: not a run, nothing written."""
    folder = tmp / "mine"
    files = (user_file(folder / "config.yaml", "lr: 0.1\n"), user_file(folder / "notes.txt"))
    absent = (folder / "cache", folder / "tumorscope-outputs.json")
    return WriterCase(_train(data, folder, "--resume"), files, folder, absent)


def train_resume_with_a_foreign_manifest(run: Path, data: Path, tmp: Path) -> WriterCase:
    """A ``manifest.json`` that is not a verified tumorscope manifest does not make a run."""
    folder = tmp / "mine"
    files = (
        user_file(folder / "config.yaml", "lr: 0.1\n"),
        user_file(folder / "manifest.json", '{"files": {"model.safetensors": "' + "0" * 64 + '"}}'),
        user_file(folder / "progress" / "manifest.json", "[]"),
    )
    return WriterCase(_train(data, folder, "--resume"), files, folder, (folder / "cache",))


def train_out_not_empty(run: Path, data: Path, tmp: Path) -> WriterCase:
    folder = tmp / "mine"
    files = (user_file(folder / "config.yaml", "lr: 0.1\n"),)
    return WriterCase(_train(data, folder), files, folder, (folder / "cache",))


def train_cache_holds_user_prepared(run: Path, data: Path, tmp: Path) -> WriterCase:
    """``--cache`` naming a folder with a user's ``prepared.json`` and ``splits.json``."""
    cache = tmp / "mycache"
    prepared = user_file(cache / "prepared.json", '{"caches": ["x"]}\n')
    splits = user_file(cache / "splits.json", '{"train": ["p1"]}\n')
    args = _train(data, tmp / "run", "--cache", str(cache))
    return WriterCase(args, (prepared, splits), prepared, (tmp / "run", cache / "cache"))


def train_cache_holds_user_splits(run: Path, data: Path, tmp: Path) -> WriterCase:
    cache = tmp / "mycache"
    splits = user_file(cache / "splits.json", '{"train": ["p1"]}\n')
    args = _train(data, tmp / "run", "--cache", str(cache))
    return WriterCase(args, (splits,), splits, (tmp / "run", cache / "prepared.json"))


def train_cache_with_a_foreign_marker(run: Path, data: Path, tmp: Path) -> WriterCase:
    cache = tmp / "mycache"
    marker = user_file(cache / "tumorscope-cache.json", '{"format": "something else"}')
    args = _train(data, tmp / "run", "--cache", str(cache))
    return WriterCase(args, (marker,), marker, (tmp / "run", cache / "splits.json"))


def prepare_into_a_user_folder(run: Path, data: Path, tmp: Path) -> WriterCase:
    out = tmp / "prep"
    prepared = user_file(out / "prepared.json", '{"mine": 1}\n')
    args = ["data", "prepare", str(data), "--config", TINY, "--out", str(out)]
    return WriterCase(args, (prepared,), prepared, (out / "splits.json", out / "cache"))


def synth_into_a_user_layout_folder(run: Path, data: Path, tmp: Path) -> WriterCase:
    out = tmp / "synth"
    mine = user_file(out / "brats" / "README.txt")
    args = ["data", "synth", "--out", str(out), "--patients", "1", "--shape", "32,32,24"]
    return WriterCase(args, (mine,), out / "brats")


CASES: dict[str, Callable[[Path, Path, Path], WriterCase]] = {
    f.__name__: f
    for f in (
        predict_out_is_the_input_folder,
        predict_inside_input_allowed_still_keeps_the_truth,
        predict_out_inside_a_case_folder,
        predict_json_exists,
        predict_json_exists_overwrite,
        predict_overlay_exists,
        predict_mask_exists_overwrite,
        predict_uncertainty_exists,
        predict_gradcam_exists,
        predict_figure_exists,
        predict_output_changed_since_written,
        predict_foreign_record_file,
        predict_out_is_a_file,
        predict_output_is_a_link,
        evaluate_report_md_exists,
        evaluate_metrics_exists_overwrite,
        evaluate_plot_exists,
        evaluate_out_inside_data,
        compare_md_exists,
        compare_json_exists,
        train_resume_on_a_user_folder,
        train_resume_with_a_foreign_manifest,
        train_out_not_empty,
        train_cache_holds_user_prepared,
        train_cache_holds_user_splits,
        train_cache_with_a_foreign_marker,
        prepare_into_a_user_folder,
        synth_into_a_user_layout_folder,
    )
}
"""Every writer case by name: ``CASES[name](run, data, tmp) -> WriterCase``."""
