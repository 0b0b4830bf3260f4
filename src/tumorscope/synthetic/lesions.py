"""Irregular 3D lesion shapes evaluated at arbitrary points (grids or 2D planes).

A lesion is an ellipsoid whose radius is modulated by a few random low-frequency cosine
terms (lobulated, irregular outline); separate terms shape the necrotic core and the
oedema. Memberships ramp linearly across about one voxel, which gives partial-volume
edges. Everything is vectorised over points; nothing here loops over voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tumorscope.synthetic.anatomy import rotation
from tumorscope.synthetic.params import LesionParams

#: Number of cosine terms per irregularity field, and their total relative amplitude.
N_TERMS = 6
AMPLITUDE = {"solid": 0.22, "core": 0.2, "oedema": 0.32}
#: Spread of the wave vectors (per unit normalised radius): lower = smoother lobes.
FREQUENCY = {"solid": 1.5, "core": 1.6, "oedema": 1.15}


@dataclass(frozen=True)
class Irregularity:
    """Random cosine terms ``1 + Σ a_j cos(k_j · u + φ_j)`` on normalised coordinates ``u``."""

    k: np.ndarray  # (N_TERMS, 3)
    a: np.ndarray  # (N_TERMS,)
    phi: np.ndarray  # (N_TERMS,)

    def __call__(self, u: np.ndarray) -> np.ndarray:
        """Radius factor at normalised points ``u`` ``(3, *S)``, shape ``S``."""
        out = np.ones(u.shape[1:], dtype=np.float32)
        for kj, aj, pj in zip(self.k, self.a, self.phi, strict=True):
            out += np.float32(aj) * np.cos(
                kj[0] * u[0] + kj[1] * u[1] + kj[2] * u[2] + np.float32(pj)
            )
        return out


@dataclass(frozen=True)
class LesionShape:
    """Geometry of one lesion in template voxel coordinates (1 mm).

    Attributes:
        centre: ``(3,)`` centre, template voxels.
        rot: ``(3, 3)`` rotation of the ellipsoid axes.
        radii: ``(3,)`` semi-axes, mm.
        fields: Irregularity terms of the ``solid``, ``core`` and ``oedema`` outlines.
    """

    centre: np.ndarray
    rot: np.ndarray
    radii: np.ndarray
    fields: dict[str, Irregularity]

    @property
    def extent_mm(self) -> float:
        """Radius (mm) beyond which no membership of this lesion (incl. oedema) is non-zero."""
        return float(self.radii.max())

    def normalised(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised coordinates ``u`` ``(3, *S)`` and ``|u|`` of template points ``q`` ``(3, *S)``."""
        rel = [q[i] - np.float32(self.centre[i]) for i in range(3)]
        rt = (self.rot.T / self.radii[:, None]).astype(np.float32)
        u = np.stack([rt[i, 0] * rel[0] + rt[i, 1] * rel[1] + rt[i, 2] * rel[2] for i in range(3)])
        return u, np.sqrt((u * u).sum(axis=0))


def make_shape(lesion: LesionParams, centre: np.ndarray) -> LesionShape:
    """Build the :class:`LesionShape` of ``lesion`` centred at template voxel ``centre``."""
    rng = np.random.default_rng(lesion.shape_seed)
    fields = {}
    for name in ("solid", "core", "oedema"):
        a = rng.uniform(0.2, 1.0, N_TERMS)
        fields[name] = Irregularity(
            k=rng.normal(0.0, FREQUENCY[name], (N_TERMS, 3)).astype(np.float32),
            a=(a / a.sum() * AMPLITUDE[name]).astype(np.float32),
            phi=rng.uniform(0.0, 2.0 * np.pi, N_TERMS).astype(np.float32),
        )
    return LesionShape(
        centre=np.asarray(centre, dtype=np.float64),
        rot=rotation(lesion.angles),
        radii=np.asarray(lesion.radii_mm, dtype=np.float64),
        fields=fields,
    )


def ramp(distance: np.ndarray, radius_mm: float, width_mm: float) -> np.ndarray:
    """Partial-volume membership: 1 inside ``distance < 1``, 0 outside, linear over ``width_mm``.

    Args:
        distance: Normalised distance (1 = on the outline).
        radius_mm: Mean radius that turns the normalised distance into mm.
        width_mm: Width of the transition (about one voxel), mm.
    """
    return np.clip(0.5 + (1.0 - distance) * np.float32(radius_mm / width_mm), 0.0, 1.0)


def memberships(
    shape: LesionShape,
    lesion: LesionParams,
    q: np.ndarray,
    wm: np.ndarray | None,
    width_mm: float,
) -> dict[str, np.ndarray]:
    """Fractional memberships of the lesion's regions at template points ``q`` ``(3, *S)``.

    Args:
        shape: Lesion geometry.
        lesion: Its parameters (necrosis fraction, oedema extent).
        q: Template coordinates (before mass effect), voxels.
        wm: White-matter probability at the same points (oedema spreads along white
            matter), or None to ignore.
        width_mm: Partial-volume transition width, mm (about one voxel).

    Returns:
        ``solid`` (tumour incl. enhancing rim), ``core`` (necrotic core, inside solid) and
        ``oedema`` (whole-tumour extent, contains solid), float32 in [0, 1], shape ``S``.
    """
    u, rho = shape.normalised(q)
    r_mean = float(np.mean(shape.radii))
    solid = ramp(rho / shape.fields["solid"](u), r_mean, width_mm)
    if lesion.necrosis > 0.0:
        core = ramp(
            rho / (shape.fields["core"](u) * np.float32(lesion.necrosis)),
            r_mean * lesion.necrosis,
            width_mm,
        )
        core = np.minimum(core, solid)
    else:
        core = np.zeros_like(solid)
    if lesion.oedema > 1.0:
        spread = np.float32(lesion.oedema) * shape.fields["oedema"](u)
        if wm is not None:
            spread = spread * (np.float32(0.75) + np.float32(0.35) * wm)
        oedema = np.maximum(ramp(rho / spread, r_mean * lesion.oedema, width_mm), solid)
    else:
        oedema = solid
    return {"solid": solid, "core": core, "oedema": oedema}


def mass_effect(shape: LesionShape, lesion: LesionParams, q: np.ndarray) -> np.ndarray:
    """Template coordinates after the lesion's mass effect (tissue pushed outwards).

    Output points near the lesion sample the template closer to its centre:
    ``q' = c + (q − c)(1 − a·exp(−|q − c|²/L²))`` with ``a < 1`` (monotone, so no folding).

    Args:
        shape: Lesion geometry.
        lesion: Its parameters.
        q: ``(3, *S)`` template coordinates, voxels.

    Returns:
        ``(3, *S)`` displaced coordinates (a new array).
    """
    r = float(np.mean(shape.radii)) * lesion.oedema
    a = np.float32(min(0.55, 0.12 + 0.02 * float(np.mean(shape.radii))))
    length = np.float32(1.3 * r)
    rel = [q[i] - np.float32(shape.centre[i]) for i in range(3)]
    d2 = rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2
    factor = 1.0 - a * np.exp(-d2 / (length * length))
    return np.stack([np.float32(shape.centre[i]) + rel[i] * factor for i in range(3)])
