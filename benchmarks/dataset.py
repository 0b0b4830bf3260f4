"""Dataset benchmark: cache build time and size, what training reads, peak RSS while it reads.

Writes N synthetic BraTS-layout patients (+ Kaggle-style images) with the synthetic
generator when it is available (else a small built-in NIfTI writer), builds the cache
with ``StageData.build`` twice (build, then reuse), and in a fresh subprocess per reader
(``pread``, what training uses, and ``mmap`` for comparison) runs what training reads
through ``StageData``: one pass over every cached slice (``eval_batches``) and an epoch's worth of
training steps (``train_batches``: patient bags, balanced fill, augmentation), reporting
slices/s and the peak resident set size. Prints one JSON object.

    python benchmarks/dataset.py --patients 20
    python benchmarks/dataset.py --patients 200
    python benchmarks/dataset.py --quick
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from machine import cpu, reset_peak, status_mib


def _write_fallback(
    out: Path, patients: int, kaggle: int, shape: tuple[int, int, int], seed: int
) -> str:
    """Minimal BraTS + Kaggle layouts (an ellipsoid 'brain' with a spherical tumour)."""
    import nibabel as nib
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = out / "brats"
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    brain = (grid**2).sum(axis=0) < 0.8
    rows = []
    for i in range(1, patients + 1):
        pid = f"BraTS20_Training_{i:03d}"
        c = rng.uniform(-0.3, 0.3, 3)
        r = rng.uniform(0.1, 0.3)
        d2 = ((grid - c[:, None, None, None]) ** 2).sum(axis=0)
        seg = np.zeros(shape, np.uint8)
        seg[(d2 < r**2) & brain] = 2
        seg[(d2 < (0.6 * r) ** 2) & brain] = 4
        seg[(d2 < (0.3 * r) ** 2) & brain] = 1
        (root / pid).mkdir(parents=True, exist_ok=True)
        for k, mod in enumerate(("flair", "t1", "t1ce", "t2")):
            vol = np.where(brain, 300 + 50 * k + rng.normal(0, 20, shape), 0) + 200 * (seg > 0)
            nib.save(
                nib.Nifti1Image(vol.astype(np.int16), np.eye(4)), root / pid / f"{pid}_{mod}.nii.gz"
            )
        nib.save(nib.Nifti1Image(seg, np.eye(4)), root / pid / f"{pid}_seg.nii.gz")
        days = int(rng.exponential(400)) + 1
        rows.append(
            f"{pid},{rng.uniform(30, 80):.1f},{days if i % 3 else f'ALIVE ({days} days later)'},GTR"
        )
    (root / "survival_info.csv").write_text(
        "Brats20ID,Age,Survival_days,Extent_of_Resection\n" + "\n".join(rows) + "\n"
    )
    for j in range(kaggle):
        folder = out / "kaggle" / ("yes" if j % 2 else "no")
        folder.mkdir(parents=True, exist_ok=True)
        h, w = (int(v) for v in rng.integers(180, 260, 2))
        yy, xx = np.mgrid[:h, :w]
        img = np.where(
            ((yy - h / 2) / (0.45 * h)) ** 2 + ((xx - w / 2) / (0.4 * w)) ** 2 < 1, 120, 0
        )
        img = np.clip(img + rng.normal(0, 10, (h, w)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{j}.jpg", quality=85)
    return "built-in fallback writer"


def generate(out: Path, patients: int, kaggle: int, shape: tuple[int, int, int], seed: int) -> str:
    """Write the data; returns which generator was used."""
    try:
        from tumorscope.synthetic import synthesize
    except ImportError:
        return _write_fallback(out, patients, kaggle, shape, seed)
    synthesize(
        profile="brain-mri",
        patients=patients,
        out=out,
        kaggle=kaggle,
        difficulty="standard",
        seed=seed,
        shape=shape,
    )
    return "tumorscope.synthetic.synthesize"


def _stage_data(out: Path, config: Path, reader: str) -> Any:
    """The ``StageData`` training uses, opened on the cache the parent process built.

    ``mmap`` is a comparison only: ``StageData`` reads with ``pread``, so for ``mmap`` a
    subclass hands out datasets with the other reader (same indices, same batches).
    """
    from tumorscope.config import load_config
    from tumorscope.data.dataset import SliceDataset
    from tumorscope.training.data import StageData

    class MmapStageData(StageData):
        def _dataset(self, split: str, *, train: bool, seed: int = 0) -> Any:
            return SliceDataset(self.prepared, split, train=train, seed=seed, reader="mmap")

    cls = {"pread": StageData, "mmap": MmapStageData}[reader]
    cfg = load_config(config, [f"data.image_size={json.loads((out / 'size.json').read_text())}"])
    return cls.load(cfg=cfg, cache=out / "prepared")


def iterate(out: Path, config: Path, reader: str, batch_size: int) -> dict[str, Any]:
    """What training reads, in one process: one unaugmented pass over every cached slice
    (``eval_batches`` of each split, as validation reads), then an epoch's worth of
    training steps (``train_batches``: patient bags, balanced fill, augmentation); slices/s
    of each, and RSS before/peak during both."""
    import torch

    from tumorscope.config import TASKS, StageConfig

    torch.set_num_threads(1)
    data = _stage_data(out, config, reader)
    stage = StageConfig(name="benchmark", tasks=TASKS, batch_size=batch_size)
    next(iter(data.val_batches_for(TASKS)))  # warm-up: first-batch allocations are not growth
    train = data.train_batches(stage, seed=0)
    next(train)
    base = status_mib("VmRSS")
    exact = reset_peak()
    sampled = base
    t0 = time.perf_counter()
    n = 0
    for split in ("train", "val", "test"):
        for batch in data.eval_batches(split, TASKS):
            n += len(batch)
            sampled = max(sampled, status_mib("VmRSS"))
    dt = time.perf_counter() - t0
    train_slices = len(data.prepared.slice_table("train"))
    steps = max(1, -(-train_slices // batch_size))
    t1 = time.perf_counter()
    m = 0
    for _ in range(steps):
        m += len(next(train))
        sampled = max(sampled, status_mib("VmRSS"))
    dt_train = time.perf_counter() - t1
    peak = status_mib("VmHWM") if exact else sampled
    return {
        "slices": n,
        "seconds": round(dt, 3),
        "slices_per_s": round(n / dt, 1) if dt > 0 else None,
        "rss_before_epoch_mb": round(base, 1),
        "peak_rss_epoch_mb": round(peak, 1),
        "rss_growth_mb": round(peak - base, 1),
        "peak_from": "VmHWM after reset" if exact else "max sampled VmRSS",
        "train_loader_slices_per_s": round(m / dt_train, 1) if dt_train > 0 else None,
        "train_loader_slices": m,
        "train_steps": steps,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--patients", type=int, default=20)
    ap.add_argument("--kaggle", type=int, default=None, help="2D images (default: = patients)")
    ap.add_argument("--shape", default="96,96,64", help="volume shape X,Y,Z")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument(
        "--config", type=Path, default=Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    )
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="6 patients, small volumes")
    ap.add_argument("--workdir", type=Path, default=None, help="keep data and cache here")
    ap.add_argument("--iterate", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--reader", default="pread", choices=("pread", "mmap"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.iterate is not None:
        print(json.dumps(iterate(args.iterate, args.config, args.reader, args.batch_size)))
        return
    if args.quick:
        args.patients, args.shape, args.image_size = 6, "48,48,32", 64
    kaggle = args.patients if args.kaggle is None else args.kaggle
    shape = tuple(int(v) for v in args.shape.split(","))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ts-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        from tumorscope.config import load_config
        from tumorscope.training.data import StageData

        t0 = time.perf_counter()
        generator = generate(work / "data", args.patients, kaggle, shape, 0)  # type: ignore[arg-type]
        gen_s = time.perf_counter() - t0
        cfg = load_config(args.config, [f"data.image_size={args.image_size}"])
        (work / "size.json").write_text(json.dumps(args.image_size))
        t0 = time.perf_counter()
        prepared = StageData.build(data=[work / "data"], cfg=cfg, cache=work / "prepared").prepared
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = StageData.build(data=[work / "data"], cfg=cfg, cache=work / "prepared").prepared
        reuse_s = time.perf_counter() - t0
        cache_bytes = sum(
            f.stat().st_size for f in (work / "prepared" / "cache").rglob("*") if f.is_file()
        )
        result: dict[str, Any] = {
            "patients": args.patients,
            "kaggle_images": kaggle,
            "volume_shape": list(shape),
            "image_size": args.image_size,
            "generator": generator,
            "generate_seconds": round(gen_s, 2),
            "slices": len(prepared.slices),
            "cache_build_seconds": round(build_s, 2),
            "cache_mb": round(cache_bytes / 2**20, 2),
            "cache_reuse_seconds": round(reuse_s, 2),
            "rebuilt_on_reuse": len(again.built or []),
            "iterate": {},
        }
        for reader in ("pread", "mmap"):
            cmd = [sys.executable, __file__, "--iterate", str(work), "--reader", reader]
            cmd += ["--config", str(args.config), "--batch-size", str(args.batch_size)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            result["iterate"][reader] = json.loads(res.stdout.strip().splitlines()[-1])
        print(json.dumps({**result, "cpu": cpu()}))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
