"""What one training volume gives the slice cache: its axial slices (exactly as prediction
cuts them), the other planes' slices and the other contrasts of every slice."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from tumorscope.data.intensity import intensity_stats
from tumorscope.data.layout import load_case
from tumorscope.data.planes import PlaneCut, PlaneSlices, cut_plane, cut_slices, plan_plane
from tumorscope.data.spec import PreprocessSpec
from tumorscope.data.transforms import VolumeSlices, preprocess_volume, volume_parts
from tumorscope.data.types import Case, DataError

log = logging.getLogger(__name__)

PLANE_CODES = {"axial": 0, "coronal": 1, "sagittal": 2}


@dataclass(frozen=True)
class CaseCut:
    """The cache's slices of one volume.

    Attributes:
        axial: The axial slices (:func:`~tumorscope.data.transforms.preprocess_volume`).
        alternates: ``(N, K, S, S)`` the axial slices in ``spec.train_contrasts``, or None.
        present: Which of ``spec.train_contrasts`` the case has (all False without).
        planes: Slices of the other planes of ``spec.planes``.
        problem: Why the other contrasts were left out (None when they were not).
    """

    axial: VolumeSlices
    alternates: np.ndarray | None
    present: tuple[bool, ...]
    planes: list[PlaneSlices]
    problem: str | None = None

    @property
    def n_slices(self) -> int:
        return int(self.axial.images.shape[0] + sum(p.images.shape[0] for p in self.planes))

    def contrast_bits(self) -> int:
        """Bit k set when the case has ``spec.train_contrasts[k]``."""
        return sum(1 << k for k, p in enumerate(self.present) if p)


def _other_contrasts(
    case: Case, spec: PreprocessSpec, max_voxels: int
) -> tuple[tuple[np.ndarray, tuple[bool, ...]] | None, str | None]:
    """The case's ``train_contrasts`` volumes (zero-filled where absent), or why not."""
    if not spec.train_contrasts or not any(c in case.channels for c in spec.train_contrasts):
        return None, None
    try:
        other = load_case(
            case, spec.train_contrasts, missing="zero_fill", max_voxels=max_voxels, with_mask=False
        )
    except DataError as e:  # the model's own channel is fine: keep the case without them
        return None, f"{e} (other contrasts left out)"
    present = other.channel_present or (True,) * len(spec.train_contrasts)
    return (other.image, tuple(present)), None


def cut_case(case: Case, spec: PreprocessSpec, source: str, max_voxels: int) -> CaseCut:
    """Load one case and cut every training slice the spec asks for.

    Raises:
        DataError: The case's own channels or mask cannot be read.
    """
    loaded = load_case(case, spec.channels, missing=spec.missing_channels, max_voxels=max_voxels)
    parts = volume_parts(loaded, spec, source=source)
    axial = preprocess_volume(loaded, spec, source=source, parts=parts)
    extra, problem = _other_contrasts(case, spec, max_voxels)
    alternates = None
    if extra is not None:
        values, present = extra
        cut = PlaneCut("axial", axial.slice_index, axial.restore.box, (1.0, 1.0))
        stats = intensity_stats(values, parts.use, present, spec.clip_percentiles)
        alternates = cut_slices(values, cut, spec.image_size, use=parts.use, stats=stats)
    planes = [
        cut_plane(
            loaded.image,
            parts,
            plan_plane(parts, spec, plane, spec.plane_slices, loaded.meta.spacing),
            spec,
            extra=extra,
        )
        for plane in spec.planes[1:]
    ]
    present = extra[1] if extra is not None else (False,) * len(spec.train_contrasts)
    return CaseCut(axial, alternates, present, planes, problem)


def volume_job(
    job: tuple[Case, PreprocessSpec, str, int],
) -> tuple[CaseCut | None, str | None]:
    """:func:`cut_case` of ``(case, spec, source, max_voxels)``, or its fault (a worker
    process runs it when the cache is built with ``workers > 1``)."""
    case, spec, source, max_voxels = job
    try:
        return cut_case(case, spec, source, max_voxels), None
    except DataError as e:
        return None, str(e)


def case_rows(cut: CaseCut, patient_id: str, source: str) -> list[dict[str, Any]]:
    """``slices.csv`` rows of a :class:`CaseCut`: axial slices first, then each plane's."""
    rows = []
    bits = cut.contrast_bits()
    groups: list[tuple[str, np.ndarray, np.ndarray | None, np.ndarray, bool]] = [
        (
            "axial",
            cut.axial.slice_index,
            cut.axial.tumour,
            cut.axial.foreground,
            cut.axial.masks is not None,
        )
    ]
    for p in cut.planes:
        fg = np.ones(p.cut.index.size, dtype=np.float32)
        groups.append((p.cut.plane, p.cut.index, p.tumour, fg, p.masks is not None))
    for plane, index, tumour, foreground, has_mask in groups:
        for j in range(index.size):
            rows.append(
                {
                    "patient_id": patient_id,
                    "source": source,
                    "slice_index": int(index[j]),
                    "tumour": int(tumour[j]) if tumour is not None else -1,
                    "has_tumour": tumour is not None,
                    "tumour_type": -1,
                    "has_mask": has_mask,
                    "foreground": float(foreground[j]),
                    "sha1": "",
                    "plane": PLANE_CODES[plane],
                    "contrasts": bits,
                }
            )
    return rows
