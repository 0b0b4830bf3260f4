"""Files behind ``tumorscope predict --mc-samples T --gradcam --figure``.

Writes ``<name>_uncertainty.nii.gz`` (volumes: a 4D file, the last axis holding
:data:`~tumorscope.inference.full.MAP_NAMES`, in the input's stored grid and affine)
or ``<name>_uncertainty.png`` (2D inputs), ``<name>_gradcam.png`` and ``<name>_figure.png``,
and returns the fields to merge into ``<name>.json``. Each file is written through an
:class:`~tumorscope.fileio.OutputFolder`: atomically, and never over a file tumorscope did
not write (nor over its own earlier outputs without ``overwrite``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from tumorscope.data.imagefolder import load_image
from tumorscope.data.layout import region_masks
from tumorscope.data.readers import is_nifti_path, read_nifti, save_nifti
from tumorscope.data.transforms import to_display
from tumorscope.data.types import DataError
from tumorscope.fileio import OutputFolder
from tumorscope.inference.figure import map_panels, six_panel
from tumorscope.inference.full import MAP_NAMES, MAP_UNITS, FullResult, predict_full
from tumorscope.inference.predictor import Predictor
from tumorscope.inference.results import input_affine, to_stored
from tumorscope.inference.uncertainty import DEFAULT_REVIEW_CUTOFF

log = logging.getLogger(__name__)

TruthInput = np.ndarray | str | Path


def write_uncertainty_outputs(
    predictor: Predictor,
    input_path: str | Path,
    out_dir: str | Path,
    name: str,
    *,
    mc_samples: int,
    gradcam: bool,
    figure: bool,
    tta_views: int = 0,
    truth: TruthInput | None = None,
    review_cutoff: float = DEFAULT_REVIEW_CUTOFF,
    gate_threshold: float | None = None,
    seed: int = 0,
    overwrite: bool = False,
    slice_gate: bool | None = None,
    min_component_ml: float | None = None,
    clinical: Mapping[str, float | None] | None = None,
) -> dict[str, Any]:
    """Run :func:`predict_full` on one input and write its uncertainty/Grad-CAM/figure files.

    Args:
        predictor: A ``Predictor``.
        input_path: The input (as ``tumorscope predict`` takes it).
        out_dir: Output folder (created).
        name: Output stem ``<name>``.
        mc_samples: MC-dropout samples (0: no uncertainty files).
        gradcam: Write ``<name>_gradcam.png``.
        figure: Write the six-panel ``<name>_figure.png``.
        tta_views: Test-time-augmentation views (0: none), merged with ``mc_samples``.
        truth: Ground-truth mask: a NIfTI file on the input's grid (volumes), a PNG/JPEG or
            NIfTI or ``(H, W)`` array of the image's size (2D); non-zero = tumour.
        review_cutoff: Score (nats) above which the case needs review.
        gate_threshold: Override of the conditional-mask gate.
        seed: Seed of the dropout masks.
        overwrite: Replace files an earlier prediction wrote in ``out_dir`` (never others).
        slice_gate: Override of the run's slice gate (volumes).
        min_component_ml: Override of the run's smallest kept 3D component, mL (volumes).
        clinical: Covariates of the case's risk (volumes; None or absent: imputed), which
            the figure's risk panel shows.

    Returns:
        Fields for ``<name>.json``: ``uncertainty``, ``gradcam`` and the written file names
        (``uncertainty_file``, ``gradcam_file``, ``figure_file``).

    Raises:
        DataError: Unreadable input or truth, or a truth mask of another shape.
        OutputExistsError: A file would replace one it may not.
    """
    out = OutputFolder(out_dir, overwrite=overwrite)
    full = predict_full(
        predictor, input_path, mc_samples=mc_samples, gradcam=gradcam or figure,
        tta_views=tta_views,
        review_cutoff=review_cutoff, gate_threshold=gate_threshold, seed=seed,
        slice_gate=slice_gate, min_component_ml=min_component_ml,
        clinical=None if clinical is None else dict(clinical),
    )  # fmt: skip
    fields: dict[str, Any] = {
        "uncertainty": full.uncertainty_json(),
        "gradcam": full.gradcam_json(),
    }
    view = _View.of(full, truth)
    title = _title(full, name)
    if full.mc is not None and view.maps is not None:
        if full.loaded is not None:
            written = out.write_with(
                f"{name}_uncertainty.nii.gz", lambda p: _write_nifti_maps(full, p)
            )
            fields["uncertainty_file"] = written.name
        else:
            planes = view.maps_2d() or []
            named = dict(zip(MAP_NAMES, planes, strict=True))
            units = dict(zip(MAP_NAMES, MAP_UNITS, strict=True))
            image = view.image()
            out.write_with(
                f"{name}_uncertainty.png",
                lambda p: map_panels(p, image, named, title=title, labels=units),
            )
            fields["uncertainty_file"] = f"{name}_uncertainty.png"
    if gradcam and view.cams is not None:
        cams = view.cams_2d()
        names = ["CAM: tumour logit", "CAM: patient log-hazard"]
        if view.z is not None and full.slice_index is not None:
            used = getattr(full.base.risk, "slices_used", [])
            if view.z not in used:
                names[1] += "\n(slice not pooled by the head)"
        panels = {names[i]: c for i, c in enumerate(cams) if c is not None}
        image = view.image()
        out.write_with(
            f"{name}_gradcam.png",
            lambda p: map_panels(p, image, panels, title=title, overlay=True),
        )
        fields["gradcam_file"] = f"{name}_gradcam.png"
    if figure:
        shown = view.maps_2d()
        prob = shown[0] if shown is not None else view.probability_2d()
        unc = shown[3] if shown is not None else np.zeros_like(prob)
        panels_6 = dict(
            image=view.image(), probability=prob, uncertainty=unc,
            gradcam=view.cams_2d()[0] if view.cams is not None else None,
            truth=view.truth_2d(), risk=getattr(full.base, "risk", None),
            risk_quantiles=predictor.calibration.risk_quantiles, title=title,
            mask=view.mask_2d(),
        )  # fmt: skip
        out.write_with(f"{name}_figure.png", lambda p: six_panel(p, **panels_6))
        fields["figure_file"] = f"{name}_figure.png"
        if view.z is not None:
            fields["figure_slice"] = int(view.z)
    return fields


def _title(full: FullResult, name: str) -> str:
    base = full.base
    parts = [f"{name}: tumour p={base.tumour_probability:.2f}"]
    if full.mc is not None:
        flag = "NEEDS REVIEW" if full.needs_review else "no review flag"
        parts.append(f"uncertainty {full.uncertainty_score:.3f} nats ({flag})")
    return ", ".join(parts)


class _View:
    """The 2D plane shown in the PNGs: a 2D input itself, or one axial slice of a volume."""

    def __init__(
        self, full: FullResult, truth: np.ndarray | None, z: int | None, maps: np.ndarray | None,
        cams: list[np.ndarray | None] | None,
    ) -> None:  # fmt: skip
        self.full, self.truth, self.z, self.maps, self.cams = full, truth, z, maps, cams

    @classmethod
    def of(cls, full: FullResult, truth: TruthInput | None) -> _View:
        maps = full.maps()
        cams: list[np.ndarray | None] | None = None
        if full.gradcam_tumour is not None or full.gradcam_survival is not None:
            cams = [
                None if c is None else np.asarray(full.restore(c[:, None]))[0]
                for c in (full.gradcam_tumour, full.gradcam_survival)
            ]
        mask = None if truth is None else _read_truth(truth, full)
        z = None
        if full.loaded is not None:
            z = _pick_slice(full, maps, mask)
        return cls(full, mask, z, maps, cams)

    def _plane(self, a: np.ndarray) -> np.ndarray:
        return a if self.z is None else to_display(a[..., self.z])

    def image(self) -> np.ndarray:
        full = self.full
        if full.loaded is not None:
            return self._plane(full.loaded.image[0])
        return np.asarray(full.base.image, dtype=np.float32)

    def maps_2d(self) -> list[np.ndarray] | None:
        return None if self.maps is None else [self._plane(m) for m in self.maps]

    def cams_2d(self) -> list[np.ndarray | None]:
        return [None if c is None else self._plane(c) for c in (self.cams or [None, None])]

    def truth_2d(self) -> np.ndarray | None:
        return None if self.truth is None else self._plane(self.truth)

    def mask_2d(self) -> np.ndarray | None:
        base = self.full.base
        if self.full.loaded is not None:
            return None if base.gated else self._plane(base.masks[0])
        return None if base.mask is None else base.mask[0]

    def probability_2d(self) -> np.ndarray:
        base = self.full.base
        if self.full.loaded is not None:
            return self._plane(base.masks_ungated[0].astype(np.float32))
        return np.asarray(base.probabilities[0], dtype=np.float32)


def _pick_slice(full: FullResult, maps: np.ndarray | None, truth: np.ndarray | None) -> int:
    """Axial slice to show: most predicted tumour, else most true tumour, else highest p."""
    for vol in (None if maps is None else maps[0] >= 0.5, full.base.masks_ungated[0] > 0, truth):
        if vol is not None and vol.any():
            return int(vol.reshape(-1, vol.shape[-1]).sum(axis=0).argmax())
    probs = full.base.slice_probabilities
    return max(probs, key=probs.get) if probs else full.loaded.image.shape[-1] // 2


def _read_truth(truth: TruthInput, full: FullResult) -> np.ndarray:
    """The truth mask as bool in the grid the view uses (canonical volume / 2D input)."""
    where = "truth array" if isinstance(truth, np.ndarray) else str(truth)
    if full.loaded is not None:
        if isinstance(truth, np.ndarray):
            raise DataError(where, "a volume's truth must be a NIfTI file (its geometry is needed)")
        labels, _ = read_nifti(Path(truth))
        expected = tuple(full.loaded.meta.shape)
        if tuple(labels.shape) != expected:
            raise DataError(
                truth, f"mask shape {labels.shape} does not match image shape {expected}"
            )
        return _binary(labels, full)
    if isinstance(truth, np.ndarray):
        arr = np.asarray(truth)
    elif is_nifti_path(Path(truth)):
        arr = np.squeeze(np.asarray(nib.load(Path(truth)).dataobj))  # type: ignore[attr-defined]
    else:
        arr, _ = load_image(Path(truth))
    expected = tuple(np.asarray(full.base.image).shape)
    if arr.ndim != 2 or tuple(arr.shape) != expected:
        raise DataError(where, f"mask shape {arr.shape} does not match image shape {expected}")
    return np.asarray(arr) > 0


def _binary(labels: np.ndarray, full: FullResult) -> np.ndarray:
    """The spec's tumour region of a truth label volume, through the case's label convention."""
    convention = full.loaded.labels or full.source  # only volumes (full.loaded set) get here
    try:
        return region_masks(labels, convention, [full.tumour_region])[0].astype(bool)
    except ValueError:  # a layout without named regions: any label is tumour
        return np.asarray(labels) > 0


def _write_nifti_maps(full: FullResult, path: Path) -> str:
    """4D NIfTI of the maps in the input's stored grid (same reorientation as ``write_like``)."""
    maps = full.maps()
    if maps is None:
        raise ValueError(f"{path.name}: no MC-dropout maps to write")
    meta = full.loaded.meta
    stored = np.moveaxis(to_stored(maps, meta), 0, -1).astype(np.float32)
    affine = input_affine(meta)
    save_nifti(np.ascontiguousarray(stored), affine, path)
    return path.name
