"""Six-panel figure and the ``--mc-samples/--gradcam/--figure`` output files."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from tumorscope.data.types import DataError
from tumorscope.inference.cli_extras import write_uncertainty_outputs
from tumorscope.inference.figure import NOTICE, dice, six_panel, six_panel_figure
from tumorscope.inference.full import MAP_NAMES
from tumorscope.inference.predictor import Predictor
from tumorscope.inference.results import RiskResult


def _panels(truth: bool = True) -> dict[str, object]:
    yy, xx = np.mgrid[:40, :48]
    disc = (yy - 20) ** 2 + (xx - 24) ** 2 < 64
    return {
        "image": np.random.default_rng(0).normal(size=(40, 48)) + 3 * disc,
        "probability": disc * 0.9,
        "uncertainty": disc * 0.01,
        "gradcam": disc.astype(float),
        "truth": disc if truth else None,
        "risk": RiskResult(
            log_hazard=0.4, percentile=80.0, survival_times=[10.0, 100.0], survival=[0.9, 0.5]
        ),
        "risk_quantiles": {"q": [0.0, 0.5, 1.0], "value": [-1.0, 0.0, 1.0]},
        "title": "case: tumour p=0.90",
    }


def test_six_panel_has_six_titled_panels_and_the_notice() -> None:
    import matplotlib.pyplot as plt

    fig = six_panel_figure(**_panels())  # type: ignore[arg-type]
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    plt.close(fig)
    assert titles[0] == "Input" and titles[1] == "Ground truth"
    assert titles[2].startswith("Prediction (Dice 1.00")
    assert any(t.startswith("Uncertainty") for t in titles)
    assert any(t.startswith("Grad-CAM") for t in titles)
    assert "Patient risk vs training cohort" in titles
    assert NOTICE in [t.get_text() for t in fig.texts]
    assert NOTICE == "Research use only — not a diagnostic device"


def test_six_panel_png_without_truth_or_risk(tmp_path: Path) -> None:
    panels = {**_panels(truth=False), "risk": None}
    out = six_panel(tmp_path / "fig.png", **panels)
    with Image.open(out) as im:
        assert im.size == (1400, 900)
        arr = np.asarray(im.convert("L"))
    assert arr.std() > 10  # not blank


def test_dice_known_values() -> None:
    a = np.zeros((4, 4), bool)
    b = a.copy()
    assert dice(a, b) == 1.0
    a[0, :2] = True
    b[0, 1:3] = True
    assert dice(a, b) == pytest.approx(0.5)


def test_volume_outputs_in_input_geometry(
    tiny_run: Path, synth_brain: Path, tmp_path: Path
) -> None:
    predictor = Predictor.from_run(tiny_run)
    case = sorted((synth_brain / "brats").glob("BraTS*"))[0]
    seg = next(case.glob("*_seg.nii.gz"))
    fields = write_uncertainty_outputs(
        predictor, case, tmp_path, "case", mc_samples=3, gradcam=True, figure=True, truth=seg
    )
    json.dumps(fields, allow_nan=False)
    assert fields["uncertainty"]["samples"] == 3 and fields["gradcam"]["targets"]
    ref = nib.load(next(case.glob("*_flair.nii.gz")))
    unc = nib.load(tmp_path / fields["uncertainty_file"])
    assert unc.shape == (*ref.shape, len(MAP_NAMES))
    np.testing.assert_allclose(unc.affine, ref.affine, atol=1e-5)
    data = np.asarray(unc.dataobj)
    assert np.isfinite(data).all() and data.min() >= 0 and data[..., 0].max() <= 1
    assert (data[..., 3] <= data[..., 2] + 1e-5).all()  # mutual information <= entropy
    for key in ("gradcam_file", "figure_file"):
        with Image.open(tmp_path / fields[key]) as im:
            assert im.size[0] > 500
    assert isinstance(fields["figure_slice"], int)


def test_image_outputs_and_truth_checks(tiny_run: Path, tmp_path: Path) -> None:
    predictor = Predictor.from_run(tiny_run)
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 60, size=(52, 44)).astype(np.float32)
    img[10:40, 8:36] += 120
    path = tmp_path / "slice.png"
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path)
    truth = np.zeros((52, 44), np.uint8)
    truth[20:28, 15:25] = 255
    Image.fromarray(truth).save(tmp_path / "truth.png")
    fields = write_uncertainty_outputs(
        predictor, path, tmp_path / "out", "slice", mc_samples=2, gradcam=True, figure=True,
        truth=tmp_path / "truth.png",
    )  # fmt: skip
    assert fields["uncertainty_file"] == "slice_uncertainty.png"
    for key in ("uncertainty_file", "gradcam_file", "figure_file"):
        assert (tmp_path / "out" / fields[key]).is_file()
    with pytest.raises(DataError, match=r"truth array: mask shape \(5, 5\) does not match"):
        write_uncertainty_outputs(
            predictor, path, tmp_path / "out", "slice", mc_samples=0, gradcam=False,
            figure=True, truth=np.zeros((5, 5)),
        )  # fmt: skip
    off = write_uncertainty_outputs(
        predictor, path, tmp_path / "off", "slice", mc_samples=0, gradcam=False, figure=False
    )
    assert off == {"uncertainty": None, "gradcam": None}
    assert not (tmp_path / "off" / "slice_uncertainty.png").exists()


def test_drawing_an_array_past_the_pixel_cap_is_refused_before_allocating(tmp_path: Path) -> None:
    """Arrays reach the drawing code through the API too: the cap holds there as well."""
    from tumorscope.data.errors import ImageTooLargeError
    from tumorscope.data.limits import MAX_SIDE
    from tumorscope.inference.figure import map_panels
    from tumorscope.inference.overlay import save_overlay

    # A broadcast view: MAX_SIDE + 1 columns of one row cost no memory until drawn.
    wide = np.broadcast_to(np.zeros((1, 1), np.float32), (4, MAX_SIDE + 1))
    with pytest.raises(ImageTooLargeError, match=r"overlay\.png"):
        save_overlay(wide, None, tmp_path / "overlay.png", regions=["WT"], title="t")
    with pytest.raises(ImageTooLargeError, match=r"maps\.png"):
        map_panels(tmp_path / "maps.png", image=wide, maps={"m": wide}, title="t")
    assert not list(tmp_path.iterdir())
