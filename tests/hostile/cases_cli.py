"""Hostile inputs for the CLI boundary: configs, ``--set`` values, paths, names, run folders.

Each generator writes one hostile input into ``tmp`` (a folder it may fill) and returns the
``tumorscope`` argv that feeds it to the CLI; the ones that need a trained run take a
``run`` folder too and work on a copy of it. Nothing here imports tumorscope, so the HTTP
service's suite can replay the same inputs.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import struct
from pathlib import Path

from PIL import Image

# What a planted pickle or ``!!python`` tag would create if it were ever executed.
MARKER = "EXECUTED"


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path (to check nothing changed)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _train(tmp: Path, config: Path, *extra: str) -> list[str]:
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    return [
        "train",
        "--config",
        str(config),
        "--data",
        str(data),
        "--out",
        str(tmp / "run"),
        *extra,
    ]


def _config(tmp: Path, body: str | bytes, name: str = "config.yaml") -> Path:
    path = tmp / name
    if isinstance(body, bytes):
        path.write_bytes(body)
    else:
        path.write_text(body, encoding="utf-8")
    return path


# --- configs --------------------------------------------------------------------------


def billion_laughs_config(tmp: Path) -> list[str]:
    """~1 KB of YAML whose aliases expand to 10**9 strings (took 57 s, 4.6 GB)."""
    lines = [
        "stages:",
        '  - {name: a, tasks: &a ["lol","lol","lol","lol","lol","lol","lol","lol"]}',
    ]
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        refs = ",".join([f"*{prev}"] * 9)
        lines.append(f"  - {{name: {cur}, tasks: &{cur} [{refs}]}}")
    return _train(tmp, _config(tmp, "\n".join(lines) + "\n"))


def duplicate_keys_config(tmp: Path) -> list[str]:
    """``image_size`` twice: the second would silently win."""
    return _train(tmp, _config(tmp, "data:\n  image_size: 32\n  image_size: 4096\n"))


def python_tag_config(tmp: Path) -> list[str]:
    """A ``!!python/object/apply`` tag that would run a shell command if constructed."""
    marker = tmp / MARKER
    body = f"data: !!python/object/apply:os.system ['touch {marker}']\n"
    return _train(tmp, _config(tmp, body))


def binary_config(tmp: Path) -> list[str]:
    """A config that is a binary file (an image renamed .yaml)."""
    return _train(tmp, _config(tmp, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))))


def latin1_config(tmp: Path) -> list[str]:
    """A config in Latin-1, not UTF-8 (no NUL bytes)."""
    return _train(tmp, _config(tmp, "data:\n  sources: [kaggle]  # donn\xe9es\n".encode("latin-1")))


def huge_config(tmp: Path) -> list[str]:
    """8 MiB of YAML (one comment line): refused before it is parsed."""
    return _train(tmp, _config(tmp, "# " + "x" * (8 << 20) + "\n"))


def deeply_nested_config(tmp: Path) -> list[str]:
    """10 000 nested lists: a recursive composer would overflow the stack."""
    return _train(tmp, _config(tmp, "data:\n  channels: " + "[" * 10_000 + "]" * 10_000 + "\n"))


def bad_yaml_set(tmp: Path) -> list[str]:
    """A ``--set`` value that is not YAML."""
    return _train(tmp, _config(tmp, "{}\n"), "--set", "data.channels=[flair")


def inf_lr_config(tmp: Path) -> list[str]:
    """``lr: .inf`` (passed validation, then crashed training)."""
    return _train(tmp, _config(tmp, "stages:\n  - {name: joint, tasks: [tumour], lr: .inf}\n"))


def nan_weight_config(tmp: Path) -> list[str]:
    """A NaN task weight."""
    return _train(tmp, _config(tmp, "loss:\n  task_weights: {tumour: .nan}\n"))


def huge_seed_config(tmp: Path) -> list[str]:
    """``seed: 2**64`` (numpy refuses seeds past 2**32 - 1)."""
    return _train(tmp, _config(tmp, f"runtime:\n  seed: {2**64}\n"))


def huge_batch_config(tmp: Path) -> list[str]:
    """``batch_size: 1e9`` written as an integer (allocated tens of GB)."""
    body = "stages:\n  - {name: joint, tasks: [tumour], batch_size: 1000000000}\n"
    return _train(tmp, _config(tmp, body))


def float_batch_config(tmp: Path) -> list[str]:
    """``batch_size: 1.0e+9``: a float where an integer belongs."""
    body = "stages:\n  - {name: joint, tasks: [tumour], batch_size: 1.0e+9}\n"
    return _train(tmp, _config(tmp, body))


def huge_slices_config(tmp: Path) -> list[str]:
    """``slices_per_patient: 1e9`` (left a 10 TB sparse images.npy)."""
    return _train(tmp, _config(tmp, "data:\n  slices_per_patient: 1000000000\n"))


def stage_name_traversal_config(tmp: Path) -> list[str]:
    """A stage name that would make ``RUN/stages/<name>`` land outside the run."""
    body = "stages:\n  - {name: ../../../escaped, tasks: [tumour]}\n"
    return _train(tmp, _config(tmp, body))


def markup_config_path(tmp: Path) -> list[str]:
    """A config path holding rich markup (``[/]``) that does not exist."""
    return _train(tmp, tmp / "configs[/]" / "[bold]x[/bold].yaml")


# --- paths and output folders ---------------------------------------------------------


def markup_missing_folder(tmp: Path) -> list[str]:
    """``data inspect`` of a folder whose name is rich markup and that does not exist."""
    return ["data", "inspect", str(tmp / "scans[/]" / "[red]x")]


def _synth(out: Path, *extra: str) -> list[str]:
    return ["data", "synth", "--out", str(out), "--patients", "1", "--shape", "8,8,8", *extra]


def out_is_a_file(tmp: Path) -> list[str]:
    """``data synth --out`` naming an existing file of the user's."""
    target = tmp / "notes.txt"
    target.write_text("the user's notes\n")
    return _synth(target)


def readonly_out(tmp: Path) -> list[str]:
    """``data synth --out`` inside a read-only folder (no effect when run as root)."""
    folder = tmp / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    return _synth(folder / "synth")


def system_folder_out(tmp: Path) -> list[str]:
    """``--out`` inside ``/sys``, where nobody (root included) may create a folder."""
    return _synth(Path("/sys") / "tumorscope-hostile" / tmp.name)


def name_too_long_out(tmp: Path) -> list[str]:
    """``--out`` with a 300-byte name component (ENAMETOOLONG)."""
    return _synth(tmp / ("x" * 300))


def bad_shape(tmp: Path) -> list[str]:
    """``--shape`` with two numbers."""
    return ["data", "synth", "--out", str(tmp / "synth"), "--shape", "8,8"]


def huge_shape(tmp: Path) -> list[str]:
    """``--shape`` of 10**15 voxels."""
    return ["data", "synth", "--out", str(tmp / "synth"), "--shape", "100000,100000,100000"]


def negative_seed(tmp: Path) -> list[str]:
    """``--seed -1`` (numpy refuses negative seeds)."""
    return ["data", "synth", "--out", str(tmp / "synth"), "--seed", "-1"]


# --- names that try to forge output ---------------------------------------------------

# File names that would forge a problem line, recolour the terminal, or overwrite a line.
FORGING_NAMES = (
    "scan\nerror: forged.png",
    "scan\x1b[2J\x1b[31mred.png",
    "scan\rerror: hidden.png",
)


def forging_file_names(tmp: Path) -> list[str]:
    """``data validate`` of a Kaggle folder whose broken images have forging names."""
    root = tmp / "kaggle"
    for label in ("yes", "no"):
        (root / label).mkdir(parents=True)
        Image.new("L", (24, 20), 60).save(root / label / "fine.png")
    for name in FORGING_NAMES:
        (root / "yes" / name).write_bytes(b"not an image at all")
    return ["data", "validate", str(root)]


def undecodable_dicom_pixels(tmp: Path) -> list[str]:
    """``data validate`` of a JPEG 2000 DICOM series whose pixel data cannot be decoded.

    pydicom logs its own 40-line traceback at ERROR for it; ours is one line.
    """
    import pydicom  # deferred: only this case needs it
    from pydicom.data import get_testdata_file
    from pydicom.encaps import encapsulate

    series = tmp / "dicom" / "series"
    series.mkdir(parents=True)
    source = get_testdata_file("JPEG2000.dcm")
    for i in range(3):
        ds = pydicom.dcmread(source)
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 64])  # a broken J2K codestream
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0, 0, i]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [1, 1]
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(series / f"{i}.dcm")
    return ["data", "validate", str(tmp / "dicom")]


# --- run folders (a copy of a trained run) --------------------------------------------


def _copy_run(tmp: Path, run: Path) -> Path:
    copy = tmp / "run"
    shutil.copytree(run, copy)
    return copy


def _predict(tmp: Path, run: Path, image: Path) -> list[str]:
    return ["predict", str(image), "--run", str(run), "--out", str(tmp / "predicted")]


def _plant_weights(copy: Path, data: bytes, *, rehash: bool) -> None:
    """Replace the weights; with ``rehash`` also the manifest's sha256, as an attacker would."""
    (copy / "model.safetensors").write_bytes(data)
    if rehash:
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["files"]["model.safetensors"] = hashlib.sha256(data).hexdigest()
        (copy / "manifest.json").write_text(json.dumps(manifest))


def truncated_weights(tmp: Path, run: Path, image: Path, *, rehash: bool = False) -> list[str]:
    """``model.safetensors`` cut to its first 100 bytes."""
    copy = _copy_run(tmp, run)
    _plant_weights(copy, (copy / "model.safetensors").read_bytes()[:100], rehash=rehash)
    return _predict(tmp, copy, image)


def truncated_weights_rehashed(tmp: Path, run: Path, image: Path) -> list[str]:
    """Truncated weights whose manifest hash was updated to match (reaches the parser)."""
    return truncated_weights(tmp, run, image, rehash=True)


def oversized_header_weights(tmp: Path, run: Path, image: Path) -> list[str]:
    """A safetensors header that claims to be 2**60 bytes long, manifest hash updated."""
    copy = _copy_run(tmp, run)
    _plant_weights(copy, struct.pack("<Q", 2**60) + b"{}", rehash=True)
    return _predict(tmp, copy, image)


def lying_header_weights(tmp: Path, run: Path, image: Path) -> list[str]:
    """A valid-looking header whose one tensor claims 2**40 bytes past the file's end."""
    copy = _copy_run(tmp, run)
    header = json.dumps({"w": {"dtype": "F32", "shape": [2**38], "data_offsets": [0, 2**40]}})
    raw = header.encode()
    _plant_weights(copy, struct.pack("<Q", len(raw)) + raw + b"\0" * 16, rehash=True)
    return _predict(tmp, copy, image)


class _Planted:
    """Unpickling this creates :data:`MARKER` (it never should be unpickled)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def pickled_weights(tmp: Path, run: Path, image: Path) -> list[str]:
    """``model.safetensors`` replaced by a pickle that would create a marker file (rehashed)."""
    copy = _copy_run(tmp, run)
    _plant_weights(copy, pickle.dumps(_Planted(tmp / MARKER)), rehash=True)
    return _predict(tmp, copy, image)


def pickled_manifest(tmp: Path, run: Path, image: Path) -> list[str]:
    """``manifest.json`` replaced by a pickle that would create a marker file."""
    copy = _copy_run(tmp, run)
    (copy / "manifest.json").write_bytes(pickle.dumps(_Planted(tmp / MARKER)))
    return _predict(tmp, copy, image)


def predict_out_is_a_file(tmp: Path, run: Path, image: Path) -> list[str]:
    """``predict --out`` naming an existing file of the user's."""
    target = tmp / "results.csv"
    target.write_text("patient,score\n")
    return ["predict", str(image), "--run", str(run), "--out", str(target)]


def bogus_split(tmp: Path, run: Path, data: Path) -> list[str]:
    """``evaluate --split bogus``: a split the run does not have."""
    out = tmp / "report"
    return [
        "evaluate",
        "--run",
        str(run),
        "--data",
        str(data),
        "--out",
        str(out),
        "--split",
        "bogus",
    ]
