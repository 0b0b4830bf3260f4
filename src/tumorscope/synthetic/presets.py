"""Difficulty presets of the synthetic generator (``easy``, ``standard``, ``hard``).

A preset is plain data: it sets the lesion population (how many, how large, how
conspicuous, how often non-enhancing), the distractors (white-matter-hyperintensity-like
lesions, motion ghosting), the inter-patient intensity and noise variation, and the
strength of the survival signal (which fixes the oracle C-index band).
"""

from __future__ import annotations

from dataclasses import dataclass

DIFFICULTIES: tuple[str, ...] = ("easy", "standard", "hard")
PROFILES: tuple[str, ...] = ("brain-mri", "petct")


@dataclass(frozen=True)
class Preset:
    """Parameters of one difficulty level.

    Attributes:
        name: ``easy``, ``standard`` or ``hard``.
        tumours: Inclusive range of tumours per patient.
        p_multifocal: Probability that a patient gets more than one tumour.
        core_radius_mm: Range of the enhancing-tumour mean radius of a normal-size lesion (mm).
        p_small: Probability that a lesion is small (whole-tumour diameter under 1 cm).
        p_non_enhancing: Probability that a tumour has no enhancing rim (labels 1 and 2 only).
        conspicuity: Range of the lesion contrast scale (1 = nominal contrast, 0 = invisible).
        oedema_factor: Range of oedema extent relative to the tumour radius.
        mimics: Inclusive range of unlabelled white-matter-hyperintensity-like lesions.
        p_ghosting: Probability of motion ghosting in a patient's volumes.
        intensity_jitter: Standard deviation of per-patient, per-contrast tissue-contrast jitter.
        noise: Range of the Rician noise level relative to white-matter intensity.
        bias: Range of the bias-field strength (log-amplitude).
        oracle_band: Documented band of the oracle C-index (brain-mri and petct alike).
        hazard_scale: Multiplier of every hazard coefficient (sets the survival signal),
            per profile ``(brain-mri, petct)``.
        median_scale: Multiplier of the baseline median survival per profile, which keeps
            censoring near 30 % whatever the preset's tumour burden.
    """

    name: str
    tumours: tuple[int, int]
    p_multifocal: float
    core_radius_mm: tuple[float, float]
    p_small: float
    p_non_enhancing: float
    conspicuity: tuple[float, float]
    oedema_factor: tuple[float, float]
    mimics: tuple[int, int]
    p_ghosting: float
    intensity_jitter: float
    noise: tuple[float, float]
    bias: tuple[float, float]
    oracle_band: tuple[float, float]
    hazard_scale: tuple[float, float]
    median_scale: tuple[float, float]

    def scales(self, profile: str) -> tuple[float, float]:
        """``(hazard_scale, median_scale)`` of ``profile``."""
        i = PROFILES.index(profile)
        return self.hazard_scale[i], self.median_scale[i]


PRESETS: dict[str, Preset] = {
    "easy": Preset(
        name="easy",
        tumours=(1, 2),
        p_multifocal=0.25,
        core_radius_mm=(10.0, 20.0),
        p_small=0.0,
        p_non_enhancing=0.0,
        conspicuity=(0.95, 1.0),
        oedema_factor=(1.5, 2.1),
        mimics=(0, 0),
        p_ghosting=0.0,
        intensity_jitter=0.02,
        noise=(0.02, 0.03),
        bias=(0.0, 0.08),
        oracle_band=(0.77, 0.83),
        hazard_scale=(2.0, 1.95),
        median_scale=(1.7, 1.0),
    ),
    "standard": Preset(
        name="standard",
        tumours=(1, 3),
        p_multifocal=0.3,
        core_radius_mm=(7.0, 20.0),
        p_small=0.25,
        p_non_enhancing=0.2,
        conspicuity=(0.5, 1.0),
        oedema_factor=(1.3, 2.0),
        mimics=(0, 4),
        p_ghosting=0.1,
        intensity_jitter=0.06,
        noise=(0.03, 0.06),
        bias=(0.05, 0.2),
        oracle_band=(0.72, 0.78),
        hazard_scale=(1.1, 1.3),
        median_scale=(1.1, 0.9),
    ),
    "hard": Preset(
        name="hard",
        tumours=(1, 4),
        p_multifocal=0.45,
        core_radius_mm=(5.0, 16.0),
        p_small=0.4,
        p_non_enhancing=0.4,
        conspicuity=(0.3, 0.8),
        oedema_factor=(1.1, 1.8),
        mimics=(3, 10),
        p_ghosting=0.3,
        intensity_jitter=0.1,
        noise=(0.05, 0.1),
        bias=(0.1, 0.3),
        oracle_band=(0.64, 0.72),
        hazard_scale=(0.6, 0.75),
        median_scale=(0.85, 0.75),
    ),
}


def get_preset(difficulty: str) -> Preset:
    """The :class:`Preset` named ``difficulty``.

    Raises:
        ValueError: ``difficulty`` is not one of :data:`DIFFICULTIES`.
    """
    try:
        return PRESETS[difficulty]
    except KeyError:
        raise ValueError(
            f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}"
        ) from None


def check_profile(profile: str) -> str:
    """Return ``profile`` if known.

    Raises:
        ValueError: ``profile`` is not one of :data:`PROFILES`.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    return profile
