"""Out-of-domain check: AUROC of the domain score, in-domain test inputs against images made
only from what ships with the installed packages, and the share of in-domain inputs flagged.

In domain (the run never trained on them):

- ``volume_slice``: every slice ``predict_volume`` scores of the run's test-split
  BraTS-style volumes (``volume``: the volumes themselves, median slice score);
- ``test_image``: the run's test-split Kaggle-style 2D images;
- ``kaggle_test``: the fixed 2D test set (``synthesize_kaggle``, its own seed stream: other
  patients, every contrast, plane and skull stratum).

Out of domain (nothing is downloaded):

- ``ct_phantom``: axial CT slices (HU) of the synthetic PET/CT phantoms
  (``tumorscope.synthetic.petct``);
- ``dicom``: pydicom's bundled CT/MR test files (the ``pydicom/data/test_files`` folder
  only, distinct pixel data), pixel arrays with the rescale applied;
- ``dicom_png``: the same images as header-free PNGs (8-bit min–max, 16-bit);
- ``photo``: every image file of scikit-image's bundled data folder, and LFW faces;
- ``noise``: Gaussian, uniform, salt-and-pepper and smooth noise, several sizes.

``auroc`` is the ROC-AUC of the score for out-of-domain (1) against in-domain 2D inputs
(0): volume slices, test images and the fixed 2D test set; ``flagged`` the share of each
kind above the run's threshold for it (2D inputs: the 2D one; volume slices and volumes: the
volume one). The energy score of the tumour logit (``−log(1 + e^z)``,
Liu et al. 2020) is measured beside it as the alternative; ``kaggle_test_flagged_by_stratum``
splits the fixed 2D test set's flagged share by skull, plane and contrast, and ``mr_small``
says what the run makes of pydicom's ``MR_small.dcm``. Without ``--run`` a run is trained
first: the demo's synthetic cohort and ``configs/demo.yaml`` as they are (about 12 minutes
on 2 cores; ``--work`` keeps it for a later ``--run``); ``--quick``: a smaller model and
cohort, under 2 minutes, a smoke test whose figures are not the demo's. Prints a table and
one JSON object on its last stdout line, and writes it to ``--out``/``ood.json``.

    python benchmarks/ood.py [--quick] [--run RUN --data DATA] [--work DIR] [--out bench-out]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import skimage
import torch
from machine import cpu
from PIL import Image
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

from tumorscope.config import load_config
from tumorscope.data.layout import discover
from tumorscope.demo import DEMO_DATA
from tumorscope.inference.predictor import Predictor
from tumorscope.inference.results import SliceResult
from tumorscope.runs.load import DomainStats
from tumorscope.synthetic import read_strata, sample_cohort, synthesize, synthesize_kaggle
from tumorscope.synthetic.petct import render_petct
from tumorscope.training.run import train_run

ROOT = Path(__file__).resolve().parents[1]
IN_DOMAIN = ("volume_slice", "test_image", "kaggle_test")
OUT_OF_DOMAIN = ("ct_phantom", "dicom", "dicom_png", "photo", "noise")
# Sizes per mode: the training cohort and recipe overrides, the fixed 2D test set, the OOD set.
SIZES: dict[str, dict[str, Any]] = {
    "full": {  # the demo: its synthetic cohort and configs/demo.yaml as they are
        **{k: DEMO_DATA["brain-mri"][k] for k in ("patients", "kaggle", "shape")},
        "kaggle_test": 100, "overrides": [],
        "phantoms": 8, "phantom_shape": (128, 128, 96), "noise": 40, "faces": 30,
    },
    "quick": {
        "patients": 8, "kaggle": 32, "shape": (64, 80, 56), "kaggle_test": 20,
        "overrides": [
            "data.image_size=64", "data.slices_per_patient=12", "model.base_channels=8",
            "stages.joint.max_steps=150", "stages.joint.eval_every=150",
            "stages.surv_head.max_steps=10", "stages.surv_head.eval_every=10",
        ],
        "phantoms": 6, "phantom_shape": (96, 96, 64), "noise": 40, "faces": 30,
    },
}  # fmt: skip
PHANTOM_SLICES = 15
SMALLEST_PHOTO = 32  # px; the tiny animation frames and TIFF pages are no photos
LFW_UPSCALE = 4  # the 25×25 LFW faces, shown at 100×100
BATCH = 16


@dataclass
class Item:
    """One 2D input: a name, its kind and what ``Predictor.predict_batch`` takes."""

    name: str
    kind: str
    image: np.ndarray | Path


# --------------------------------------------------------------------------- OOD images


def ct_phantom_items(n: int, shape: tuple[int, int, int], seed: int) -> list[Item]:
    """Axial CT slices (HU) of ``n`` synthetic PET/CT phantoms, spread over each body."""
    items = []
    for k, params in enumerate(
        sample_cohort(profile="petct", patients=n, difficulty="standard", seed=seed)
    ):
        ct = render_petct(params, shape).ct.astype(np.float32)
        body = np.nonzero((ct > -500).any(axis=(0, 1)))[0]
        for z in np.linspace(body.min(), body.max(), PHANTOM_SLICES).round().astype(int):
            items.append(Item(f"phantom{k}_z{z}", "ct_phantom", ct[:, :, z]))
    return items


def bundled_dicom() -> list[tuple[str, np.ndarray]]:
    """Distinct CT/MR pixel arrays of pydicom's bundled test files (rescale applied)."""
    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    seen, out = set(), []
    for path in sorted(folder.glob("*.dcm")):
        try:
            ds = pydicom.dcmread(path)
            if getattr(ds, "Modality", None) not in ("CT", "MR"):
                continue
            arr = np.asarray(ds.pixel_array, dtype=np.float32)
        except Exception:  # truncated files and decoders this install lacks are skipped
            continue
        arr = arr * float(getattr(ds, "RescaleSlope", 1)) + float(
            getattr(ds, "RescaleIntercept", 0)
        )
        for f, frame in enumerate(arr.reshape(-1, *arr.shape[-2:])):
            digest = hashlib.sha256(frame.astype(np.int32).tobytes()).hexdigest()
            if digest not in seen:
                seen.add(digest)
                out.append((f"{path.stem}_{f}" if arr.ndim == 3 else path.stem, frame))
    return out


def dicom_items(png_dir: Path) -> list[Item]:
    """pydicom's CT/MR images as arrays, and as 8-bit and 16-bit header-free PNGs."""
    png_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for name, frame in bundled_dicom():
        items.append(Item(name, "dicom", frame))
        lo, hi = float(frame.min()), float(frame.max())
        unit = (frame - lo) / max(hi - lo, 1e-6)
        p8, p16 = png_dir / f"{name}_8bit.png", png_dir / f"{name}_16bit.png"
        Image.fromarray((unit * 255).round().astype(np.uint8)).save(p8)
        Image.fromarray((unit * 65535).round().astype(np.uint16)).save(p16)
        items += [Item(p8.stem, "dicom_png", p8), Item(p16.stem, "dicom_png", p16)]
    return items


def photo_items(faces: int) -> list[Item]:
    """scikit-image's bundled photos (the files of its data folder) and LFW faces."""
    folder = Path(skimage.__file__).parent / "data"
    items = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in (".png", ".jpg"):
            continue
        im = Image.open(path)
        if min(im.size) < SMALLEST_PHOTO:
            continue
        arr = np.asarray(im.convert("RGB") if im.mode != "L" else im, dtype=np.float32)
        items.append(Item(path.stem, "photo", arr if arr.ndim == 2 else np.moveaxis(arr, 2, 0)))
    lfw = np.load(folder / "lfw_subset.npy")
    for k in range(min(faces, lfw.shape[0])):
        face = Image.fromarray((lfw[k] * 255).astype(np.uint8)).resize(
            (25 * LFW_UPSCALE, 25 * LFW_UPSCALE), Image.Resampling.BICUBIC
        )
        items.append(Item(f"lfw{k}", "photo", np.asarray(face, dtype=np.float32)))
    return items


def noise_items(n: int, seed: int) -> list[Item]:
    """Gaussian, uniform, salt-and-pepper and smooth noise images of several sizes."""
    rng = np.random.default_rng(seed)
    items = []
    for k in range(n):
        side = int(rng.choice([64, 128, 200, 256, 512]))
        shape = (side, int(side * rng.uniform(0.75, 1.33)))
        kind = ("gaussian", "uniform", "salt_pepper", "smooth")[k % 4]
        if kind == "gaussian":
            x = rng.normal(100.0, 30.0, shape)
        elif kind == "uniform":
            x = rng.uniform(0.0, 255.0, shape)
        elif kind == "salt_pepper":
            x = np.where(rng.random(shape) < 0.1, 255.0, 0.0) + rng.uniform(0, 20, shape)
        else:
            x = gaussian_filter(rng.normal(0.0, 1.0, shape), sigma=side / 32) * 1000 + 500
        items.append(Item(f"noise_{kind}_{k}", "noise", x.astype(np.float32)))
    return items


def ood_set(work: Path, size: dict[str, Any], seed: int) -> list[Item]:
    """Every out-of-domain input of this mode."""
    return (
        ct_phantom_items(size["phantoms"], size["phantom_shape"], seed)
        + dicom_items(work / "dicom-png")
        + photo_items(size["faces"])
        + noise_items(size["noise"], seed)
    )


# --------------------------------------------------------------------------- scoring


def energy(p: np.ndarray, temperature: float) -> np.ndarray:
    """Energy score ``−log(1 + e^z)`` of the tumour logit ``z`` (higher: more unusual),
    recovered from calibrated probabilities ``σ(z / T)``."""
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    z = np.log(q / (1 - q)) * temperature
    return -np.logaddexp(0.0, z)


def score_items(predictor: Predictor, items: Sequence[Item]) -> list[SliceResult]:
    out: list[SliceResult] = []
    for start in range(0, len(items), BATCH):
        chunk = items[start : start + BATCH]
        out += predictor.predict_batch([i.image for i in chunk], names=[i.name for i in chunk])
    return out


def rows(kind: str, results: Sequence[SliceResult], temperature: float) -> dict[str, Any]:
    p = np.array([r.tumour_probability for r in results])
    return {
        "kind": kind,
        "score": [r.domain.score for r in results],
        "energy": energy(p, temperature).tolist(),
        "flagged": [r.domain.out_of_domain for r in results],
        "tumour": [bool(r.tumour) for r in results],
    }


def in_domain_sets(
    predictor: Predictor, data: Path, kaggle_test: Path
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """In-domain rows by kind; the test volumes' own figures and the fixed 2D test set's
    flagged share per stratum (skull, plane, contrast)."""
    index = discover([data])
    splits = predictor.manifest.splits or {}
    test = set(splits.get("test", []))
    cases = [c for c in index.cases if c.patient_id in test]
    images = [
        Item(i.patient_id, "test_image", i.path) for i in index.images if i.patient_id in test
    ]
    files = sorted(kaggle_test.rglob("*.jpg"))
    fixed = [Item(p.stem, "kaggle_test", p) for p in files]
    strata = {row["file"]: row for row in read_strata(kaggle_test / "strata.csv")}
    T = predictor.temperature
    slices: dict[str, list[Any]] = {"score": [], "energy": [], "flagged": [], "tumour": []}
    volumes: dict[str, Any] = {"n": 0, "flagged": 0, "score": []}
    for case in cases:
        r = predictor.predict_volume(case)
        scores = list(r.domain.slice_scores.values())
        p = np.array([r.slice_probabilities[z] for z in r.domain.slice_scores])
        slices["score"] += scores
        slices["energy"] += energy(p, T).tolist()
        slices["flagged"] += [s > (r.domain.threshold or np.inf) for s in scores]  # volume one
        slices["tumour"] += [bool(q >= predictor.threshold) for q in p]
        volumes["n"] += 1
        volumes["flagged"] += int(r.domain.out_of_domain)
        volumes["score"].append(r.domain.score)
    sets = {"volume_slice": {"kind": "volume_slice", **slices}}
    sets["test_image"] = rows("test_image", score_items(predictor, images), T)
    fixed_results = score_items(predictor, fixed)
    sets["kaggle_test"] = rows("kaggle_test", fixed_results, T)
    by_stratum: dict[str, dict[str, Any]] = {}
    for key in ("skull", "plane", "contrast"):
        groups: dict[str, list[bool]] = {}
        for path, res in zip(files, fixed_results, strict=True):
            row: dict[str, Any] = dict(strata[path.relative_to(kaggle_test).as_posix()])
            value = (
                {True: "on", False: "off"}.get(row[key], row[key]) if key == "skull" else row[key]
            )
            groups.setdefault(str(value), []).append(res.domain.out_of_domain)
        by_stratum[key] = {
            v: {"n": len(f), "flagged": float(np.mean(f))} for v, f in groups.items()
        }
    return sets, {"volumes": volumes, "kaggle_test_flagged_by_stratum": by_stratum}


def auroc(neg: Sequence[float], pos: Sequence[float]) -> float | None:
    if not neg or not pos:
        return None
    y = np.r_[np.zeros(len(neg)), np.ones(len(pos))]
    return float(roc_auc_score(y, np.r_[np.asarray(neg, float), np.asarray(pos, float)]))


def figures(
    sets: dict[str, dict[str, Any]], volumes: dict[str, Any], stats: DomainStats | None
) -> dict[str, Any]:
    ind = [s for k in IN_DOMAIN for s in sets[k]["score"]]
    ood = [s for k in OUT_OF_DOMAIN for s in sets[k]["score"]]
    ind_e = [s for k in IN_DOMAIN for s in sets[k]["energy"]]
    ood_e = [s for k in OUT_OF_DOMAIN for s in sets[k]["energy"]]
    per_kind = {}
    for k, s in sets.items():
        vs = auroc(ind, s["score"]) if k in OUT_OF_DOMAIN else auroc(s["score"], ood)
        per_kind[k] = {
            "n": len(s["score"]),
            "flagged": float(np.mean(s["flagged"])) if s["flagged"] else None,
            "auroc": vs,
            "auroc_energy": auroc(ind_e, s["energy"])
            if k in OUT_OF_DOMAIN
            else auroc(s["energy"], ood_e),
            "called_tumour": float(np.mean(s["tumour"])) if s["tumour"] else None,
        }
    flagged_in = [f for k in IN_DOMAIN for f in sets[k]["flagged"]]
    return {
        "thresholds": None
        if stats is None
        else {"image": stats.image_threshold, "volume": stats.volume_threshold},
        "auroc": auroc(ind, ood),
        "auroc_energy": auroc(ind_e, ood_e),
        "n_in_domain": len(ind),
        "n_out_of_domain": len(ood),
        "flagged_in_domain": float(np.mean(flagged_in)) if flagged_in else None,
        "flagged_out_of_domain": float(
            np.mean([f for k in OUT_OF_DOMAIN for f in sets[k]["flagged"]])
        ),
        "volumes": {"n": volumes["n"], "flagged": volumes["flagged"]},
        "by_kind": per_kind,
    }


def mr_small(predictor: Predictor) -> dict[str, Any]:
    """What the run says of pydicom's ``MR_small.dcm`` (the issue's example)."""
    ds = pydicom.dcmread(Path(pydicom.__file__).parent / "data" / "test_files" / "MR_small.dcm")
    r = predictor.predict(np.asarray(ds.pixel_array, dtype=np.float32), name="MR_small")
    return {
        "tumour_probability": r.tumour_probability,
        "tumour": bool(r.tumour),
        "domain": r.domain.to_json(),
    }


# --------------------------------------------------------------------------- main


def train(work: Path, size: dict[str, Any], seed: int, threads: int) -> tuple[Path, Path]:
    data = work / "data"
    synthesize(
        profile="brain-mri", patients=size["patients"], out=data, kaggle=size["kaggle"],
        difficulty="easy", seed=seed, shape=size["shape"], workers=2,
    )  # fmt: skip
    cfg = load_config(
        ROOT / "configs" / "demo.yaml", [*size["overrides"], f"runtime.threads={threads}"]
    )
    train_run(cfg=cfg, data=[data], out=work / "run", cache=work / "cache")
    return work / "run", data


def print_table(result: dict[str, Any]) -> None:
    f = result["figures"]
    print(f"{'kind':<14}{'n':>6}{'flagged':>10}{'AUROC':>8}{'energy':>8}{'tumour':>8}")
    for k, row in f["by_kind"].items():
        cells = [row["flagged"], row["auroc"], row["auroc_energy"], row["called_tumour"]]
        shown = "".join(f"{'n/a':>8}" if v is None else f"{v:>8.3f}" for v in cells[1:])
        flagged = "n/a" if cells[0] is None else f"{cells[0]:.3f}"
        print(f"{k:<14}{row['n']:>6}{flagged:>10}{shown}")
    print(
        f"AUROC {f['auroc']:.3f} (energy {f['auroc_energy']:.3f}); in-domain flagged "
        f"{f['flagged_in_domain']:.3f}; out-of-domain flagged {f['flagged_out_of_domain']:.3f}; "
        f"volumes flagged {f['volumes']['flagged']}/{f['volumes']['n']}"
    )
    for key, groups in f["kaggle_test_flagged_by_stratum"].items():
        shown = ", ".join(f"{v} {g['flagged']:.2f} (n={g['n']})" for v, g in groups.items())
        print(f"kaggle_test flagged by {key}: {shown}")


def measure(args: argparse.Namespace, size: dict[str, Any], work: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    run, data = (args.run, args.data) if args.run else train(work, size, args.seed, args.threads)
    t_train = time.perf_counter() - t0
    kaggle_test = work / "kaggle-test"
    synthesize_kaggle(count=size["kaggle_test"], out=kaggle_test, difficulty="easy",
                      seed=args.seed, workers=2)  # fmt: skip
    predictor = Predictor.from_run(run)
    sets, extra = in_domain_sets(predictor, data, kaggle_test)
    ood = ood_set(work, size, args.seed + 1)
    for kind in OUT_OF_DOMAIN:
        chosen = [i for i in ood if i.kind == kind]
        sets[kind] = rows(kind, score_items(predictor, chosen), predictor.temperature)
    found = figures(sets, extra["volumes"], predictor.domain.stats)
    found["kaggle_test_flagged_by_stratum"] = extra["kaggle_test_flagged_by_stratum"]
    return {
        "quick": args.quick,
        "run": str(run),
        "figures": found,
        "mr_small": mr_small(predictor),
        "seconds": {"train": round(t_train, 1), "total": round(time.perf_counter() - t0, 1)},
        "cpu": cpu(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="a smaller model and cohort (< 2 min)")
    ap.add_argument("--run", type=Path, help="a finished run to measure (default: train one)")
    ap.add_argument("--data", type=Path, help="the run's data folder (with --run)")
    ap.add_argument("--work", type=Path, help="keep data, run and images here (default: temp)")
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument("--seed", type=int, default=0)
    # One thread: on a shared 2-core machine two OpenMP threads per process run ~10× slower.
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if (args.run is None) != (args.data is None):
        ap.error("--run and --data go together")
    if args.work is not None and args.work.exists() and any(args.work.iterdir()):
        ap.error(f"--work {args.work}: not empty")
    size = SIZES["quick" if args.quick else "full"]
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        result = measure(args, size, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="tumorscope-ood-") as tmp:
            result = measure(args, size, Path(tmp))
    print_table(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ood.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
