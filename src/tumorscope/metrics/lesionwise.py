"""BraTS 2023 lesion-wise Dice and HD95 of one binary 3D mask pair, distances in mm.

The BraTS 2023 challenges rank by these; the definition is that of the challenge's code,
``get_LesionWiseScores`` / ``get_LesionWiseResults`` in ``rachitsaluja/BraTS-2023-Metrics``
(``metrics.py``), for one region (WT, TC or ET):

1. The ground truth is dilated ``dilation_iterations`` times with the 18-neighbourhood
   (``generate_binary_structure(3, 2)``); ground-truth voxels in one 26-connected component
   of the dilated mask form one **lesion** (so lesions closer than about twice the dilation
   are merged into one).
2. Each lesion is dilated the same way; every 26-connected **predicted component** that
   touches the dilated lesion is matched to it (a component may match several lesions).
3. Per lesion: Dice and HD95 of the lesion against the union of its matched components;
   a lesion with no match scores Dice 0 and HD95 :data:`LESION_HD95_PENALTY_MM` (374 mm).
4. A predicted component matched to no lesion is a false positive (FP), of any size.
5. Lesions of volume ≤ ``min_volume_mm3`` (voxel count × voxel volume) are left out of the
   score; the components matched to them are not FPs.
6. ``dice = Σ lesion Dice / (L + FP)``, ``hd95 = (Σ lesion HD95 + 374·FP) / (L + FP)``
   with ``L`` the lesions kept; with no kept lesion and no FP (e.g. both masks empty)
   Dice 1 and HD95 0.

Dilations count voxels (as in the challenge's code), volumes and distances use ``spacing``.
Connected components and dilations do not depend on axis order or direction, so the scores
are the same in the canonical (RAS) grid as in the file's own voxel order.

Where this differs from the challenge's code:

- **Per-lesion HD95** is :func:`tumorscope.metrics.segmentation.hd95` (MONAI's definition:
  surfaces are voxels removed by one face-connected erosion, HD95 the larger of the two
  directed 95th percentiles). BraTS 2023 uses DeepMind's ``surface_distance`` (surface
  elements on the voxel-corner grid weighted by their area); both are the larger of two
  directed percentiles, but the surfaces differ, by up to about a voxel.
- The penalty is 374 mm here as there, while whole-volume HD95 with one empty mask is
  :data:`~tumorscope.metrics.segmentation.EMPTY_HD95_MM` (373.13 mm, this project's BraTS
  convention); the 2025 package ``brats-evaluation`` (``panoptica``) uses 373.
- ``brats-evaluation`` 0.0.10 (BraTS 2025) no longer runs this code: it matches lesions
  one-to-one (maximum bipartite matching on Dice, no dilation, no merging), averages its
  glioma "lesion-wise" Dice over matched lesions only, and pools both directed distance
  sets for HD95 (``tests/metrics/test_lesionwise.py`` checks each difference against it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from tumorscope.metrics.segmentation import as_binary_mask, hd95, spacing_tuple

LESION_HD95_PENALTY_MM = 374.0
"""HD95 (mm) of a missed lesion and of every false-positive component (BraTS 2023)."""

# Components: full (26-) connectivity; dilation: the 18-neighbourhood, as the challenge.
_COMPONENTS = ndimage.generate_binary_structure(3, 3)
_DILATION = ndimage.generate_binary_structure(3, 2)


@dataclass(frozen=True)
class LesionWiseParams:
    """Parameters of one BraTS 2023 challenge.

    Attributes:
        dilation_iterations: Dilations (18-neighbourhood) that merge lesions and match
            predicted components.
        min_volume_mm3: Lesions of at most this volume are left out of the score.
    """

    dilation_iterations: int = 3
    min_volume_mm3: float = 50.0

    def __post_init__(self) -> None:
        if self.dilation_iterations < 0 or not self.min_volume_mm3 >= 0:
            raise ValueError(
                f"lesion-wise parameters: dilation_iterations ({self.dilation_iterations}) "
                f"and min_volume_mm3 ({self.min_volume_mm3}) must be >= 0"
            )


BRATS_2023: dict[str, LesionWiseParams] = {
    "BraTS-GLI": LesionWiseParams(3, 50.0),
    "BraTS-SSA": LesionWiseParams(3, 50.0),
    "BraTS-PED": LesionWiseParams(3, 50.0),
    "BraTS-MEN": LesionWiseParams(1, 50.0),
    "BraTS-MET": LesionWiseParams(1, 2.0),
}
"""The challenge's parameters (``get_challenge_parameters``); glioma (GLI) by default."""


def brats2023_params(challenge: str) -> LesionWiseParams:
    """The parameters of a BraTS 2023 challenge, e.g. ``"BraTS-GLI"``.

    Raises:
        KeyError: Unknown name; the message lists the known ones.
    """
    try:
        return BRATS_2023[challenge]
    except KeyError:
        raise KeyError(f"challenge {challenge!r}: expected one of {sorted(BRATS_2023)}") from None


@dataclass(frozen=True)
class LesionScore:
    """One ground-truth lesion.

    Attributes:
        dice: Dice against the union of its matched predicted components (0 if none).
        hd95: HD95 in mm against that union (:data:`LESION_HD95_PENALTY_MM` if none).
        volume_mm3: Lesion volume.
        n_matched: Predicted components matched to it.
        counted: Whether it is in the score (volume above the minimum).
    """

    dice: float
    hd95: float
    volume_mm3: float
    n_matched: int
    counted: bool


@dataclass(frozen=True)
class LesionWiseResult:
    """Lesion-wise scores of one mask pair.

    Attributes:
        dice: Lesion-wise Dice.
        hd95: Lesion-wise HD95 in mm.
        lesions: Every ground-truth lesion, small ones included, in label order.
        n_fp: Predicted components matched to no lesion.
    """

    dice: float
    hd95: float
    lesions: tuple[LesionScore, ...]
    n_fp: int

    @property
    def n_tp(self) -> int:
        """Counted lesions with at least one matched component."""
        return sum(1 for s in self.lesions if s.counted and s.n_matched > 0)

    @property
    def n_fn(self) -> int:
        """Counted lesions with no matched component."""
        return sum(1 for s in self.lesions if s.counted and s.n_matched == 0)


def lesion_wise(
    pred: ArrayLike,
    target: ArrayLike,
    spacing: float | Sequence[float] | None = None,
    params: LesionWiseParams | None = None,
) -> LesionWiseResult:
    """BraTS 2023 lesion-wise Dice and HD95 (definition in the module docstring).

    Args:
        pred: Binary prediction ``(X, Y, Z)``.
        target: Binary ground truth of the same shape.
        spacing: Voxel size in mm per axis (a scalar means isotropic; default 1.0).
        params: Challenge parameters (default: glioma, :data:`BRATS_2023` ``"BraTS-GLI"``).

    Returns:
        The score and the per-lesion details.

    Raises:
        ValueError: Masks not binary, not 3D, or of different shapes.
    """
    # Hand-written matching: panoptica (the library BraTS now uses) implements another one.
    p = as_binary_mask(pred, "pred")
    t = as_binary_mask(target, "target")
    if p.ndim != 3:
        raise ValueError(f"pred: lesion-wise scores need a 3D (X, Y, Z) mask, got {p.shape}")
    if p.shape != t.shape:
        raise ValueError(f"pred: shape {p.shape} does not match target shape {t.shape}")
    sp = spacing_tuple(spacing, 3)
    prm = params or LesionWiseParams()
    it = prm.dilation_iterations
    voxel_mm3 = float(np.prod(sp))

    pred_cc, n_pred = ndimage.label(p, structure=_COMPONENTS)
    pred_size = np.bincount(pred_cc.ravel(), minlength=n_pred + 1)
    pred_boxes = ndimage.find_objects(pred_cc)
    # The challenge labels the ground truth's components first and then relabels each by
    # its dilated component; the lesion map is the dilated labels on ground-truth voxels.
    if it > 0:
        grown, _ = ndimage.label(
            ndimage.binary_dilation(t, structure=_DILATION, iterations=it), structure=_COMPONENTS
        )
        lesion_cc = np.where(t, grown, 0)
    else:
        lesion_cc, _ = ndimage.label(t, structure=_COMPONENTS)
    lesion_boxes = ndimage.find_objects(lesion_cc)

    matched_any = np.zeros(n_pred + 1, dtype=bool)
    scores: list[LesionScore] = []
    for label, box in enumerate(lesion_boxes, start=1):
        if box is None:  # every dilated component holds ground truth; kept for the type
            continue
        # Dilation reaches at most ``it`` voxels: work in the lesion's box grown by that much.
        crop = tuple(
            slice(max(s.start - it, 0), min(s.stop + it, n))
            for s, n in zip(box, t.shape, strict=True)
        )
        lesion = lesion_cc[crop] == label
        # (scipy reads ``iterations=0`` as "until nothing changes", hence the guard)
        reach = ndimage.binary_dilation(lesion, _DILATION, it) if it > 0 else lesion
        matched = np.unique(pred_cc[crop][reach])
        matched = matched[matched != 0]
        matched_any[matched] = True
        n_voxels = int(lesion.sum())
        volume = n_voxels * voxel_mm3
        if matched.size == 0:
            d, h = 0.0, LESION_HD95_PENALTY_MM
        else:
            inter = int(np.isin(pred_cc[crop][lesion], matched).sum())
            d = 2.0 * inter / (n_voxels + int(pred_size[matched].sum()))
            # Both masks lie wholly inside their joint box, so HD95 on the box is HD95.
            boxes = [box] + [pred_boxes[m - 1] for m in matched]
            joint = tuple(
                slice(min(b[i].start for b in boxes), max(b[i].stop for b in boxes))
                for i in range(3)
            )
            h = hd95(np.isin(pred_cc[joint], matched), lesion_cc[joint] == label, sp)
        counted = volume > prm.min_volume_mm3
        scores.append(LesionScore(d, h, volume, int(matched.size), counted))

    n_fp = int(n_pred - matched_any[1:].sum())
    kept = [s for s in scores if s.counted]
    denom = len(kept) + n_fp
    if denom == 0:
        return LesionWiseResult(1.0, 0.0, tuple(scores), n_fp)
    dice_score = sum(s.dice for s in kept) / denom
    hd_score = (sum(s.hd95 for s in kept) + LESION_HD95_PENALTY_MM * n_fp) / denom
    return LesionWiseResult(float(dice_score), float(hd_score), tuple(scores), n_fp)
