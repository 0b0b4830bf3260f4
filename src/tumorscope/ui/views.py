"""What each page shows, as plain functions of the service's answers (tested without
Streamlit): the verdict, the conditional mask overlay, tables; the charts are in
:mod:`tumorscope.ui.charts`."""

from __future__ import annotations

import base64
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

#: One colour per region (Okabe–Ito, colour-blind safe), as the CLI's overlays.
REGION_COLOURS = ((230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66))
NO_TUMOUR = "No tumour detected"
OUT_OF_DOMAIN = (
    "This image is unlike the data the model was trained on: its outputs are unreliable "
    "and no mask is shown."
)


def decode_png(b64: str) -> np.ndarray:
    """A base64 PNG as an array (``(H, W)`` or ``(H, W, 3)``)."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def grey(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 of an image windowed to its 1st–99th percentiles."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3:
        img = img[..., :3].mean(axis=-1)
    lo, hi = np.percentile(img, (1, 99)) if img.size else (0.0, 1.0)
    g = np.clip((img - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    return np.repeat(np.round(255 * g).astype(np.uint8)[..., None], 3, axis=-1)


def overlay(image: np.ndarray, labels: np.ndarray | None, alpha: float = 0.45) -> np.ndarray:
    """``(H, W, 3)`` uint8: the image in grey with label ``k`` tinted in colour ``k − 1``."""
    rgb = grey(image).astype(np.float64)
    if labels is not None:
        for k, colour in enumerate(REGION_COLOURS, start=1):
            inside = labels == k
            rgb[inside] = (1 - alpha) * rgb[inside] + alpha * np.asarray(colour, dtype=np.float64)
    return np.round(rgb).astype(np.uint8)


def read_image(name: str, data: bytes) -> np.ndarray | None:
    """The uploaded slice as an array for display (PNG/JPEG via Pillow, DICOM via pydicom,
    2D NIfTI via nibabel); None when it cannot be shown (the service still judges it)."""
    try:
        if data[:4] == b"\x89PNG" or data[:3] == b"\xff\xd8\xff":
            with Image.open(io.BytesIO(data)) as im:
                return np.asarray(im.convert("L"), dtype=np.float64)
        if data[128:132] == b"DICM":
            import pydicom  # deferred: only DICOM uploads need it

            return np.asarray(pydicom.dcmread(io.BytesIO(data)).pixel_array, dtype=np.float64)
        vol = read_nifti(name, data)
        return None if vol is None else np.squeeze(vol)
    except Exception:
        return None


def read_nifti(name: str, data: bytes) -> np.ndarray | None:
    """A NIfTI upload's voxels in nibabel's RAS+ canonical orientation, or None."""
    import nibabel as nib  # deferred: only volume pages need it

    suffix = ".nii.gz" if data[:2] == b"\x1f\x8b" else ".nii"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            img = nib.as_closest_canonical(nib.load(path))
            return np.asarray(img.dataobj, dtype=np.float32)
        except Exception:
            return None


@dataclass
class SliceView:
    """What the Slice page shows for one answer of ``/predict``."""

    probability: float
    threshold: float
    confidence: float
    verdict: str
    found: bool
    out_of_domain: bool
    needs_review: bool
    mask: np.ndarray | None
    area_pixels: int | None
    percentage: float | None
    area_mm2: float | None
    gradcam: np.ndarray | None
    recommendation: str
    disclaimer: str
    warnings: list[str] = field(default_factory=list)
    uncertainty: dict[str, Any] | None = None


def slice_view(answer: dict[str, Any]) -> SliceView:
    """The Slice page's content: under the gate — or out of domain — "no tumour detected"
    or the warning and no mask; above it the mask, its area and percentage."""
    c, seg, dom = answer["classification"], answer["segmentation"], answer["domain"]
    ood = dom.get("in_domain") is False
    show_mask = seg["mask_available"] and not ood
    mask = decode_png(seg["mask_png_base64"]) if show_mask and seg["mask_png_base64"] else None
    area = sum(seg["area_pixels"].values()) if show_mask and seg["area_pixels"] else None
    pct = sum(seg["percentage"].values()) if show_mask and seg["percentage"] else None
    mm2 = sum(seg["area_mm2"].values()) if show_mask and seg.get("area_mm2") else None
    if ood:
        verdict = "Out of domain: the result is unreliable"
    elif not seg["mask_available"]:
        verdict = NO_TUMOUR
    else:
        verdict = "Tumour found" if c["label"] == "tumour" else "Tumour probability over the gate"
    cam = answer.get("gradcam")
    return SliceView(
        probability=float(c["tumour_probability"]),
        threshold=float(c["threshold"]),
        confidence=float(c["confidence"]),
        verdict=verdict,
        found=show_mask,
        out_of_domain=ood,
        needs_review=bool(answer.get("needs_review")),
        mask=mask,
        area_pixels=area,
        percentage=pct,
        area_mm2=mm2,
        gradcam=None if not cam else decode_png(cam["png_base64"]),
        recommendation=str(answer["recommendation"]),
        disclaimer=str(answer["disclaimer"]),
        warnings=list(answer.get("warnings", [])),
        uncertainty=answer.get("uncertainty"),
    )


def batch_rows(names: list[str], answer: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per uploaded image of a ``/predict/batch`` answer."""
    rows = []
    for item in answer["items"]:
        name = names[item["index"]]
        if not item["ok"]:
            err = item["error"]
            rows.append({"image": name, "tumour probability": None, "mask area (px)": None,
                         "needs review": None, "error": err["message"]})  # fmt: skip
            continue
        p = item["prediction"]
        area = p["segmentation"]["area_pixels"]
        rows.append({
            "image": name,
            "tumour probability": round(float(p["classification"]["tumour_probability"]), 4),
            "mask area (px)": None if area is None else int(sum(area.values())),
            "needs review": bool(p["needs_review"]),
            "error": "",
        })  # fmt: skip
    return rows


def batch_summary(rows: list[dict[str, Any]]) -> str:
    """One line over the batch table: how many images, flagged for review, failed."""
    flagged = sum(1 for r in rows if r["needs review"])
    failed = sum(1 for r in rows if r["error"])
    images = "1 image" if len(rows) == 1 else f"{len(rows)} images"
    return f"{images}: {flagged} flagged for review, {failed} failed"


def rows_csv(rows: list[dict[str, Any]]) -> bytes:
    """The batch table as CSV bytes (for the download button)."""
    import csv

    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def mask_volume(data: bytes) -> np.ndarray | None:
    """The label volume of a downloaded ``mask.nii.gz`` (RAS+ canonical), or None."""
    return read_nifti("mask.nii.gz", data)


def volume_slice(image: np.ndarray | None, mask: np.ndarray | None, z: int) -> np.ndarray:
    """Axial slice ``z`` of a volume with its mask overlay (the mask alone without image)."""
    base = mask if image is None else image
    if base is None:
        raise ValueError("nothing to show")
    img = base[..., z] if base.ndim == 3 else base[0, ..., z]
    lab = None if mask is None else mask[..., z]
    return overlay(np.rot90(img), None if lab is None else np.rot90(lab))
