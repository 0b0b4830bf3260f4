"""Survival outcomes drawn from a known hazard, and the oracle C-index.

Model: proportional hazards with a Weibull baseline,
``h(t | x) = h0(t) · exp(η)``, ``η = s · Σ_k β_k x_k`` where the ``x_k`` are standardised
features (tumour burden, enhancing fraction or SUVmax, age, resection, an unobserved
"molecular" factor, ...), ``β`` is fixed per profile and ``s`` is the preset's
``hazard_scale``. Event times are drawn by inverting the survival function; censoring is
administrative (uniform end of follow-up) plus random drop-out, about 30 % in all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tumorscope.synthetic.params import PatientParams

#: Hazard coefficients per profile, on standardised features.
BETAS: dict[str, dict[str, float]] = {
    "brain-mri": {
        "burden": 0.45,
        "enhancing": 0.35,
        "age": 0.55,
        "subtotal": 0.3,
        "multifocal": 0.25,
        "latent": 0.45,
    },
    "petct": {
        "burden": 0.45,
        "suvmax": 0.3,
        "hpv": -0.55,
        "age": 0.3,
        "nodes": 0.25,
        "performance": 0.25,
        "tobacco": 0.2,
        "latent": 0.45,
    },
}
#: Weibull shape and median survival (days) at η = 0, per profile.
BASELINE: dict[str, tuple[float, float]] = {"brain-mri": (1.4, 430.0), "petct": (1.1, 1100.0)}
#: End of follow-up (uniform range, days) and yearly drop-out hazard, per profile.
CENSORING: dict[str, tuple[float, float, float]] = {
    "brain-mri": (500.0, 2200.0, 0.18),
    "petct": (1200.0, 3600.0, 0.03),
}


def log_hazard(profile: str, features: dict[str, float], hazard_scale: float) -> float:
    """True log-hazard ``η = s · Σ β_k x_k`` of one patient.

    Args:
        profile: ``brain-mri`` or ``petct``.
        features: Standardised feature name → value (names of :data:`BETAS`).
        hazard_scale: The preset's signal strength ``s``.
    """
    betas = BETAS[profile]
    return hazard_scale * sum(b * features[name] for name, b in betas.items())


def draw_outcome(
    profile: str, eta: float, rng: np.random.Generator, median_scale: float = 1.0
) -> tuple[float, bool]:
    """Draw ``(time_days, event)`` for log-hazard ``eta``.

    ``median_scale`` stretches the baseline median survival (the preset's setting).

    The event time solves ``S(t) = U`` for the Weibull proportional-hazards model; the
    observed time is ``min(event, censoring)``, rounded up to whole days.
    """
    shape, median = BASELINE[profile]
    lam = math.log(2.0) / (median * median_scale) ** shape
    u = float(rng.uniform(1e-12, 1.0))
    t_event = (-math.log(u) / (lam * math.exp(eta))) ** (1.0 / shape)
    lo, hi, dropout = CENSORING[profile]
    t_admin = float(rng.uniform(lo, hi))
    t_drop = float(rng.exponential(365.0 / dropout))
    t_cens = min(t_admin, t_drop)
    if t_event <= t_cens:
        return float(max(1, math.ceil(t_event))), True
    return float(max(1, math.ceil(t_cens))), False


def oracle_c_index(params: Sequence[PatientParams]) -> float:
    """Harrell's C-index of the true log-hazard against the sampled outcomes.

    Computed with lifelines' ``concordance_index`` on the negated risk (higher hazard =
    shorter survival). Only patients with an outcome count (all volume patients).

    Raises:
        ValueError: fewer than two patients or no observed event.
    """
    from lifelines.utils import concordance_index  # heavy import, only needed here

    times = np.array([p.time for p in params], dtype=float)
    events = np.array([p.event for p in params], dtype=bool)
    risk = np.array([p.log_hazard for p in params], dtype=float)
    if len(params) < 2 or not events.any():
        raise ValueError(
            f"oracle C-index needs at least two patients and one event, got {len(params)} "
            f"patients with {int(events.sum())} events"
        )
    return float(concordance_index(times, -risk, events))
