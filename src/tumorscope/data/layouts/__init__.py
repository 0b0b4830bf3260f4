"""The layout registry: one :class:`Layout` per on-disk dataset convention.

:data:`LAYOUTS` maps each layout's name to its instance, in search order; :func:`get_layout`
is the one getter, whose ``KeyError`` lists the valid names (smp's encoder dict). Discovery,
loading, ``data inspect``/``validate``, region masks and the predictor's input reader loop
over it. A new layout is one module with a :class:`Layout` subclass plus one entry here.
"""

from __future__ import annotations

from collections.abc import Sequence

from tumorscope.data.layouts.base import NO_LABELS, Discovery, Layout, region_labels
from tumorscope.data.layouts.brats import BratsLayout
from tumorscope.data.layouts.dicom import DicomLayout
from tumorscope.data.layouts.hecktor import HecktorLayout
from tumorscope.data.layouts.imagefolder import Kaggle4Layout, KaggleLayout
from tumorscope.data.layouts.msd import MsdLayout
from tumorscope.data.layouts.nnunet import NnunetLayout
from tumorscope.data.types import RegionLabels

__all__ = [
    "LAYOUTS",
    "NO_LABELS",
    "Discovery",
    "Layout",
    "default_tumour_region",
    "get_layout",
    "layout_labels",
    "region_labels",
]

LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        BratsLayout(),
        KaggleLayout(),
        Kaggle4Layout(),
        HecktorLayout(),
        DicomLayout(),
        MsdLayout(),
        NnunetLayout(),
    )
}


def get_layout(name: str) -> Layout:
    """The registered layout called ``name``.

    Raises:
        KeyError: No such layout; the message lists the valid names.
    """
    try:
        return LAYOUTS[name]
    except KeyError:
        raise KeyError(f"unknown layout {name!r}; valid layouts: {', '.join(LAYOUTS)}") from None


def layout_labels(name: str) -> RegionLabels:
    """The label convention of layout ``name`` (:data:`NO_LABELS` for a name that is not a
    layout, such as ``"volume"`` for an input without one)."""
    layout = LAYOUTS.get(name)
    return NO_LABELS if layout is None else layout.labels


def default_tumour_region(regions: Sequence[str]) -> str:
    """Tumour region for a model segmenting ``regions``: the default of the first layout whose
    labels define them all (``WT`` for BraTS regions, ``GTVp`` for HECKTOR's), else ``regions[0]``."""
    for layout in LAYOUTS.values():
        labels = layout.labels
        if labels.tumour_region is not None and all(r in labels.regions for r in regions):
            return labels.tumour_region
    return regions[0]
