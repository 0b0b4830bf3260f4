"""On-disk slice caches and :func:`prepare`, which builds them and the patient splits.

One cache folder per (source, files of that source, preprocessing spec) under
``OUT/cache/``, named ``<source>-<spec hash>-<files digest>``, holding

- ``images.npy`` ``(N, C, S, S)`` float16/float32 and ``masks.npy`` ``(N, R, S, S)`` uint8
  (only for sources with masks), written through ``np.lib.format.open_memmap``;
  ``alternates.npy`` ``(N, K, S, S)``: each slice in the ``spec.train_contrasts`` (zeros
  where the case lacks one);
- ``slices.csv``: one row per slice (patient_id, source, slice_index, tumour, has_tumour,
  tumour_type, has_mask, foreground, sha1 of the source file for 2D images, plane: 0 axial,
  1 coronal, 2 sagittal, contrasts: bit k for ``train_contrasts[k]``); ``restore.json``
  (each volume's canonical shape and crop box); ``spec.json`` and ``meta.json`` (last).

A cache is built in a temporary folder and renamed into place (an interrupted build is
never reused); the same spec, files and :data:`CONTENT_VERSION` reuse it.
``OUT/splits.json`` and ``OUT/prepared.json`` describe the whole prepared data set.

``OUT/tumorscope-cache.json`` (format, version, spec hash) marks ``OUT`` as a cache folder
tumorscope made; a folder without it is used only when absent or empty (a user's own
``prepared.json`` or ``splits.json`` is never read or written).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tumorscope.config import Config
from tumorscope.data.cut import case_rows, volume_job
from tumorscope.data.imagefolder import load_image
from tumorscope.data.layout import discover
from tumorscope.data.layouts import LAYOUTS
from tumorscope.data.limits import check_disk_space
from tumorscope.data.prepared import (
    CACHE_DIR,
    PREPARED_FILE,
    SLICE_COLUMNS,
    SPLITS_FILE,
    PreparedData,
    assemble,
)
from tumorscope.data.spec import IMAGE_CHANNEL, PreprocessSpec
from tumorscope.data.transforms import prepare_image
from tumorscope.data.types import Case, DataError, DatasetIndex, ImageItem
from tumorscope.fileio import atomic_write_bytes, atomic_write_json, read_marker

log = logging.getLogger(__name__)


Progress = Callable[[int, int, str], None]
"""``progress(done, total, message)`` called after each case or image."""

CACHE_MARKER = "tumorscope-cache.json"
_MARKER_FORMAT = "tumorscope-cache"


def cache_marker(out: Path) -> dict[str, Any] | None:
    """The marker of cache folder ``out``; None for an absent or empty folder.

    Raises:
        DataError: ``out`` is not a cache tumorscope made, naming the user's
            ``prepared.json``/``splits.json`` (or the marker, or the folder).
    """
    never = "never read or replaced; name an empty or new cache folder"
    try:
        found = read_marker(out / CACHE_MARKER, _MARKER_FORMAT)
    except ValueError as err:
        raise DataError(out / CACHE_MARKER, f"{err}; the folder is {never}") from None
    if found is None and os.path.lexists(out) and (not out.is_dir() or any(out.iterdir())):
        names = (PREPARED_FILE, SPLITS_FILE)
        user = next((out / n for n in names if os.path.lexists(out / n)), out)
        raise DataError(user, f"not written by tumorscope (no {CACHE_MARKER} in {out}); {never}")
    return found


def _mark(out: Path, spec: PreprocessSpec) -> None:
    marker = {"format": _MARKER_FORMAT, "version": 1, "spec_hash": spec.hash()}
    if cache_marker(out) != marker:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / CACHE_MARKER, marker)


@dataclass(frozen=True)
class _Group:
    source: str
    cases: tuple[Case, ...] = ()
    images: tuple[ImageItem, ...] = ()

    def files(self) -> list[Path]:
        out: list[Path] = []
        for c in self.cases:
            out.extend(c.channels[k] for k in sorted(c.channels))
            if c.mask is not None:
                out.append(c.mask)
        out.extend(it.path for it in self.images)
        return out


CONTENT_VERSION = 3  # bumped when preprocessing writes otherwise (3: planes and contrasts)


def _fingerprint(paths: Sequence[Path]) -> str:
    """Digest of resolved paths, sizes and modification times (cheap; no file reads)."""
    h = hashlib.sha256(f"content-{CONTENT_VERSION}\n".encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes(), usedforsecurity=False).hexdigest()


def cache_name(source: str, spec: PreprocessSpec, files: Sequence[Path]) -> str:
    """Folder name of the cache of ``files`` of one source under ``spec``."""
    return f"{source}-{spec.hash()}-{_fingerprint(files)}"


def is_complete(folder: Path) -> bool:
    """True when a cache folder was fully written (``meta.json`` is written last)."""
    return (folder / "meta.json").is_file() and (folder / "images.npy").is_file()


def _shrink(tmp: Path, name: str, n: int) -> None:
    """Rewrite ``tmp/name`` (an over-allocated ``.npy``) with its first ``n`` rows, in chunks."""
    big = np.load(tmp / name, mmap_mode="r")
    if big.shape[0] == n:
        return
    small = np.lib.format.open_memmap(
        tmp / f"{name}.part", mode="w+", dtype=big.dtype, shape=(n, *big.shape[1:])
    )
    for a in range(0, n, 256):
        small[a : a + 256] = big[a : min(n, a + 256)]
    small.flush()
    del small, big
    os.replace(tmp / f"{name}.part", tmp / name)


def _alloc(path: Path, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if shape[0] == 0:  # mmap of an empty file fails; a header-only .npy is enough
        np.save(path, np.zeros(shape, dtype=dtype))
        return np.zeros(shape, dtype=dtype)
    check_disk_space(path, int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)


def _init_worker() -> None:
    torch.set_num_threads(1)


def _pool(workers: int) -> ProcessPoolExecutor:
    # spawn, not fork: a forked child of a process that already ran OpenMP (torch) can hang.
    ctx = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker)


def _flush(*arrays: np.ndarray | None) -> None:
    for a in arrays:
        if isinstance(a, np.memmap):
            a.flush()


def build_cache(
    group_source: str,
    cases: Sequence[Case],
    images: Sequence[ImageItem],
    spec: PreprocessSpec,
    folder: str | Path,
    *,
    max_voxels: int = 2**27,
    progress: Progress | None = None,
    workers: int = 0,
) -> list[str]:
    """Preprocess one source's cases or images into a cache folder (atomically).

    Args:
        group_source: Source layout name; ``cases`` (volumes) or ``images`` (2D items) of it.
        spec: Preprocessing spec.
        folder: Final cache folder; built as ``.tmp-<name>-<pid>`` beside it, then renamed.
        max_voxels: Largest volume accepted.
        progress: Optional ``progress(done, total, message)``.
        workers: Processes that load and preprocess volumes (0 or 1: this process).

    Returns:
        Problems (``"PATH: fault"``) of cases or images that were skipped.
    """
    folder = Path(folder)
    tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    C, R, S = len(spec.channels), len(spec.regions), spec.image_size
    per_case = spec.slices_per_patient + spec.plane_slices * (len(spec.planes) - 1)
    n_max = len(cases) * per_case + len(images)
    has_masks = any(c.mask is not None for c in cases)
    imgs = _alloc(tmp / "images.npy", spec.cache_dtype, (n_max, C, S, S))
    msks = _alloc(tmp / "masks.npy", "uint8", (n_max, R, S, S)) if has_masks else None
    K = len(spec.train_contrasts)
    alts = _alloc(tmp / "alternates.npy", spec.cache_dtype, (n_max, K, S, S)) if K else None
    rows: list[dict[str, Any]] = []
    restore: dict[str, Any] = {}
    problems: list[str] = []
    total, n = len(cases) + len(images), 0
    jobs = [(case, spec, group_source, max_voxels) for case in cases]
    pool = _pool(workers) if workers > 1 and len(cases) > 1 else None
    results = pool.map(volume_job, jobs) if pool is not None else map(volume_job, jobs)
    for i, (case, (cut, fault)) in enumerate(zip(cases, results, strict=True)):
        if cut is None:
            problems.append(str(fault))
            log.warning("skipped: %s", fault)
            continue
        if cut.problem is not None:
            problems.append(cut.problem)
            log.warning("%s", cut.problem)
        pieces = [(cut.axial.images, cut.axial.masks, cut.alternates)]
        pieces += [(p.images, p.masks, p.alternates) for p in cut.planes]
        for images_k, masks_k, alternates_k in pieces:
            k = images_k.shape[0]
            imgs[n : n + k] = images_k
            if msks is not None and masks_k is not None:
                msks[n : n + k] = masks_k
            if alts is not None:
                alts[n : n + k] = 0 if alternates_k is None else alternates_k
            n += k
        rows.extend(case_rows(cut, case.patient_id, group_source))
        restore[case.patient_id] = {
            "shape": list(cut.axial.restore.shape),
            "box": list(cut.axial.restore.box),
        }
        if i % 32 == 31:  # written pages become clean and reclaimable: build memory stays flat
            _flush(imgs, msks, alts)
        if progress is not None:
            progress(i + 1, total, case.patient_id)
    for i, item in enumerate(images):
        try:
            arr, _ = load_image(item)
            imgs[n] = prepare_image(arr, spec, path=str(item.path)).image
        except DataError as e:
            problems.append(str(e))
            log.warning("skipped: %s", e)
            continue
        if msks is not None:
            msks[n] = 0
        if alts is not None:
            alts[n] = 0
        rows.append(
            {
                "patient_id": item.patient_id,
                "source": group_source,
                "slice_index": -1,
                "tumour": int(item.tumour),
                "has_tumour": True,
                "tumour_type": -1 if item.tumour_type is None else int(item.tumour_type),
                "has_mask": False,
                "foreground": 1.0,
                "sha1": _sha1(item.path),
                "plane": 0,
                "contrasts": 0,
            }
        )
        n += 1
        if i % 512 == 511:
            _flush(imgs, msks, alts)
        if progress is not None:
            progress(len(cases) + i + 1, total, item.patient_id)
    if pool is not None:
        pool.shutdown()
    _flush(imgs, msks, alts)
    del imgs, msks, alts
    _shrink(tmp, "images.npy", n)
    if has_masks:
        _shrink(tmp, "masks.npy", n)
    if K:
        _shrink(tmp, "alternates.npy", n)
    pd.DataFrame(rows, columns=list(SLICE_COLUMNS)).to_csv(tmp / "slices.csv", index=False)
    (tmp / "restore.json").write_text(json.dumps(restore))
    (tmp / "spec.json").write_text(json.dumps(spec.to_dict(), indent=1))
    meta = {
        "source": group_source,
        "n_slices": n,
        "n_patients": len({r["patient_id"] for r in rows}),
        "has_masks": has_masks,
        "build_seconds": round(time.perf_counter() - t0, 3),
        "problems": problems,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    if folder.exists():  # another process finished first; keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, folder)
    return problems


def _groups(index: DatasetIndex, cfg: Config, spec: PreprocessSpec) -> list[_Group]:
    wanted = set(cfg.data.sources)
    by_source: dict[str, _Group] = {}
    for c in index.cases:
        g = by_source.setdefault(c.source, _Group(c.source))
        by_source[c.source] = _Group(c.source, (*g.cases, c), g.images)
    for it in index.images:
        g = by_source.setdefault(it.source, _Group(it.source))
        by_source[it.source] = _Group(it.source, g.cases, (*g.images, it))
    out = []
    for source, g in sorted(by_source.items()):
        layout = LAYOUTS.get(source)
        names = {source, *(layout.aliases if layout is not None else ())}
        if wanted and not names & wanted:
            log.info("source %s not in data.sources %s; left out", source, sorted(wanted))
            continue
        if g.images and len(spec.channels) > 1 and spec.missing_channels == "error":
            log.warning(
                "source %s skipped: its 2D images have one channel but data.channels is %s "
                "(set data.missing_channels: zero_fill to use them)",
                source,
                list(spec.channels),
            )
            continue
        if g.images and IMAGE_CHANNEL not in spec.channels:
            log.warning(
                "source %s skipped: 2D images need a %s channel, have %s",
                source,
                IMAGE_CHANNEL,
                list(spec.channels),
            )
            continue
        out.append(g)
    return out


def prepare(
    roots: Sequence[str | Path], cfg: Config, out: str | Path, *, progress: Progress | None = None
) -> PreparedData:
    """Discover data, build or reuse slice caches, and write ``splits.json``.

    Args:
        roots: Data folders (dataset roots or up to two levels above).
        cfg: Experiment config (``data`` section, ``model.regions``, ``data.split_seed`` or ``runtime.seed`` for the splits).
        out: Output folder: ``cache/``, ``splits.json``, ``prepared.json``.
        progress: ``progress(done, total, message)`` per case/image built (volumes by
            ``runtime.num_workers`` processes when > 1).

    Returns:
        The :class:`PreparedData` (``built``/``reused`` list the cache folders).

    Raises:
        DataError: A root is missing, nothing usable was found, or ``out`` is not a cache
            folder tumorscope made (:func:`cache_marker`; checked before anything is read).
    """
    out = Path(out)
    cache_marker(out)
    spec = PreprocessSpec.from_config(cfg)
    index = discover([Path(r) for r in roots], max_voxels=cfg.data.max_voxels)
    problems = [str(p) for p in index.problems]
    for p in index.problems:
        log.warning("%s", p)
    groups = _groups(index, cfg, spec)
    if not groups:
        raise DataError(", ".join(str(r) for r in roots) or "<no roots>", "no usable data found")
    _mark(out, spec)
    cache_root = out / CACHE_DIR
    cache_root.mkdir(parents=True, exist_ok=True)
    names, built, reused = [], [], []
    for g in groups:
        name = cache_name(g.source, spec, g.files())
        folder = cache_root / name
        if is_complete(folder):
            reused.append(name)
            problems.extend(json.loads((folder / "meta.json").read_text()).get("problems", []))
            log.info("reusing cache %s", folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)
            log.info("building cache %s (%d cases, %d images)", folder, len(g.cases), len(g.images))
            problems.extend(
                build_cache(
                    g.source,
                    g.cases,
                    g.images,
                    spec,
                    folder,
                    max_voxels=cfg.data.max_voxels,
                    progress=progress,
                    workers=cfg.runtime.num_workers,
                )
            )
            built.append(name)
        names.append(name)
    state = {
        "spec": spec.to_dict(),
        "caches": names,
        "outcomes": {
            pid: {"time": o.time, "event": bool(o.event), "clinical": dict(o.clinical)}
            for pid, o in sorted(index.outcomes.items())
        },
        "true_risk": dict(sorted(index.true_risk.items())),
        "problems": problems,
    }
    prepared = assemble(out, cfg, spec, names, state, write=True)
    text = json.dumps(state | {"duplicates": prepared.duplicates}, indent=1)
    atomic_write_bytes(out / PREPARED_FILE, text.encode())
    prepared.built, prepared.reused = built, reused
    return prepared


def load_prepared(out: str | Path, cfg: Config) -> PreparedData:
    """Open what :func:`prepare` wrote in ``out`` (no rebuilding, no data folders needed).

    Raises:
        DataError: ``out`` was not prepared, not by tumorscope, or with a different
            preprocessing spec.
    """
    out = Path(out)
    path = out / PREPARED_FILE
    if not path.is_file():
        raise DataError(path, "not found; run `tumorscope data prepare` first")
    if cache_marker(out) is None:
        raise DataError(out / CACHE_MARKER, "not found; not a cache folder tumorscope made")
    state = json.loads(path.read_text())
    spec = PreprocessSpec.from_config(cfg)
    if PreprocessSpec.from_dict(state["spec"]).hash() != spec.hash():
        raise DataError(
            path, "prepared with a different preprocessing spec than the config asks for"
        )
    for name in state["caches"]:
        if not is_complete(out / CACHE_DIR / name):
            raise DataError(out / CACHE_DIR / name, "cache folder missing or incomplete")
    return assemble(out, cfg, spec, state["caches"], state, write=False)
