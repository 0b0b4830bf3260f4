"""The pages' logic without Streamlit: the conditional display, overlays, tables."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

from tumorscope.ui import views


def _png(a: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(a.astype(np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _answer(p: float, mask: bool, in_domain: bool | None = True) -> dict[str, Any]:
    labels = np.zeros((6, 5), np.uint8)
    labels[2:4, 1:3] = 1
    return {
        "classification": {"label": "tumour" if p >= 0.5 else "no tumour",
                           "tumour_probability": p, "confidence": max(p, 1 - p), "threshold": 0.5},
        "segmentation": {
            "mask_available": mask, "mask_png_base64": _png(labels) if mask else None,
            "area_pixels": {"WT": 4} if mask else None, "percentage": {"WT": 13.3} if mask else None,
            "area_mm2": None,
        },
        "domain": {"in_domain": in_domain, "score": 1.0, "threshold": 2.0, "reason": ""},
        "needs_review": in_domain is False, "recommendation": "r", "disclaimer": "d",
        "gradcam": None, "warnings": [],
    }  # fmt: skip


def test_under_the_gate_no_tumour_and_no_mask() -> None:
    v = views.slice_view(_answer(0.1, mask=False))
    assert v.verdict == views.NO_TUMOUR and not v.found and v.mask is None and v.area_pixels is None


def test_above_the_gate_the_mask_and_its_area() -> None:
    v = views.slice_view(_answer(0.9, mask=True))
    assert v.found and v.verdict == "Tumour found" and v.area_pixels == 4
    assert v.mask is not None and int((v.mask == 1).sum()) == 4
    rgb = views.overlay(np.arange(30.0).reshape(6, 5), v.mask)
    assert rgb.shape == (6, 5, 3)
    inside, outside = rgb[2, 1], rgb[0, 0]
    assert inside[0] > inside[2] and outside[0] == outside[1] == outside[2]  # tinted orange


def test_out_of_domain_shows_the_warning_and_never_the_mask() -> None:
    v = views.slice_view(_answer(0.9, mask=True, in_domain=False))
    assert v.out_of_domain and not v.found and v.mask is None and v.needs_review


def test_batch_rows_keep_upload_order_and_errors() -> None:
    ok = {"index": 1, "ok": True, "prediction": _answer(0.8, True)}
    bad = {
        "index": 0,
        "ok": False,
        "error": {"code": "unsupported_type", "message": "not an image"},
    }
    rows = views.batch_rows(["a.png", "b.png"], {"items": [bad, ok]})
    assert [r["image"] for r in rows] == ["a.png", "b.png"]
    assert rows[0]["error"] == "not an image" and rows[1]["mask area (px)"] == 4
    csv = views.rows_csv(rows).decode().splitlines()
    assert csv[0] == "image,tumour probability,mask area (px),needs review,error" and len(csv) == 3
    assert views.batch_summary(rows) == "2 images: 0 flagged for review, 1 failed"


def test_batch_summary_counts_the_flagged() -> None:
    flagged = {"index": 0, "ok": True, "prediction": _answer(0.9, False, in_domain=False)}
    rows = views.batch_rows(["odd.png"], {"items": [flagged]})
    assert rows[0]["needs review"] is True
    assert views.batch_summary(rows) == "1 image: 1 flagged for review, 0 failed"
