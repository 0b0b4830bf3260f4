"""Sampling of per-patient parameters (no rendering): anatomy, lesions, covariates, outcome.

Every patient draws from its own ``numpy.random.Generator`` seeded by
``SeedSequence(seed, spawn_key=(stream, index))`` (what ``SeedSequence(seed).spawn``
produces), so a patient's parameters depend on the seed and its index only, never on the
cohort size or on how many worker processes render it.
"""

from __future__ import annotations

import math

import numpy as np

from tumorscope.synthetic.outcomes import draw_outcome, log_hazard
from tumorscope.synthetic.params import AnatomyParams, LesionParams, PatientParams
from tumorscope.synthetic.presets import Preset, check_profile, get_preset

#: Seed-sequence streams: volume patients, Kaggle-image patients, the fixed Kaggle test set.
STREAM_VOLUMES = 0
STREAM_KAGGLE = 1
STREAM_KAGGLE_TEST = 2
#: Typical stored intensity of white matter per BraTS contrast (flair, t1, t1ce, t2).
BRAIN_GAINS: tuple[float, ...] = (450.0, 650.0, 800.0, 700.0)


def patient_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """The generator of patient ``index`` in ``stream`` (independent of cohort size)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, index)))


def brats_id(index: int) -> str:
    """BraTS-2020 style identifier of the ``index``-th (0-based) patient."""
    return f"BraTS20_Training_{index + 1:03d}"


def hecktor_id(index: int) -> str:
    """HECKTOR-style identifier (``SYN-001``) of the ``index``-th (0-based) patient."""
    return f"SYN-{index + 1:03d}"


def _vec3(values: object) -> tuple[float, float, float]:
    """Three floats from any length-3 array-like (the dataclasses store plain tuples)."""
    a = np.asarray(values, dtype=float).reshape(3)
    return float(a[0]), float(a[1]), float(a[2])


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _count(rng: np.random.Generator, preset: Preset) -> int:
    lo, hi = preset.tumours
    if hi > lo and rng.random() < preset.p_multifocal:
        return int(rng.integers(max(lo, 2), hi + 1))
    return lo


def _anatomy(rng: np.random.Generator, preset: Preset, gains: tuple[float, ...]) -> AnatomyParams:
    spread = {"easy": 0.1, "standard": 0.25, "hard": 0.4}[preset.name]
    return AnatomyParams(
        scale=(
            float(rng.uniform(0.88, 1.05)),
            float(rng.uniform(0.88, 1.05)),
            float(rng.uniform(0.86, 0.98)),
        ),
        angles=_vec3(np.clip(rng.normal(0.0, 0.05, 3), -0.12, 0.12)),
        shift_mm=_vec3(np.clip(rng.normal(0.0, 3.0, 3), -6.0, 6.0)),
        elastic_mm=float(rng.uniform(1.5, 4.0)),
        contrast_jitter=tuple(float(j) for j in 1.0 + rng.normal(0.0, preset.intensity_jitter, 12)),
        gains=tuple(float(g * math.exp(rng.normal(0.0, spread))) for g in gains),
        noise=_uniform(rng, preset.noise),
        bias=_uniform(rng, preset.bias),
        ghosting=float(rng.uniform(0.04, 0.12)) if rng.random() < preset.p_ghosting else 0.0,
        render_seed=int(rng.integers(0, 2**62)),
    )


def _brain_tumour(rng: np.random.Generator, preset: Preset, first: bool) -> LesionParams:
    small = rng.random() < preset.p_small
    if small:
        oedema = float(rng.uniform(1.0, 1.2))
        radius = float(rng.uniform(3.4, 4.8)) / oedema  # whole-tumour diameter 6.8–9.6 mm
        necrosis = float(rng.uniform(0.0, 0.3))
    else:
        lo, hi = preset.core_radius_mm
        radius = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        if not first:
            radius *= float(rng.uniform(0.5, 0.9))  # satellites are smaller than the main lesion
        oedema = _uniform(rng, preset.oedema_factor)
        necrosis = float(rng.uniform(0.35, 0.7)) if radius > 8.0 else float(rng.uniform(0.0, 0.4))
    radii = radius * (1.0 + rng.uniform(-0.15, 0.15, 3))
    if small:  # keep the whole lesion under 1 cm in every direction
        radii = np.minimum(radii, 4.9 / oedema)
    return LesionParams(
        kind="tumour",
        site=float(rng.random()),
        offset_mm=(0.0, 0.0, 0.0),
        radii_mm=_vec3(radii),
        angles=_vec3(rng.uniform(0.0, math.pi, 3)),
        necrosis=necrosis,
        enhancing=bool(rng.random() >= preset.p_non_enhancing),
        oedema=oedema,
        conspicuity=_uniform(rng, preset.conspicuity),
        uptake=0.0,
        shape_seed=int(rng.integers(0, 2**62)),
    )


def _brain_mimic(rng: np.random.Generator) -> LesionParams:
    radius = float(rng.uniform(1.5, 4.0))
    return LesionParams(
        kind="mimic",
        site=float(rng.random()),
        offset_mm=(0.0, 0.0, 0.0),
        radii_mm=_vec3(radius * (1.0 + rng.uniform(-0.3, 0.3, 3))),
        angles=_vec3(rng.uniform(0.0, math.pi, 3)),
        necrosis=0.0,
        enhancing=False,
        oedema=1.0,
        conspicuity=float(rng.uniform(0.5, 1.0)),
        uptake=0.0,
        shape_seed=int(rng.integers(0, 2**62)),
    )


def sample_brain_patient(
    rng: np.random.Generator, preset: Preset, patient_id: str, *, tumour: bool = True
) -> PatientParams:
    """Sample one brain-MRI patient (anatomy, tumours, mimics, covariates, outcome).

    Args:
        rng: The patient's own generator.
        preset: Difficulty preset.
        patient_id: Identifier to record.
        tumour: False for the tumour-free patients behind Kaggle ``no/`` images.
    """
    anatomy = _anatomy(rng, preset, BRAIN_GAINS)
    n = _count(rng, preset) if tumour else 0
    lesions = tuple(_brain_tumour(rng, preset, first=i == 0) for i in range(n))
    lo, hi = preset.mimics
    mimics = tuple(_brain_mimic(rng) for _ in range(int(rng.integers(lo, hi + 1))))
    age = float(np.clip(rng.normal(61.0, 12.0), 18.0, 88.0))
    gtr = bool(rng.random() < 0.6)
    p_na = 0.2 if preset.name == "easy" else 0.35
    covariates: dict[str, float | str | None] = {
        "Age": None if (preset.name != "easy" and rng.random() < 0.03) else round(age, 3),
        "Extent_of_Resection": None if rng.random() < p_na else ("GTR" if gtr else "STR"),
    }
    wt = max(sum(les.whole_volume_ml for les in lesions), 0.05)
    et = sum(les.enhancing_volume_ml for les in lesions)
    features = {
        "burden": (math.log(wt) - math.log(30.0)) / 1.0,
        "enhancing": (et / wt - 0.12) / 0.08,
        "age": (age - 60.0) / 12.0,
        "subtotal": (0.0 if gtr else 1.0) - 0.4,
        "multifocal": (1.0 if n > 1 else 0.0) - 0.3,
        "latent": float(rng.normal()),
    }
    scale, median_scale = preset.scales("brain-mri")
    eta = log_hazard("brain-mri", features, scale) if tumour else 0.0
    seen = log_hazard("brain-mri", {**features, "latent": 0.0}, scale) if tumour else 0.0
    time, event = draw_outcome("brain-mri", eta, rng, median_scale) if tumour else (0.0, False)
    return PatientParams(
        patient_id=patient_id,
        profile="brain-mri",
        difficulty=preset.name,
        anatomy=anatomy,
        lesions=lesions,
        mimics=mimics,
        covariates=covariates,
        features=features,
        log_hazard=eta,
        observable_log_hazard=seen,
        time=time,
        event=event,
    )


def _petct_lesion(
    rng: np.random.Generator,
    kind: str,
    radius: float,
    offset: np.ndarray,
    uptake: float,
    conspicuity: float,
) -> LesionParams:
    return LesionParams(
        kind=kind,
        site=0.0,
        offset_mm=_vec3(offset),
        radii_mm=_vec3(radius * (1.0 + rng.uniform(-0.2, 0.2, 3))),
        angles=_vec3(rng.uniform(0.0, math.pi, 3)),
        necrosis=float(rng.uniform(0.0, 0.5)) if radius > 12.0 else 0.0,
        enhancing=False,
        oedema=1.0,
        conspicuity=conspicuity,
        uptake=uptake,
        shape_seed=int(rng.integers(0, 2**62)),
    )


def sample_petct_patient(
    rng: np.random.Generator, preset: Preset, patient_id: str
) -> PatientParams:
    """Sample one head-and-neck PET/CT patient (body, primary, nodes, covariates, outcome)."""
    anatomy = _anatomy(rng, preset, (1.0, 1.0))
    lo, hi = preset.core_radius_mm
    conspicuity = _uniform(rng, preset.conspicuity)
    radius = math.exp(rng.uniform(math.log(lo + 2.0), math.log(hi + 4.0)))
    side = 1.0 if rng.random() < 0.5 else -1.0
    offset = np.array([side * rng.uniform(4.0, 14.0), rng.normal(0.0, 4.0), rng.normal(0.0, 8.0)])
    suv = float(rng.uniform(4.0, 20.0)) * conspicuity
    lesions = [_petct_lesion(rng, "primary", radius, offset, suv, conspicuity)]
    n_nodes = int(rng.integers(0, preset.tumours[1]))
    for _ in range(n_nodes):
        node_side = side if rng.random() < 0.75 else -side
        off = np.array(
            [node_side * rng.uniform(28.0, 45.0), rng.uniform(-5.0, 20.0), rng.uniform(-45.0, 5.0)]
        )
        r = (
            float(rng.uniform(4.0, 12.0))
            if rng.random() >= preset.p_small
            else float(rng.uniform(3.0, 4.5))
        )
        lesions.append(
            _petct_lesion(
                rng, "node", r, off, float(rng.uniform(2.5, 12.0)) * conspicuity, conspicuity
            )
        )
    lo_m, hi_m = preset.mimics
    mimics = []
    for _ in range(int(rng.integers(lo_m, hi_m + 1))):  # physiological / inflammatory hot spots
        off = np.array(
            [rng.uniform(-50.0, 50.0), rng.uniform(-30.0, 30.0), rng.uniform(-60.0, 40.0)]
        )
        mimics.append(
            _petct_lesion(
                rng, "mimic", float(rng.uniform(3.0, 7.0)), off, float(rng.uniform(2.0, 6.0)), 1.0
            )
        )
    age = float(np.clip(rng.normal(60.0, 9.0), 25.0, 90.0))
    hpv = bool(rng.random() < 0.6)
    tobacco = bool(rng.random() < (0.35 if hpv else 0.65))
    alcohol = bool(rng.random() < 0.45)
    ps = int(rng.choice(4, p=[0.45, 0.4, 0.12, 0.03]))
    surgery = bool(rng.random() < 0.3)
    chemo = bool(rng.random() < 0.85)

    def maybe(value: float, p_missing: float) -> float | None:
        return None if rng.random() < p_missing else value

    covariates: dict[str, float | str | None] = {
        "Age": round(age),
        "Gender": "M" if rng.random() < 0.8 else "F",
        "Tobacco": maybe(float(tobacco), 0.4),
        "Alcohol": maybe(float(alcohol), 0.45),
        "Performance status": maybe(float(ps), 0.25),
        "HPV status (0=-, 1=+)": maybe(float(hpv), 0.3),
        "Surgery": float(surgery),
        "Chemotherapy": float(chemo),
    }
    mtv = sum(les.volume_ml for les in lesions)
    features = {
        "burden": (math.log(mtv) - math.log(15.0)) / 0.9,
        "suvmax": (max(les.uptake for les in lesions) - 10.0) / 4.0,
        "hpv": (1.0 if hpv else 0.0) - 0.6,
        "age": (age - 60.0) / 9.0,
        "nodes": n_nodes - 1.0,
        "performance": ps - 0.7,
        "tobacco": (1.0 if tobacco else 0.0) - 0.5,
        "latent": float(rng.normal()),
    }
    scale, median_scale = preset.scales("petct")
    eta = log_hazard("petct", features, scale)
    seen = log_hazard("petct", {**features, "latent": 0.0}, scale)
    time, event = draw_outcome("petct", eta, rng, median_scale)
    return PatientParams(
        patient_id=patient_id,
        profile="petct",
        difficulty=preset.name,
        anatomy=anatomy,
        lesions=tuple(lesions),
        mimics=tuple(mimics),
        covariates=covariates,
        features=features,
        log_hazard=eta,
        observable_log_hazard=seen,
        time=time,
        event=event,
    )


def sample_cohort(
    *, profile: str, patients: int, difficulty: str, seed: int
) -> list[PatientParams]:
    """Sample the parameters of a cohort of volume patients, without rendering.

    Args:
        profile: ``brain-mri`` (BraTS layout) or ``petct`` (HECKTOR layout).
        patients: Number of patients (≥ 1).
        difficulty: ``easy``, ``standard`` or ``hard``.
        seed: Cohort seed; patient ``i`` depends on ``(seed, i)`` only.

    Returns:
        One :class:`PatientParams` per patient, in index order.

    Raises:
        ValueError: unknown profile or difficulty, or ``patients < 1``.
    """
    check_profile(profile)
    preset = get_preset(difficulty)
    if patients < 1:
        raise ValueError(f"patients must be at least 1, got {patients}")
    out = []
    for i in range(patients):
        rng = patient_rng(seed, STREAM_VOLUMES, i)
        if profile == "brain-mri":
            out.append(sample_brain_patient(rng, preset, brats_id(i)))
        else:
            out.append(sample_petct_patient(rng, preset, hecktor_id(i)))
    return out
