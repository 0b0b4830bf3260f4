"""Which units an evaluation holds out: by content where the run recorded it (``seen.json``),
by name for runs made before; the report says how many were left out and why."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tumorscope.config import load_config
from tumorscope.data.cache import load_prepared
from tumorscope.data.identity import SEEN_FILE, content_id, load_seen
from tumorscope.data.layout import discover
from tumorscope.data.types import DataError, ImageItem
from tumorscope.evaluation.evaluate import evaluate_run
from tumorscope.evaluation.seen import read_run_seen, run_seen_file, select_held_out
from tumorscope.fileio import OUTPUT_RECORD
from tumorscope.training.runfolder import write_seen

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
N_BOOT = 20


@pytest.fixture(scope="module")
def seen_run(tiny_run: Path, synth_brain: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny run, its ``seen.json`` rewritten from its own cache."""
    run = tmp_path_factory.mktemp("seen-run") / "run"
    shutil.copytree(tiny_run, run)
    prepared = load_prepared(tiny_run.parent / "cache", load_config(CONFIGS / "tiny.yaml"))
    write_seen(run, [synth_brain], prepared, resume=True)
    return run


def test_training_writes_the_content_of_every_split(tiny_run: Path, seen_run: Path) -> None:
    written = load_seen(tiny_run / SEEN_FILE)  # by the training run itself
    assert written == load_seen(seen_run / SEEN_FILE)
    splits = _splits(tiny_run)
    for split in ("train", "val", "test"):
        assert len(written.splits[split]) == len(splits[split]) > 0


def _splits(run: Path) -> dict[str, list[str]]:
    splits: dict[str, list[str]] = json.loads((run / "manifest.json").read_text())["splits"]
    return splits


@dataclass(frozen=True)
class NewFolder:
    root: Path
    n_items: int  # images named as the training folder's
    n_train_names: int  # of them, names of the run's train/val units
    copies: dict[str, list[ImageItem]]  # split → its images copied under new names


@pytest.fixture(scope="module")
def new_folder(
    synth_brain: Path, tiny_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> NewFolder:
    """A Kaggle-style folder the run never saw, named as its training folder is.

    Every training image's name is reused with other pixels; two training images and one
    test image come back byte for byte under new names.
    """
    splits = _splits(tiny_run)
    src = synth_brain / "kaggle"
    root = tmp_path_factory.mktemp("new") / "kaggle"
    items = discover([src]).images
    for it in items:
        rel = it.path.relative_to(src)
        (root / rel.parent).mkdir(parents=True, exist_ok=True)
        pixels = np.asarray(Image.open(it.path).convert("L"))
        Image.fromarray(np.ascontiguousarray(pixels[:, ::-1])).save(root / rel, quality=95)
    train = [it for it in items if it.patient_id in splits["train"] + splits["val"]]
    test = [it for it in items if it.patient_id in splits["test"]]
    assert len(train) >= 2 and test, "the tiny split must put images in train/val and test"
    copies = {"train": train[:2], "test": test[:1]}
    for split, chosen in copies.items():
        for k, it in enumerate(chosen):
            folder = "yes" if it.tumour else "no"
            shutil.copyfile(it.path, root / folder / f"copy_{split}_{k}{it.path.suffix}")
    return NewFolder(root, len(items), len(train), copies)


def test_training_records_the_content_of_every_split(seen_run: Path, synth_brain: Path) -> None:
    seen = read_run_seen(seen_run)
    assert seen is not None
    splits = _splits(seen_run)
    index = discover([synth_brain])
    for unit in [*index.cases, *index.images]:
        where = [s for s, ids in splits.items() if unit.patient_id in ids]
        assert seen.splits_of(unit.source, content_id(unit)) == tuple(where), unit.patient_id
    assert sum(len(v) for v in seen.splits.values()) == sum(len(v) for v in splits.values())
    assert SEEN_FILE in json.loads((seen_run / OUTPUT_RECORD).read_text())["files"]
    assert run_seen_file(seen_run / "stages" / "joint") == seen_run / SEEN_FILE


@pytest.mark.parametrize("split", ["test", "val", "train"])
def test_on_the_training_folder_content_and_names_agree(
    seen_run: Path, synth_brain: Path, split: str
) -> None:
    index = discover([synth_brain])
    splits = _splits(seen_run)
    by_content = select_held_out(index, split=split, splits=splits, seen=read_run_seen(seen_run))
    by_name = select_held_out(index, split=split, splits=splits, seen=None)
    assert [c.patient_id for c in by_content.cases] == [c.patient_id for c in by_name.cases]
    assert [i.patient_id for i in by_content.images] == [i.patient_id for i in by_name.images]
    assert by_content.summary["rule"] == "content" and by_name.summary["rule"] == "name"
    others = {p for s, ids in splits.items() if s != split for p in ids}
    assert by_content.summary["excluded"] == len(others)
    assert by_content.summary["kept_name_matches"] == 0


def test_new_folder_with_training_names_is_evaluated_whole(
    seen_run: Path, new_folder: NewFolder
) -> None:
    index = discover([new_folder.root])
    splits = _splits(seen_run)
    n_items, n_train_names = new_folder.n_items, new_folder.n_train_names
    chosen = select_held_out(index, split="test", splits=splits, seen=read_run_seen(seen_run))
    kept = {i.patient_id for i in chosen.images}
    assert not any("copy_train" in k for k in kept)
    assert kept >= {
        it.patient_id for it in discover([new_folder.root]).images if "copy" not in it.patient_id
    }
    assert any(k.endswith("copy_test_0") for k in kept)  # held out by the run: evaluated
    assert chosen.summary == {
        "rule": "content",
        "reason": chosen.summary["reason"],
        "split": "test",
        "candidates": n_items + 3,
        "kept": n_items + 1,
        "excluded": 2,
        "excluded_by_split": chosen.summary["excluded_by_split"],
        "kept_name_matches": n_train_names,
    }
    copied = new_folder.copies["train"]
    where = {s for s, ids in splits.items() for it in copied if it.patient_id in ids}
    assert sum(chosen.summary["excluded_by_split"].values()) == 2
    assert set(chosen.summary["excluded_by_split"]) == where
    # the old rule, for a run without seen.json, drops every reused training name
    by_name = select_held_out(index, split="test", splits=splits, seen=None)
    assert by_name.summary["excluded"] == n_train_names
    assert len(by_name.images) == n_items + 3 - n_train_names


def test_report_says_what_was_excluded_and_why(
    seen_run: Path, tiny_run: Path, new_folder: NewFolder, tmp_path: Path
) -> None:
    root, n_items = new_folder.root, new_folder.n_items
    rep = evaluate_run(run=seen_run, data=[root], out=tmp_path / "r", n_boot=N_BOOT)
    assert len(rep.held.image_ids) == n_items + 1
    held_out = json.loads((tmp_path / "r" / "metrics.json").read_text())["meta"]["held_out"]
    assert (held_out["rule"], held_out["kept"], held_out["excluded"]) == ("content", n_items + 1, 2)
    assert str(seen_run / SEEN_FILE) in held_out["reason"]
    md = (tmp_path / "r" / "report.md").read_text()
    assert f"{n_items + 1} of {n_items + 3} units kept, 2 excluded as seen" in md
    assert "by content" in md and "SHA-256" in md
    # an old run (no seen.json) says it fell back to names
    old_run = tmp_path / "old-run"
    shutil.copytree(tiny_run, old_run)
    (old_run / SEEN_FILE).unlink()
    old = evaluate_run(run=old_run, data=[root], out=tmp_path / "old", n_boot=N_BOOT)
    meta = json.loads((tmp_path / "old" / "metrics.json").read_text())["meta"]["held_out"]
    assert meta["rule"] == "name" and "has no seen.json" in meta["reason"]
    assert len(old.held.image_ids) == n_items + 3 - new_folder.n_train_names
    assert "by name: the run has no seen.json" in (tmp_path / "old" / "report.md").read_text()


def test_changed_or_malformed_seen_file_is_refused_before_any_report(
    seen_run: Path, new_folder: NewFolder, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(seen_run, run)
    seen = load_seen(run / SEEN_FILE).to_dict()
    seen["splits"]["train"] = {}
    (run / SEEN_FILE).write_text(json.dumps(seen))
    with pytest.raises(DataError, match="changed after training wrote it") as err:
        evaluate_run(run=run, data=[new_folder.root], out=tmp_path / "r")
    assert err.value.path == run / SEEN_FILE
    assert not (tmp_path / "r").exists()
    (run / OUTPUT_RECORD).unlink()  # no record to check against: the format is still checked
    (run / SEEN_FILE).write_text('{"format": "tumorscope-seen", "version": 7}')
    with pytest.raises(DataError, match="version 7"):
        evaluate_run(run=run, data=[new_folder.root], out=tmp_path / "r")
