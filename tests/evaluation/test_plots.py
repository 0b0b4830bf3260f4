"""Plots: each writes a real PNG with content; missing data gives a titled 'not available' panel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tumorscope.evaluation import plots
from tumorscope.evaluation.collect import Overlay


def _png(path: Path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"), dtype=float)


def _coloured_fraction(img: np.ndarray) -> float:
    """Fraction of clearly coloured (not grey) pixels: curves and overlays are coloured."""
    return float((img.max(axis=2) - img.min(axis=2) > 60).mean())


@pytest.fixture
def scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.4
    s = 1 / (1 + np.exp(-(rng.normal(size=200) + 1.5 * y)))
    return s, y.astype(int)


def test_roc_pr_reliability(tmp_path: Path, scores: tuple[np.ndarray, np.ndarray]) -> None:
    s, y = scores
    curves = {"slices": (s, y), "images": (s[:80], y[:80])}
    for fn, name in ((plots.plot_roc, "roc"), (plots.plot_pr, "pr")):
        img = _png(fn(curves, tmp_path / f"{name}.png"))
        assert _coloured_fraction(img) > 0.002
    img = _png(
        plots.plot_reliability({"before": (s, y), "after": (np.sqrt(s), y)}, tmp_path / "rel.png")
    )
    assert _coloured_fraction(img) > 0.002


def test_one_class_gives_unavailable_panel(tmp_path: Path) -> None:
    img = _png(plots.plot_roc({"x": (np.array([0.2, 0.7]), np.array([1, 1]))}, tmp_path / "r.png"))
    assert _coloured_fraction(img) == 0.0  # text only, no curve


def test_km_and_dice(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    time = rng.uniform(10, 500, 30)
    event = rng.random(30) < 0.7
    group = np.where(rng.random(30) < 0.5, "high", "low")
    img = _png(plots.plot_km(time, event, group, 0.031, tmp_path / "km.png"))
    assert _coloured_fraction(img) > 0.002
    img = _png(plots.plot_dice({"WT": rng.random(12), "TC": rng.random(12)}, tmp_path / "d.png"))
    assert _coloured_fraction(img) > 0.01
    empty = _png(
        plots.plot_km(np.zeros(0), np.zeros(0, bool), np.zeros(0), None, tmp_path / "e.png")
    )
    assert _coloured_fraction(empty) == 0.0


def test_overlays_show_worst_cases_first(tmp_path: Path) -> None:
    overlays = []
    for i in range(10):
        img = np.zeros((37, 41), np.float32)
        img[5:30, 5:35] = 1.0
        truth = np.zeros((37, 41), np.uint8)
        truth[10:20, 10:20] = 1
        overlays.append(Overlay(f"P{i}", 3, img, truth, np.roll(truth, i, axis=0), 1 - i / 10))
    rows = plots.overlay_selection(overlays, n_worst=3, n_total=5)
    assert [(o.patient_id, tag) for o, tag in rows] == [
        ("P9", "worst"),
        ("P8", "worst"),
        ("P7", "worst"),
        ("P0", "best"),
        ("P1", "best"),
    ]
    assert len(plots.overlay_selection(overlays[:2], 4, 8)) == 2
    out = plots.plot_overlays(overlays, tmp_path / "o.png", n_worst=3, n_total=5)
    img = _png(out)
    assert img.shape[0] > img.shape[1]  # 5 rows × 3 columns
    assert _coloured_fraction(img) > 0.005
