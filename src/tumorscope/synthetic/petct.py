"""Head-and-neck PET/CT phantoms in the HECKTOR 2022 layout.

The body is analytic (no template ships for it): an elliptic outline whose size varies
from the shoulders to the vertex, a subcutaneous fat layer, muscle, the airway, the
cervical spine with its canal, the mandible and the skull with the brain inside, in
Hounsfield units. PET (SUV) has physiological uptake (brain, tonsils, parotids, marrow)
plus hot, heterogeneous primary tumours and nodes and, in harder presets, unlabelled
inflammatory hot spots; it is blurred to PET resolution, noisy, and written on its own
coarser grid (as HECKTOR ships it). Labels: 1 = GTVp, 2 = GTVn, on the CT grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from tumorscope.synthetic.anatomy import forward_matrix
from tumorscope.synthetic.lesions import make_shape, memberships
from tumorscope.synthetic.params import PatientParams

#: Default CT grid and its field of view (mm); PET uses half the matrix on the same FOV.
PETCT_SHAPE: tuple[int, int, int] = (192, 192, 128)
PETCT_FOV_MM: tuple[float, float, float] = (384.0, 384.0, 320.0)
#: Body outline along z (mm): semi-axes and antero-posterior centre of the cross-section.
_Z = np.array([-160, -100, -70, -40, 0, 30, 60, 100, 130, 150, 165], dtype=np.float32)
_AX = np.array([175, 170, 90, 62, 60, 68, 74, 74, 62, 35, 1], dtype=np.float32)
_AY = np.array([105, 100, 75, 62, 64, 82, 92, 92, 78, 45, 1], dtype=np.float32)
_Y0 = np.array([-15, -15, -5, -5, 5, 12, 8, 5, 5, 5, 5], dtype=np.float32)
#: Anchor of the primary tumour (oropharynx) and of the neck nodes, canonical mm.
PRIMARY_ANCHOR = np.array([0.0, 22.0, 5.0])
NODE_ANCHOR = np.array([0.0, 5.0, 0.0])


@dataclass(frozen=True)
class PetCtVolume:
    """A rendered PET/CT patient in RAS voxel order.

    Attributes:
        ct: ``(X, Y, Z)`` int16 Hounsfield units.
        pet: ``(X//2, Y//2, Z//2)`` float32 SUV, on the coarser PET grid.
        label: ``(X, Y, Z)`` uint8, 1 = GTVp, 2 = GTVn.
        ct_spacing: CT voxel size, mm.
        pet_spacing: PET voxel size, mm.
    """

    ct: np.ndarray
    pet: np.ndarray
    label: np.ndarray
    ct_spacing: tuple[float, float, float]
    pet_spacing: tuple[float, float, float]


def _canonical(
    params: PatientParams, shape: tuple[int, int, int]
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Canonical body coordinates ``(3, X, Y, Z)`` (mm) of an output grid, and its spacing."""
    sx, sy, sz = (f / n for f, n in zip(PETCT_FOV_MM, shape, strict=True))
    spacing = (sx, sy, sz)
    axes = [
        ((np.arange(n) - (n - 1) / 2.0) * s - sh).astype(np.float32)
        for n, s, sh in zip(shape, spacing, params.anatomy.shift_mm, strict=True)
    ]
    inv = np.linalg.inv(forward_matrix(params.anatomy)).astype(np.float32)
    c = np.empty((3, *shape), dtype=np.float32)
    for i in range(3):
        c[i] = (
            inv[i, 0] * axes[0][:, None, None]
            + inv[i, 1] * axes[1][None, :, None]
            + inv[i, 2] * axes[2][None, None, :]
        )
    return c, spacing


def _soft(inside_mm: np.ndarray, width: float) -> np.ndarray:
    """Partial-volume membership from a signed depth (mm, positive inside)."""
    return np.clip(0.5 + inside_mm / np.float32(width), 0.0, 1.0)


def _tissues(c: np.ndarray, width: float) -> dict[str, np.ndarray]:
    """Fractional tissue maps at canonical points ``(3, *S)``."""
    x, y, z = c
    ax, ay, y0 = (np.interp(z, _Z, v).astype(np.float32) for v in (_AX, _AY, _Y0))
    r = np.sqrt((x / ax) ** 2 + ((y - y0) / ay) ** 2)
    depth = (1.0 - r) * np.minimum(ax, ay)  # approximate distance inside the outline, mm
    body = _soft(depth, width) * _soft(165.0 - z, width)
    fat = body * np.clip(1.0 - depth / 9.0, 0.0, 1.0)
    air_r = np.sqrt(x**2 + (y - (y0 + 18.0)) ** 2)
    airway = _soft(9.0 - air_r, width) * _soft(25.0 - z, width)
    spine_y = y0 - 28.0
    spine_r = np.sqrt(x**2 + (y - spine_y) ** 2)
    disc = 0.5 + 0.5 * np.cos(2.0 * np.pi * z / 18.0)
    vert = _soft(15.0 - spine_r, width) * _soft(30.0 - z, width) * np.clip(disc * 3.0, 0.0, 1.0)
    canal = _soft(6.5 - np.sqrt(x**2 + (y - spine_y + 17.0) ** 2), width) * _soft(40.0 - z, width)
    mand_r = np.sqrt((x / 48.0) ** 2 + ((y - y0 - 10.0) / 55.0) ** 2)
    mandible = _soft(0.06 - np.abs(mand_r - 1.0), width / 50.0) * _soft(y - y0 - 10.0, width)
    mandible = mandible * _soft(z - 0.0, width) * _soft(28.0 - z, width)
    hz = (z - 75.0) / 82.0
    head_r = np.sqrt((x / 70.0) ** 2 + ((y - 5.0) / 86.0) ** 2 + hz**2)
    skull = _soft(0.08 - np.abs(head_r - 0.95), width / 80.0) * _soft(z - 30.0, width)
    brain = _soft(0.87 - head_r, width / 80.0) * _soft(z - 30.0, width)
    bone = np.maximum.reduce([vert, mandible, skull]) * (1.0 - canal)
    tonsil = sum(
        _soft(7.0 - np.sqrt((x - s * 13.0) ** 2 + (y - y0 - 24.0) ** 2 + (z - 8.0) ** 2), width)
        for s in (-1, 1)
    )
    parotid = sum(
        _soft(
            11.0 - np.sqrt(((x - s * 52.0) / 1.0) ** 2 + (y - y0) ** 2 + ((z - 30.0) / 1.6) ** 2),
            width,
        )
        for s in (-1, 1)
    )
    return {
        "body": body * (1.0 - airway),
        "outline": body,
        "fat": fat,
        "bone": bone * body,
        "marrow": vert * body,
        "canal": canal * body,
        "brain": brain * body,
        "tonsil": np.asarray(tonsil) * body,
        "parotid": np.asarray(parotid) * body,
    }


def _lesion_maps(
    params: PatientParams, c: np.ndarray, spacing: tuple[float, float, float]
) -> list[tuple[str, float, tuple[slice, ...], np.ndarray, np.ndarray]]:
    """Per lesion: kind, SUVmax, the grid box it can touch, and its solid and necrotic-core
    memberships inside that box (evaluated there only: lesions are small, the grid is not).
    """
    out = []
    fwd = forward_matrix(params.anatomy)
    width = float(max(spacing))
    for les in (*params.lesions, *params.mimics):
        anchor = PRIMARY_ANCHOR if les.kind == "primary" else NODE_ANCHOR
        shape = make_shape(les, anchor + np.asarray(les.offset_mm))
        centre_mm = fwd @ shape.centre + np.asarray(params.anatomy.shift_mm)
        half_mm = shape.extent_mm * 1.5 * max(params.anatomy.scale) + 2.0 * width
        box = []
        for a in range(3):
            n = c.shape[a + 1]
            mid = centre_mm[a] / spacing[a] + (n - 1) / 2.0
            lo, hi = (
                int(np.floor(mid - half_mm / spacing[a])),
                int(np.ceil(mid + half_mm / spacing[a])) + 1,
            )
            box.append(slice(min(max(lo, 0), n), min(max(hi, 0), n)))
        m = memberships(shape, les, c[(slice(None), *box)], None, width)
        out.append((les.kind, les.uptake, tuple(box), m["solid"], m["core"]))
    return out


def render_petct(params: PatientParams, shape: tuple[int, int, int] | None = None) -> PetCtVolume:
    """Render one HECKTOR-style patient: CT (HU), PET (SUV, half matrix) and labels.

    Args:
        params: The patient (profile ``petct``).
        shape: CT grid; default :data:`PETCT_SHAPE` on a 384×384×320 mm field of view.
    """
    shape = shape or PETCT_SHAPE
    rng = np.random.default_rng(params.anatomy.render_seed)
    jit = params.anatomy.contrast_jitter
    c, spacing = _canonical(params, shape)
    width = float(max(spacing))
    t = _tissues(c, width)
    soft_hu = 40.0 * jit[0]
    ct = -1000.0 + t["body"] * (1000.0 + soft_hu) + t["fat"] * (-100.0 - soft_hu)
    ct += t["bone"] * (700.0 * jit[1] - soft_hu) + t["canal"] * (15.0 - soft_hu) * (1.0 - t["bone"])
    label = np.zeros(shape, dtype=np.uint8)
    for kind, _suv, box, solid, _core in _lesion_maps(params, c, spacing):
        if kind == "mimic":
            continue
        # The tumour is soft tissue (about 55 HU) that may bulge into the airway.
        outline = t["outline"][box]
        tissue = solid * outline * (np.float32(1.0) - t["bone"][box])
        ct[box] += tissue * (np.float32(55.0) - ct[box])
        sub = label[box]
        sub[(solid > 0.5) & (outline > 0.5) & (sub == 0)] = 1 if kind == "primary" else 2
    ct += (
        rng.standard_normal(shape, dtype=np.float32)
        * np.float32(250.0 * params.anatomy.noise)
        * (t["body"] > 0.05)
    )
    ct_i16 = np.clip(np.rint(ct), -1024, 3071).astype(np.int16)
    del c, t
    pet_shape = (max(4, shape[0] // 2), max(4, shape[1] // 2), max(4, shape[2] // 2))
    pc, pet_spacing = _canonical(params, pet_shape)
    pt = _tissues(pc, float(max(pet_spacing)))
    suv = pt["body"] * np.float32(0.9 * jit[2]) - pt["fat"] * np.float32(0.5)
    suv += pt["marrow"] * np.float32(0.8) + pt["brain"] * np.float32(6.5 * jit[3])
    suv += pt["tonsil"] * np.float32(2.2) + pt["parotid"] * np.float32(1.4)
    for kind, suv_max, box, solid, core in _lesion_maps(params, pc, pet_spacing):
        texture = np.float32(0.7) + np.float32(0.3) * rng.random(solid.shape, dtype=np.float32)
        hot = solid * np.float32(suv_max) * texture * (np.float32(1.0) - np.float32(0.75) * core)
        if kind == "mimic":
            hot *= pt["body"][box]
        np.maximum(suv[box], hot, out=suv[box])
    fwhm_mm = 6.0
    suv = ndi.gaussian_filter(suv, [fwhm_mm / 2.355 / s for s in pet_spacing])
    noise = rng.standard_normal(suv.shape, dtype=np.float32) * np.float32(
        params.anatomy.noise * 3.0
    )
    suv = np.clip(suv + noise * np.sqrt(np.maximum(suv, 0.0)), 0.0, None) * np.float32(
        params.anatomy.gains[0]
    )
    return PetCtVolume(
        ct=ct_i16,
        pet=suv.astype(np.float32),
        label=label,
        ct_spacing=spacing,
        pet_spacing=pet_spacing,
    )
