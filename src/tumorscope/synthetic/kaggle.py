"""Kaggle-style 2D brain-MRI images (``yes/`` and ``no/``) from separate synthetic patients.

Each image is one plane (axial, coronal or sagittal, as in the real set) through a new
synthetic head: the same warped anatomy and lesions as the BraTS patients, plus a skull
and scalp (the Kaggle images are not skull-stripped), one contrast (T1ce, T2 or FLAIR),
a different size and intensity window, and JPEG compression. ``yes`` planes pass through
a tumour; ``no`` patients have none (but may carry mimics).

:func:`write_strata` writes ``strata.csv`` beside the images (``file,label,contrast,plane,
skull,offset_mm``), so benchmarks can break results down by how each image was made.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np
from PIL import Image

from tumorscope.synthetic.anatomy import (
    BRAIN_FOV_MM,
    elastic_field,
    load_atlas,
    output_position_mm,
    sample_maps,
    template_coords_points,
)
from tumorscope.synthetic.brain import lesion_shapes, shade
from tumorscope.synthetic.cohort import STREAM_KAGGLE, patient_rng, sample_brain_patient
from tumorscope.synthetic.lesions import mass_effect
from tumorscope.synthetic.params import LesionParams, PatientParams
from tumorscope.synthetic.presets import get_preset

ORIENTATIONS: tuple[str, ...] = ("axial", "coronal", "sagittal")
#: Contrast index into BRAIN_CHANNELS (flair, t1, t1ce, t2) and its share of the images.
CONTRASTS: dict[str, tuple[int, float]] = {"t1ce": (2, 0.5), "t2": (3, 0.3), "flair": (0, 0.2)}
#: Layers outside the brain: (outer distance in mm, relative intensity per contrast flair, t1, t1ce, t2).
SKULL_LAYERS: tuple[tuple[float, tuple[float, float, float, float]], ...] = (
    (2.5, (0.25, 0.3, 0.32, 2.0)),  # CSF between brain and skull
    (5.5, (0.05, 0.06, 0.06, 0.05)),  # inner table
    (8.0, (0.7, 1.1, 1.1, 0.7)),  # diploe (marrow fat)
    (10.0, (0.05, 0.06, 0.06, 0.05)),  # outer table
    (15.0, (0.9, 1.35, 1.4, 1.05)),  # scalp fat
)
#: Per-image strata file written beside ``yes/`` and ``no/``, and its columns.
STRATA_FILE = "strata.csv"
STRATA_COLUMNS: tuple[str, ...] = ("file", "label", "contrast", "plane", "skull", "offset_mm")


class StrataRow(TypedDict):
    """One ``strata.csv`` row, typed (see :func:`strata_rows`)."""

    file: str
    label: str
    contrast: str
    plane: str
    skull: bool
    offset_mm: float


@dataclass(frozen=True)
class KaggleParams:
    """One Kaggle-style image: its patient and how the plane is taken and stored.

    Attributes:
        patient: The synthetic patient (tumour-free for ``no`` images).
        filename: File name inside ``yes/`` or ``no/``.
        tumour: True for ``yes``.
        orientation: ``axial``, ``coronal`` or ``sagittal``.
        offset_mm: Plane offset from its target: for ``yes``, a fraction of the main
            (largest) lesion's smallest radius; for ``no``, mm from the brain centre.
        size: ``(width, height)`` in pixels.
        fov_mm: Field of view across the larger image side, mm.
        contrast: ``t1ce``, ``t2`` or ``flair``.
        gamma: Display gamma applied before 8-bit quantisation.
        rgb: Stored as 3-channel RGB (else greyscale).
        quality: JPEG quality.
        skull: The image shows skull and scalp (else only the brain, on black).
    """

    patient: PatientParams
    filename: str
    tumour: bool
    orientation: str
    offset_mm: float
    size: tuple[int, int]
    fov_mm: float
    contrast: str
    gamma: float
    rgb: bool
    quality: int
    skull: bool = True


def sample_kaggle(
    *,
    count: int,
    difficulty: str,
    seed: int,
    prefix: str = "",
    stream: int = STREAM_KAGGLE,
    skull_stripped: float = 0.0,
) -> list[KaggleParams]:
    """Sample ``count`` Kaggle images, half with a tumour (``yes``), from their own seed stream.

    Args:
        count: Images; the first ``(count + 1) // 2`` have a tumour.
        difficulty: Preset name.
        seed: Seed.
        prefix: Prepended to every file name (``{prefix}Y1.jpg``) and patient id.
        stream: Seed-sequence stream (``STREAM_KAGGLE``; ``STREAM_KAGGLE_TEST`` for the
            fixed test set).
        skull_stripped: Share of images without skull and scalp (as a skull-stripped
            BraTS slice exported to 2D). At 0 nothing more is drawn, so a stream writes
            the same images as before this option existed.

    Returns:
        One :class:`KaggleParams` per image.
    """
    if not 0.0 <= skull_stripped <= 1.0:
        raise ValueError(f"skull_stripped must be a share in [0, 1], got {skull_stripped}")
    preset = get_preset(difficulty)
    n_yes = (count + 1) // 2
    out = []
    for i in range(count):
        rng = patient_rng(seed, stream, i)
        tumour = i < n_yes
        name = f"{prefix}Y{i + 1}.jpg" if tumour else f"{prefix}N{i - n_yes + 1}.jpg"
        patient = sample_brain_patient(rng, preset, name.split(".")[0], tumour=tumour)
        w = int(rng.integers(200, 513))
        h = w if rng.random() < 0.6 else int(np.clip(w * rng.uniform(0.8, 1.25), 200, 512))
        names = list(CONTRASTS)
        contrast = names[int(rng.choice(len(names), p=[CONTRASTS[n][1] for n in names]))]
        out.append(
            KaggleParams(
                patient=patient,
                filename=name,
                tumour=tumour,
                orientation=ORIENTATIONS[int(rng.choice(3, p=[0.6, 0.2, 0.2]))],
                offset_mm=float(rng.uniform(-0.3, 0.3))
                if tumour
                else float(rng.uniform(-25.0, 30.0)),
                size=(w, h),
                fov_mm=float(rng.uniform(185.0, 240.0)),
                contrast=contrast,
                gamma=float(rng.uniform(0.7, 1.4)),
                rgb=bool(rng.random() < 0.5),
                quality=int(rng.integers(55, 96)),
                skull=not (skull_stripped > 0 and rng.random() < skull_stripped),
            )
        )
    return out


def main_lesion(kp: KaggleParams) -> LesionParams | None:
    """The lesion a ``yes`` plane is aimed at (largest by volume), or None for ``no``."""
    lesions = kp.patient.lesions
    if not (kp.tumour and lesions):
        return None
    return max(lesions, key=lambda les: les.volume_ml)


def plane_offset_mm(kp: KaggleParams) -> float:
    """The plane's offset from its target in mm (what :func:`render_kaggle` applies)."""
    les = main_lesion(kp)
    return kp.offset_mm if les is None else kp.offset_mm * min(les.radii_mm)


def _plane_points(kp: KaggleParams, centre_mm: np.ndarray) -> np.ndarray:
    """Output-space points ``(3, H, W)`` of the image plane, mm; rows run superior/anterior → down."""
    w, h = kp.size
    px = kp.fov_mm / max(w, h)
    cols = (np.arange(w) - (w - 1) / 2.0) * px
    rows = (np.arange(h) - (h - 1) / 2.0) * px
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    pts = np.zeros((3, h, w), dtype=np.float32)
    if (
        kp.orientation == "axial"
    ):  # columns: right→left as radiology shows; rows: anterior→posterior
        pts[0], pts[1], pts[2] = -cc + centre_mm[0], -rr + centre_mm[1], centre_mm[2]
    elif kp.orientation == "coronal":
        pts[0], pts[1], pts[2] = -cc + centre_mm[0], centre_mm[1], -rr + centre_mm[2]
    else:
        pts[0], pts[1], pts[2] = centre_mm[0], cc + centre_mm[1], -rr + centre_mm[2]
    return pts


def render_kaggle(kp: KaggleParams) -> Image.Image:
    """Render one Kaggle-style image (8-bit, greyscale ``L`` or ``RGB``)."""
    atlas = load_atlas()
    p = kp.patient
    rng = np.random.default_rng(p.anatomy.render_seed)
    elastic = elastic_field(p.anatomy, BRAIN_FOV_MM, rng)
    shapes = lesion_shapes(p, atlas)
    axis = {"axial": 2, "coronal": 1, "sagittal": 0}[kp.orientation]
    if kp.tumour and p.lesions:
        main = max(range(len(p.lesions)), key=lambda i: p.lesions[i].volume_ml)
        les, shape = shapes[main]
        target = output_position_mm(p.anatomy, atlas, shape.centre)
        target[axis] += kp.offset_mm * min(les.radii_mm)
    else:
        target = np.array(p.anatomy.shift_mm, dtype=float)
        target[axis] += kp.offset_mm
    centre = np.array(p.anatomy.shift_mm, dtype=float)
    centre[axis] = target[axis]
    pts = _plane_points(kp, centre)
    h, w = pts.shape[1:]
    flat = pts.reshape(3, -1)
    q = template_coords_points(p.anatomy, atlas, flat, elastic)
    q_tissue = q
    for les, shape in shapes:
        if les.kind == "tumour":
            q_tissue = mass_effect(shape, les, q_tissue)
    maps = sample_maps(atlas, q_tissue, skull=kp.skull)
    px = kp.fov_mm / max(w, h)
    images, _seg, _tumour = shade(
        p, maps, q, [(les, shape, None) for les, shape in shapes], width_mm=px
    )
    c = CONTRASTS[kp.contrast][0]
    img = images[c]
    if kp.skull:
        outside = maps["outside"]
        head = np.zeros_like(img)
        inner = 0.0
        for outer, values in SKULL_LAYERS:
            band = np.clip(outside - inner, 0.0, 1.0) * np.clip(outer - outside + 0.5, 0.0, 1.0)
            head += band * np.float32(values[c])
            inner = outer
        img = img + head * (1.0 - maps["brain"])
    img = img.reshape(h, w)
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    coef = rng.normal(0.0, 0.15, 3)
    img = img * np.exp(coef[0] * xx + coef[1] * yy + coef[2] * xx * yy).astype(np.float32)
    sigma = np.float32(p.anatomy.noise)
    img = np.sqrt(
        (img + rng.standard_normal(img.shape, dtype=np.float32) * sigma) ** 2
        + (rng.standard_normal(img.shape, dtype=np.float32) * sigma) ** 2
    )
    top = float(np.percentile(img, 99.7)) or 1.0
    grey = np.clip(img / top, 0.0, 1.0) ** kp.gamma
    arr = np.rint(grey * 255.0).astype(np.uint8)
    im = Image.fromarray(arr, mode="L")
    return im.convert("RGB") if kp.rgb else im


def write_kaggle(kp: KaggleParams, root: Path) -> tuple[Path, int]:
    """Render and write one image into ``root/yes`` or ``root/no``; return ``(path, bytes)``."""
    path = root / ("yes" if kp.tumour else "no") / kp.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    render_kaggle(kp).save(buf, format="JPEG", quality=kp.quality)
    path.write_bytes(buf.getvalue())
    return path, len(buf.getvalue())


def strata_rows(items: Sequence[KaggleParams]) -> list[StrataRow]:
    """One strata row per image, sorted by file (the typed values :func:`read_strata` gives).

    Columns: ``file`` (``yes/Y1.jpg``, relative to the folder root), ``label`` (``yes``/``no``),
    ``contrast``, ``plane`` (the orientation), ``skull`` (bool) and ``offset_mm`` (the plane's
    offset from its target, mm, rounded to 0.1).
    """
    rows: list[StrataRow] = []
    for kp in items:
        label = "yes" if kp.tumour else "no"
        rows.append(
            {
                "file": f"{label}/{kp.filename}",
                "label": label,
                "contrast": kp.contrast,
                "plane": kp.orientation,
                "skull": kp.skull,
                "offset_mm": round(plane_offset_mm(kp), 1) + 0.0,  # no "-0.0"
            }
        )
    return sorted(rows, key=lambda r: r["file"])


def write_strata(root: Path, items: Sequence[KaggleParams]) -> Path:
    """Write ``root/strata.csv`` for ``items`` (see :func:`strata_rows`); return its path."""
    path = Path(root) / STRATA_FILE
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(STRATA_COLUMNS)
        for row in strata_rows(items):
            writer.writerow(
                [
                    row["file"],
                    row["label"],
                    row["contrast"],
                    row["plane"],
                    "yes" if row["skull"] else "no",
                    f"{row['offset_mm']:.1f}",
                ]
            )
    return path


def read_strata(path: str | Path) -> list[StrataRow]:
    """Read a ``strata.csv``: ``skull`` as bool, ``offset_mm`` as float, the rest as text.

    Raises:
        ValueError: A column is missing or a value is malformed (names the file and line).
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in STRATA_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        rows: list[StrataRow] = []
        for line, raw in enumerate(reader, start=2):
            skull = (raw["skull"] or "").strip().lower()
            try:
                if skull not in ("yes", "no"):
                    raise ValueError(f"skull {raw['skull']!r} is not yes or no")
                offset = float(raw["offset_mm"])
            except (TypeError, ValueError) as e:
                raise ValueError(f"{path}: line {line}: {e}") from None
            rows.append(
                {
                    "file": raw["file"],
                    "label": raw["label"],
                    "contrast": raw["contrast"],
                    "plane": raw["plane"],
                    "skull": skull == "yes",
                    "offset_mm": offset,
                }
            )
    return rows


__all__ = [
    "STRATA_COLUMNS",
    "STRATA_FILE",
    "KaggleParams",
    "StrataRow",
    "main_lesion",
    "plane_offset_mm",
    "read_strata",
    "render_kaggle",
    "sample_kaggle",
    "strata_rows",
    "write_kaggle",
    "write_strata",
]
