"""Per-patient parameters of the synthetic generator (cheap to sample, no voxels).

Sampling these records is separate from rendering volumes: a 300-patient cohort's
parameters, true hazards and outcomes take milliseconds, so survival properties (the
oracle C-index) are tested without rendering a voxel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LesionParams:
    """One lesion: a tumour, an unlabelled mimic, or (PET/CT) a primary tumour or node.

    Attributes:
        kind: ``tumour`` or ``mimic`` (brain); ``primary`` or ``node`` (PET/CT).
        site: Brain lesions: position in [0, 1) along the list of eligible white-matter
            voxels of the template (resolved at render time). Unused for PET/CT.
        offset_mm: PET/CT lesions: offset from the anatomical anchor (oropharynx or
            neck level) in mm, RAS. Brain: a small jitter in mm.
        radii_mm: Semi-axes of the solid lesion (tumour core incl. enhancing rim) in mm.
        angles: Euler angles (rad) of the ellipsoid.
        necrosis: Necrotic-core radius as a fraction of the lesion radius (0 = none).
        enhancing: True if the lesion has an enhancing rim (BraTS label 4).
        oedema: Oedema extent as a multiple of the lesion radius (1 = no oedema).
        conspicuity: Lesion contrast scale; 1 = nominal, smaller = fainter.
        uptake: PET/CT: SUVmax of the lesion; 0 for brain lesions.
        shape_seed: Seed of the lesion's irregular-shape terms.
    """

    kind: str
    site: float
    offset_mm: tuple[float, float, float]
    radii_mm: tuple[float, float, float]
    angles: tuple[float, float, float]
    necrosis: float
    enhancing: bool
    oedema: float
    conspicuity: float
    uptake: float
    shape_seed: int

    @property
    def volume_ml(self) -> float:
        """Nominal volume of the solid lesion (ellipsoid), mL."""
        a, b, c = self.radii_mm
        return 4.0 / 3.0 * math.pi * a * b * c / 1000.0

    @property
    def whole_volume_ml(self) -> float:
        """Nominal volume including oedema (BraTS whole tumour), mL."""
        return self.volume_ml * self.oedema**3

    @property
    def enhancing_volume_ml(self) -> float:
        """Nominal volume of the enhancing rim (0 when non-enhancing), mL."""
        return self.volume_ml * (1.0 - self.necrosis**3) if self.enhancing else 0.0

    @property
    def diameter_mm(self) -> float:
        """Largest nominal diameter of the whole lesion (incl. oedema), mm."""
        return 2.0 * max(self.radii_mm) * self.oedema


@dataclass(frozen=True)
class AnatomyParams:
    """Per-patient anatomy and acquisition parameters.

    Attributes:
        scale: Anisotropic scale of the template per axis (RAS).
        angles: Rotation (rad) about the x, y, z axes.
        shift_mm: Translation of the anatomy in the field of view, mm.
        elastic_mm: Amplitude of the smooth elastic deformation, mm.
        contrast_jitter: Per-contrast, per-tissue multiplicative jitter (4 contrasts × 3
            tissues CSF/GM/WM, flattened row-major); PET/CT uses the first entries.
        gains: Per-channel scale of the stored integer intensities.
        noise: Noise level relative to white-matter (brain) or soft-tissue intensity.
        bias: Bias-field strength (log-amplitude).
        ghosting: Motion-ghost amplitude (0 = none).
        render_seed: Seed of everything drawn while rendering (noise, shape terms).
    """

    scale: tuple[float, float, float]
    angles: tuple[float, float, float]
    shift_mm: tuple[float, float, float]
    elastic_mm: float
    contrast_jitter: tuple[float, ...]
    gains: tuple[float, ...]
    noise: float
    bias: float
    ghosting: float
    render_seed: int


@dataclass(frozen=True)
class PatientParams:
    """Everything that defines one synthetic patient, before rendering.

    Attributes:
        patient_id: Identifier as written on disk (``BraTS20_Training_001``, ``CHUM-001``).
        profile: ``brain-mri`` or ``petct``.
        difficulty: Preset name.
        anatomy: Anatomy and acquisition parameters.
        lesions: Labelled lesions (tumours; PET/CT primaries and nodes). Empty for the
            tumour-free patients behind Kaggle ``no/`` images.
        mimics: Unlabelled lesions (hard negatives).
        covariates: Clinical covariates as written to the CSV; None = missing on disk.
        features: Standardised hazard features (name → value), including unobserved ones.
        log_hazard: True log-hazard (the oracle's risk score).
        observable_log_hazard: The true log-hazard without its unobserved (latent) term:
            the best risk any model of the observable features can reach.
        time: Follow-up time, days.
        event: True if the event was observed, False if censored.
    """

    patient_id: str
    profile: str
    difficulty: str
    anatomy: AnatomyParams
    lesions: tuple[LesionParams, ...]
    mimics: tuple[LesionParams, ...]
    covariates: dict[str, float | str | None] = field(default_factory=dict)
    features: dict[str, float] = field(default_factory=dict)
    log_hazard: float = 0.0
    observable_log_hazard: float = 0.0
    time: float = 0.0
    event: bool = False

    @property
    def tumour_volume_ml(self) -> float:
        """Nominal whole-tumour volume (sum over labelled lesions), mL."""
        return sum(les.whole_volume_ml for les in self.lesions)
