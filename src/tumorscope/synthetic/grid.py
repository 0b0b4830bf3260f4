"""PNG grids of example slices (the figures in ``docs/synthetic.md``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tumorscope.data.types import BRAIN_CHANNELS
from tumorscope.synthetic.brain import render_brain
from tumorscope.synthetic.cohort import sample_cohort
from tumorscope.synthetic.kaggle import render_kaggle, sample_kaggle
from tumorscope.synthetic.petct import render_petct
from tumorscope.synthetic.presets import check_profile, get_preset

logger = logging.getLogger(__name__)

#: Overlay colours of BraTS labels (RGB 0–1): NCR red, ED green, ET yellow; HECKTOR GTVp red, GTVn cyan.
BRATS_COLOURS = {1: (0.9, 0.15, 0.1), 2: (0.2, 0.8, 0.2), 4: (1.0, 0.9, 0.1)}
HECKTOR_COLOURS = {1: (0.9, 0.15, 0.1), 2: (0.1, 0.8, 0.9)}


def _window(a: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    if lo is None or hi is None:
        fg = a[a > 0]
        lo, hi = 0.0, float(np.percentile(fg, 99.5)) if fg.size else 1.0
    return np.clip((a.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def _overlay(
    grey: np.ndarray, labels: np.ndarray, colours: dict[int, tuple[float, float, float]]
) -> np.ndarray:
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for value, colour in colours.items():
        m = labels == value
        rgb[m] = 0.45 * rgb[m] + 0.55 * np.asarray(colour)
    return rgb


def _axial(vol: np.ndarray, z: int) -> np.ndarray:
    """Axial slice for display: anterior up, patient's right on the left (radiological)."""
    return np.rot90(vol[:, :, z])


def _crop(images: list[np.ndarray], body: np.ndarray, margin: int = 6) -> list[np.ndarray]:
    """Crop 2D images to the bounding box of ``body`` (same shape) plus a margin, for display."""
    idx = np.argwhere(body)
    if idx.size == 0:
        return images
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = idx.max(0) + margin + 1
    return [im[lo[0] : hi[0], lo[1] : hi[1]] for im in images]


def _coronal(vol: np.ndarray, y: int) -> np.ndarray:
    return np.rot90(vol[:, y, :])


def example_grid(
    *,
    difficulty: str,
    out_png: str | Path,
    seed: int = 0,
    profile: str = "brain-mri",
    patients: int = 4,
    shape: tuple[int, int, int] | None = None,
) -> Path:
    """Write a PNG grid of example slices of a preset.

    Brain: one row per patient (FLAIR, T1, T1ce, T2, labels on FLAIR; axial slice through
    the largest tumour cross-section) plus a row of Kaggle-style images. PET/CT: one row per
    patient (CT, PET, fused, labels; axial and coronal through the primary tumour).

    Args:
        difficulty: ``easy``, ``standard`` or ``hard``.
        out_png: PNG file to write.
        seed: Cohort seed.
        profile: ``brain-mri`` or ``petct``.
        patients: Rows of patients.
        shape: Volume grid (default: the generator's full size).

    Returns:
        The PNG path.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state

    check_profile(profile)
    get_preset(difficulty)
    out_png = Path(out_png)
    cohort = sample_cohort(profile=profile, patients=patients, difficulty=difficulty, seed=seed)
    rows: list[list[tuple[str, np.ndarray]]] = []
    aspect = 1.0  # display height/width of a coronal pixel (PET/CT voxels are anisotropic)
    if profile == "brain-mri":
        for p in cohort:
            vol = render_brain(p, shape)
            z = int(np.argmax((vol.seg > 0).sum(axis=(0, 1))))
            flair = _window(_axial(vol.images["flair"], z))
            extras = []
            if any(not les.enhancing for les in p.lesions):
                extras.append("non-enh.")
            if p.mimics:
                extras.append(f"{len(p.mimics)} mimics")
            if p.anatomy.ghosting:
                extras.append("ghosting")
            label = f"{p.patient_id[-3:]}: WT {np.count_nonzero(vol.seg) / 1000:.1f} mL {' '.join(extras)}"
            row = [
                (f"{label}\n{name}" if i == 0 else name, _window(_axial(vol.images[name], z)))
                for i, name in enumerate(BRAIN_CHANNELS)
            ]
            row.append(("labels (NCR/ED/ET)", _overlay(flair, _axial(vol.seg, z), BRATS_COLOURS)))
            rows.append(row)
        kag = sample_kaggle(count=5, difficulty=difficulty, seed=seed)
        rows.append(
            [
                (
                    f"Kaggle {kp.filename} {kp.orientation} {kp.contrast}",
                    np.asarray(render_kaggle(kp).convert("L"), dtype=np.float32) / 255.0,
                )
                for kp in kag
            ]
        )
    else:
        for p in cohort:
            pv = render_petct(p, shape)
            lab = pv.label
            z = int(np.argmax((lab == 1).sum(axis=(0, 1))))
            y = int(np.argmax((lab == 1).sum(axis=(0, 2))))
            pet = np.kron(pv.pet, np.ones((2, 2, 2), dtype=np.float32))
            pet = np.pad(
                pet, [(0, max(0, n - m)) for n, m in zip(pv.ct.shape, pet.shape, strict=True)]
            )[: pv.ct.shape[0], : pv.ct.shape[1], : pv.ct.shape[2]]
            ct_ax = _window(_axial(pv.ct, z), -250.0, 350.0)
            pet_ax = _window(_axial(pet, z), 0.0, 8.0)
            fused = (
                np.repeat(ct_ax[..., None], 3, -1) * 0.6
                + np.stack([pet_ax, pet_ax * 0.4, pet_ax * 0.1], -1) * 0.6
            )
            axial = _crop(
                [
                    ct_ax,
                    pet_ax,
                    np.clip(fused, 0, 1),
                    _overlay(ct_ax, _axial(lab, z), HECKTOR_COLOURS),
                ],
                _axial(pv.ct, z) > -500,
            )
            coronal = _crop(
                [_window(_coronal(pv.ct, y), -250.0, 350.0), _window(_coronal(pet, y), 0.0, 8.0)],
                _coronal(pv.ct, y) > -500,
            )
            titles = [f"{p.patient_id}: CT", "PET (SUV 0–8)", "PET/CT", "GTVp / GTVn"]
            rows.append(
                [
                    *zip(titles, axial, strict=True),
                    *zip(["coronal CT", "coronal PET"], coronal, strict=True),
                ]
            )
            aspect = pv.ct_spacing[2] / pv.ct_spacing[0]
    ncols = max(len(r) for r in rows)
    fig = Figure(figsize=(1.9 * ncols, 2.0 * len(rows)), dpi=72)
    for r, row in enumerate(rows):
        for c, (title, img) in enumerate(row):
            ax = fig.add_subplot(len(rows), ncols, r * ncols + c + 1)
            coronal_view = profile == "petct" and c >= 4
            ax.imshow(
                img,
                cmap="gray",
                vmin=0.0,
                vmax=1.0,
                interpolation="antialiased",
                aspect=aspect if coronal_view else 1.0,
            )
            ax.set_title(title, fontsize=6)
            ax.axis("off")
    fig.suptitle(f"tumorscope synthetic {profile} — {difficulty} (seed {seed})", fontsize=8)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, format="png")
    logger.info("wrote %s", out_png)
    return out_png
