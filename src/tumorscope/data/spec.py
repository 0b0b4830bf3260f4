"""``PreprocessSpec``: every preprocessing parameter, one value saved with caches and runs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from tumorscope.config import Config
from tumorscope.data.layouts import default_tumour_region

# Bump when preprocessing code changes meaning, so old caches are not reused.
SPEC_VERSION = 1

# Channel a 2D greyscale image fills (Kaggle sets are FLAIR-like single-channel MRI).
IMAGE_CHANNEL = "flair"


@dataclass(frozen=True)
class PreprocessSpec:
    """Every parameter of preprocessing; one value saved with caches and runs.

    Attributes:
        profile: ``brain-mri`` or ``petct``.
        channels: Channel names, in model input order.
        missing_channels: ``error`` or ``zero_fill`` (for sources lacking channels).
        image_size: Side S of the square output slices, in pixels.
        clip_percentiles: Intensity percentiles (inside the foreground) clipped before z-scoring.
        regions: Segmentation regions R, in output order.
        tumour_region: Region whose presence labels a slice ``tumour = 1`` (the one place
            prediction and evaluation take it from; chosen by the layouts' labels).
        normalisation: ``foreground_zscore`` (the only rule so far).
        foreground_threshold: Foreground = above ``min + t·(p99 − min)`` per channel.
        slices_per_patient: Maximum slices kept per volume.
        tumour_slice_fraction: Target fraction of tumour slices among those kept.
        min_foreground_fraction: Non-tumour slices need this foreground fraction.
        crop_margin: Extra side length around the foreground box, as a fraction.
        cache_dtype: Storage dtype of cached images (``float16`` or ``float32``).
        train_contrasts: Other contrasts cut with each training volume slice, for a
            one-channel model to draw from (e.g. ``("t1", "t1ce", "t2")``); empty: none.
        planes: Planes training volumes are cut along (``axial`` first; ``coronal``,
            ``sagittal``); prediction always cuts axial slices.
        plane_slices: Slices kept per volume of each non-axial plane.
        version: Preprocessing code version.
    """

    profile: str = "brain-mri"
    channels: tuple[str, ...] = ("flair",)
    missing_channels: str = "error"
    image_size: int = 128
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    regions: tuple[str, ...] = ("WT",)
    tumour_region: str = "WT"
    normalisation: str = "foreground_zscore"
    foreground_threshold: float = 0.05
    slices_per_patient: int = 32
    tumour_slice_fraction: float = 0.5
    min_foreground_fraction: float = 0.02
    crop_margin: float = 0.05
    cache_dtype: str = "float16"
    train_contrasts: tuple[str, ...] = ()
    planes: tuple[str, ...] = ("axial",)
    plane_slices: int = 0
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        checks = {
            "normalisation": (self.normalisation, ("foreground_zscore",)),
            "missing_channels": (self.missing_channels, ("error", "zero_fill")),
            "cache_dtype": (self.cache_dtype, ("float16", "float32")),
        }
        for key, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(
                    f"preprocessing spec: {key}={value!r} is not one of {list(allowed)}"
                )
        if not self.planes or self.planes[0] != "axial":
            raise ValueError(
                f"preprocessing spec: planes {list(self.planes)} must start with axial"
            )
        if self.version != SPEC_VERSION:
            raise ValueError(
                f"preprocessing spec version {self.version} is not this code's {SPEC_VERSION}; re-prepare"
            )

    @classmethod
    def from_config(cls, cfg: Config) -> PreprocessSpec:
        """The spec a config asks for."""
        d = cfg.data
        return cls(
            profile=cfg.profile,
            channels=tuple(d.channels),
            missing_channels=d.missing_channels,
            image_size=d.image_size,
            clip_percentiles=(float(d.clip_percentiles[0]), float(d.clip_percentiles[1])),
            regions=tuple(cfg.model.regions),
            tumour_region=default_tumour_region(cfg.model.regions),
            slices_per_patient=d.slices_per_patient,
            tumour_slice_fraction=d.tumour_slice_fraction,
            min_foreground_fraction=d.min_foreground_fraction,
            train_contrasts=tuple(c for c in d.train_contrasts if c not in d.channels),
            planes=("axial", *(p for p in d.planes if p != "axial")),
            plane_slices=d.plane_slices if len(d.planes) > 1 else 0,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able mapping (tuples as lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSpec:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"preprocessing spec: unknown keys {unknown}")
        kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kwargs)

    def hash(self) -> str:
        """Short stable digest of the spec (16 hex characters)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
