"""The ``domain`` section of ``metrics.json``: how many held-out inputs the run's
out-of-domain check (:mod:`tumorscope.inference.ood`) flags.

Held-out inputs of the run's own kind of data (patients it never saw) are in domain, so
there each flag is a false alarm; the run's thresholds aim at about
``1 − calibration.domain_quantile`` of them (``target_share``). Counted per kind, on the
verdict every prediction carries: volumes (the median of their slices' scores against the
volume threshold) and 2D images (against the 2D threshold). Units the check could not
score (``in_domain`` None: a run without a domain model, a backend without features) are
counted in ``n`` and left out of the share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tumorscope.evaluation.collect import HeldOut
from tumorscope.evaluation.schema import boot_figure


def flag_counts(
    in_domain: Sequence[bool | None], *, what: str, unchecked: str, n_boot: int, seed: int
) -> dict[str, Any]:
    """``{n, n_checked, n_flagged, flagged_share}`` of one kind's verdicts.

    Args:
        in_domain: Each unit's ``domain.in_domain`` (None: not checked).
        what: The kind, in words (``"volumes"``), for the undefined share's reason.
        unchecked: Why none was checked, where there are units and none was.
        n_boot: Bootstrap replicates of the share's CI (units resampled).
        seed: Bootstrap seed.
    """
    verdicts = np.asarray([v for v in in_domain if v is not None], dtype=bool)
    flagged = ~verdicts  # a held-out unit outside the domain is a false alarm
    reason = unchecked if in_domain else f"no held-out {what}"
    share = boot_figure(
        [flagged.astype(np.float64)], None, groups=None, n_boot=n_boot, seed=seed, reason=reason
    )
    return {
        "n": len(in_domain),
        "n_checked": int(verdicts.size),
        "n_flagged": int(flagged.sum()),
        "flagged_share": share,
    }


def domain_section(held: HeldOut, n_boot: int, seed: int) -> dict[str, Any]:
    """The ``domain`` section: the run's thresholds and quantile (null without a domain
    model), ``target_share`` (``1 − quantile``), and :func:`flag_counts` of the held-out
    ``volumes`` and ``images``."""
    model = held.domain_model
    unchecked = (
        "not checked: the run has no domain model"
        if model is None
        else "not checked (each prediction's domain.reason says why)"
    )
    quantile = None if model is None else float(model["quantile"])
    out: dict[str, Any] = {
        "quantile": quantile,
        "target_share": None if quantile is None else round(1.0 - quantile, 12),
    }
    kinds = {
        "volumes": ("volume_threshold", held.volume_in_domain),
        "images": ("image_threshold", held.image_in_domain),
    }
    for key, _ in kinds.values():
        out[key] = None if model is None else float(model[key])
    for kind, (_, flags) in kinds.items():
        out[kind] = flag_counts(flags, what=kind, unchecked=unchecked, n_boot=n_boot, seed=seed)
    return out


def domain_rows(held: HeldOut) -> list[dict[str, Any]]:
    """``predictions.json``'s ``domain``: one row per held-out volume (``id`` its patient)
    and image (``id`` ``source:image``, as in ``classification``): ``kind``, ``score`` and
    ``in_domain`` (null where not checked)."""
    images = [f"{s}:{i}" for s, i in zip(held.image_source, held.image_ids, strict=True)]
    rows = [
        {"kind": "volume", "id": pid, "score": score, "in_domain": ok}
        for pid, score, ok in zip(
            held.volume_domain_ids, held.volume_domain_score, held.volume_in_domain, strict=True
        )
    ]
    return rows + [
        {"kind": "image", "id": uid, "score": score, "in_domain": ok}
        for uid, score, ok in zip(
            images, held.image_domain_score, held.image_in_domain, strict=True
        )
    ]


def domain_summary(section: Mapping[str, Any]) -> str:
    """One line of a ``domain`` section: ``"0/8 volumes (0.0 %), 1/40 images (2.5 %); goal
    ≤ 2 %"`` (flagged of checked per kind; a kind without units is left out)."""
    parts = []
    for kind in ("volumes", "images"):
        c = section[kind]
        if c["n_checked"]:
            share = 100.0 * c["n_flagged"] / c["n_checked"]
            parts.append(f"{c['n_flagged']}/{c['n_checked']} {kind} ({share:.1f} %)")
        elif c["n"]:
            parts.append(f"{c['n']} {kind} not checked")
    target = section.get("target_share")
    goal = "" if target is None else f"; goal ≤ {100.0 * target:g} %"
    return (", ".join(parts) or "no held-out volume or image") + goal


def domain_lines(metrics: Mapping[str, Any]) -> list[str]:
    """``report.md`` lines of the ``domain`` section (none for a report without it)."""
    section = metrics.get("domain")
    if section is None:
        return []
    thresholds = (
        "the run has no domain model"
        if section["quantile"] is None
        else f"thresholds {section['volume_threshold']:.2f} (volumes, on the median slice "
        f"score), {section['image_threshold']:.2f} (2D images), set on validation at the "
        f"{section['quantile']:g} level"
    )
    return [
        "## out-of-domain flags",
        "",
        f"Held-out inputs flagged out of domain: {domain_summary(section)} ({thresholds}).",
        "",
    ]
