"""The figure format of ``metrics.json``: its JSON schema, validator and figure builders.

Every figure is ``{"value": number|null, "ci95": [lo, hi]|null, "n": int, "unit": str}``;
a null value carries a ``reason``. Keys listed here are always present (``by_stratum`` only
where an image folder has a ``strata.csv``; ``selective`` and ``domain`` in reports written
since they existed, so older ones still validate); more are allowed.
:func:`figure`, :func:`undefined` and :func:`boot_figure` build figures in this format.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tumorscope.metrics.stats import bootstrap_ci

FIGURE: dict[str, Any] = {
    "type": "object",
    "required": ["value", "ci95", "n", "unit"],
    "properties": {
        "value": {"type": ["number", "null"]},
        "ci95": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "array",
                    "minItems": 2,
                    "maxItems": 2,
                    "items": {"type": ["number", "null"]},
                },
            ]
        },
        "n": {"type": "integer", "minimum": 0},
        "unit": {"type": "string"},
        "reason": {"type": "string", "minLength": 1},
    },
    "if": {"properties": {"value": {"type": "null"}}},
    "then": {"required": ["reason"]},
}


def _section(
    keys: list[str], optional: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """Figures ``keys`` and sub-objects ``extra``, all required; ``optional`` ones may be absent."""
    props: dict[str, Any] = {k: {"$ref": "#/$defs/figure"} for k in keys}
    props.update(extra)
    props.update(optional or {})
    return {"type": "object", "required": keys + list(extra), "properties": props}


def _map_of(keys: list[str], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": _section(keys, optional)}


def _array_of(kind: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": kind}}


#: A reliability diagram's non-empty bins (``evaluation.sections.reliability_bins``).
BINS: dict[str, Any] = {
    "type": "object",
    "required": ["predicted", "observed", "count"],
    "properties": {
        "predicted": _array_of("number"),
        "observed": _array_of("number"),
        "count": _array_of("integer"),
    },
}
RELIABILITY: dict[str, Any] = {
    "type": "object",
    "required": ["before_temperature", "after_temperature"],
    "properties": {"before_temperature": BINS, "after_temperature": BINS},
}


def _curve(x: str, y: str) -> dict[str, Any]:
    """A curve: number arrays ``x`` and ``y`` (``evaluation.selective``)."""
    return {
        "type": "object",
        "required": [x, y],
        "properties": {x: _array_of("number"), y: _array_of("number")},
    }


#: One group of decisions of ``selective`` (``evaluation.selective.decision_figures``).
DECISIONS = _section(
    [
        "uncertainty_auroc", "error_full", "error_at_90", "error_ratio_at_90", "aurc",
        "review_rate", "accepted_error",
    ],
    n_decisions={"type": "integer", "minimum": 0},
    n_wrong={"type": "integer", "minimum": 0},
    risk_coverage=_curve("coverage", "risk"),
)  # fmt: skip
SELECTIVE: dict[str, Any] = {
    "type": "object",
    "required": [
        "confidence_definition", "threshold", "coverage", "review_confidence", "slices",
        "images", "by_source", "volumes",
    ],
    "properties": {
        "confidence_definition": {"type": "string"},
        "threshold": {"type": "number"},
        "coverage": {"type": "number"},
        "review_confidence": {"type": ["number", "null"]},
        "review_target_error": {"type": ["number", "null"]},
        "slices": DECISIONS,
        "images": DECISIONS,
        "by_source": {"type": "object", "additionalProperties": DECISIONS},
        "volumes": _section(
            ["low_dice_auroc"],
            uncertainty_definition={"type": "string"},
            dice_cut={"type": "number"},
            n_volumes={"type": "integer", "minimum": 0},
            n_low_dice={"type": "integer", "minimum": 0},
            dice_coverage=_curve("coverage", "mean_dice"),
        ),
    },
}  # fmt: skip

#: One kind of held-out input of ``domain`` (``evaluation.domain.flag_counts``).
DOMAIN_KIND = _section(
    ["flagged_share"],
    n={"type": "integer", "minimum": 0},
    n_checked={"type": "integer", "minimum": 0},
    n_flagged={"type": "integer", "minimum": 0},
)
DOMAIN: dict[str, Any] = {
    "type": "object",
    "required": [
        "quantile", "target_share", "volume_threshold", "image_threshold", "volumes", "images",
    ],
    "properties": {
        **{k: {"type": ["number", "null"]} for k in (
            "quantile", "target_share", "volume_threshold", "image_threshold",
        )},
        "volumes": DOMAIN_KIND,
        "images": DOMAIN_KIND,
    },
}  # fmt: skip


METRICS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "tumorscope metrics.json",
    "type": "object",
    "$defs": {"figure": FIGURE},
    "required": ["schema_version", "segmentation", "classification", "survival", "calibration"],
    "properties": {
        "schema_version": {"const": 1},
        "segmentation": _section(
            ["dice", "dice_ungated", "hd95_mm"], by_region=_map_of(["dice", "hd95_mm"])
        ),
        "classification": _section(
            ["roc_auc", "pr_auc", "sensitivity", "specificity"],
            optional={
                "by_stratum": {"type": "object", "additionalProperties": _map_of(["roc_auc"])}
            },
            by_source=_map_of(["roc_auc"]),
        ),
        "survival": _section(["c_index", "c_index_uno", "td_auc", "ibs", "c_index_oracle"]),
        "calibration": _section(
            ["ece", "ece_after_temperature", "brier", "brier_after_temperature"],
            optional={"reliability": RELIABILITY},  # reports before it lack the bins
            by_source=_map_of(
                ["ece", "ece_after_temperature", "brier"], {"reliability": RELIABILITY}
            ),
            binning={
                "type": "object",
                "required": ["strategy", "bins"],
                "properties": {"strategy": {"type": "string"}, "bins": {"type": "integer"}},
            },
        ),
        "selective": SELECTIVE,  # optional: reports before it lack the section
        "domain": DOMAIN,  # optional: reports before it lack the section
        "meta": {"type": "object"},
    },
}


class MetricsSchemaError(ValueError):
    """``metrics.json`` does not match the schema; names the offending key path."""


def validate_metrics(obj: Any, source: str = "metrics.json") -> None:
    """Validate a parsed ``metrics.json`` against :data:`METRICS_SCHEMA`.

    Args:
        obj: The parsed JSON.
        source: File name used in the error message.

    Raises:
        MetricsSchemaError: ``"SOURCE: key.path: fault"`` for the first error found.
    """
    import jsonschema  # deferred: not a declared dependency of tumorscope

    validator = jsonschema.Draft202012Validator(METRICS_SCHEMA)
    error = jsonschema.exceptions.best_match(validator.iter_errors(obj))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "<root>"
        raise MetricsSchemaError(f"{source}: {where}: {error.message}")


# ---------------------------------------------------------------------------- figures
def figure(
    value: float | None,
    ci: tuple[float, float] | None,
    n: int,
    unit: str = "",
    reason: str | None = None,
) -> dict[str, Any]:
    """A figure ``{"value", "ci95", "n", "unit"}``; NaN/None become null with a ``reason``."""

    def clean(x: float | None) -> float | None:
        return None if x is None or not math.isfinite(x) else float(x)

    v = clean(value)
    out: dict[str, Any] = {
        "value": v,
        "ci95": None if ci is None or v is None else [clean(ci[0]), clean(ci[1])],
        "n": int(n),
        "unit": unit,
    }
    if v is None:
        out["reason"] = reason or "undefined on this data"
    return out


def undefined(reason: str, n: int = 0, unit: str = "") -> dict[str, Any]:
    """A figure that cannot be computed on the data."""
    return figure(None, None, n, unit, reason)


def _safe(fn: Callable[..., float]) -> Callable[..., float]:
    """Make a statistic NaN instead of raising on a degenerate bootstrap resample."""

    def wrapped(*arrays: Any) -> float:
        try:
            return float(fn(*arrays))
        except (ValueError, ZeroDivisionError):
            return float("nan")

    return wrapped


def boot_figure(
    arrays: Sequence[np.ndarray],
    statistic: Callable[..., float] | None,
    *,
    groups: np.ndarray | None,
    n_boot: int,
    seed: int,
    unit: str = "",
    reason: str,
) -> dict[str, Any]:
    """Point estimate + patient-level percentile bootstrap CI of ``statistic(*arrays)``.

    Args:
        arrays: Row-aligned arrays ``(N, ...)``.
        statistic: ``statistic(*arrays) -> float`` (default: mean of one array).
        groups: Patient id per row ``(N,)``; None = one row per patient.
        n_boot: Bootstrap replicates.
        seed: Random seed.
        unit: Unit of the figure.
        reason: Reason given when the estimate is undefined (NaN).
    """
    n = len(np.unique(groups)) if groups is not None else len(arrays[0])
    if len(arrays[0]) == 0:
        return undefined(reason, 0, unit)
    raw = statistic if statistic is not None else (lambda a: float(np.mean(a)))
    try:
        estimate = float(raw(*arrays))
    except ValueError as err:  # the metric says why it is undefined on this data
        return undefined(f"{reason}: {err}", n, unit)
    if not math.isfinite(estimate):
        return undefined(reason, n, unit)
    stat = _safe(raw)
    ci = bootstrap_ci(list(arrays), groups=groups, statistic=stat, n_boot=n_boot, seed=seed)
    return figure(ci.estimate, (ci.lo, ci.hi), n, unit, reason)
