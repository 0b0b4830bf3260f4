"""Each page of the Streamlit app (AppTest) against a real running service."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from tumorscope import DISCLAIMER
from tumorscope.cli.launch import APP_SCRIPT
from tumorscope.ui import charts
from tumorscope.ui.client import API_ENV, KEY_ENV
from tumorscope.ui.views import NO_TUMOUR

from .conftest import KEY, Server

pytestmark = pytest.mark.slow


@pytest.fixture
def app(ui_server: Server, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv(API_ENV, ui_server.url)
    monkeypatch.setenv(KEY_ENV, KEY)
    at = AppTest.from_file(str(APP_SCRIPT), default_timeout=120)
    at.run()
    return at


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [e.value for e in at.caption]
    parts += [x.value for x in [*at.success, *at.warning, *at.info, *at.error, *at.subheader]]
    return "\n".join(str(p) for p in parts)


def test_slice_page_shows_probability_overlay_and_area(app: AppTest, synth_brain: Path) -> None:
    png = sorted((synth_brain / "kaggle" / "yes").iterdir())[0]
    assert DISCLAIMER in _texts(app)
    app.slider[0].set_value(0.0)  # gate 0: the tiny model's probability is over it
    app.file_uploader[0].set_value((png.name, png.read_bytes(), "image/jpeg"))
    app.run()
    assert not app.exception
    labels = [m.label for m in app.metric]
    assert labels[:3] == ["Tumour probability", "Confidence", "Threshold"]
    assert 0.0 <= float(app.metric[0].value) <= 1.0
    assert "px (" in _texts(app) and "% of the image" in _texts(app)
    captions = [c for i in app.get("image") for c in i.captions]
    assert any("Segmentation" in c for c in captions), captions


def test_slice_page_under_the_gate_says_no_tumour(app: AppTest, synth_brain: Path) -> None:
    png = sorted((synth_brain / "kaggle" / "no").iterdir())[0]
    app.slider[0].set_value(1.0)
    app.file_uploader[0].set_value((png.name, png.read_bytes(), "image/jpeg"))
    app.run()
    assert not app.exception
    assert NO_TUMOUR in _texts(app) and "px (" not in _texts(app)


def test_slice_page_reports_a_refused_upload(app: AppTest) -> None:
    app.file_uploader[0].set_value(("x.png", b"not an image", "image/png"))
    app.run()
    assert not app.exception and any("HTTP 415" in e.value for e in app.error)


def test_volume_page_slider_volumes_and_download(app: AppTest, synth_brain: Path) -> None:
    case = sorted(p for p in (synth_brain / "brats").iterdir() if p.is_dir())[0]
    flair = next(case.glob("*_flair.nii.gz"))
    app.sidebar.radio[0].set_value("Volume")
    app.run()
    app.file_uploader[0].set_value((flair.name, flair.read_bytes(), "application/gzip"))
    app.run()
    assert not app.exception
    assert any(m.label.endswith("volume") for m in app.metric)
    assert app.slider and app.slider[0].max == 39  # the tiny volumes have 40 axial slices
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in case.iterdir():
            z.write(f, f"{case.name}/{f.name}")
    app.file_uploader[0].set_value(("case.zip", buf.getvalue(), "application/zip"))
    app.run()
    assert not app.exception and any(m.label == "Risk (log-hazard)" for m in app.metric)
    assert any(m.label == "Risk percentile in the training cohort" for m in app.metric)
    (spec,) = _charts(app)
    legend = spec["encoding"]["color"]["scale"]["domain"]
    assert legend[0] == charts.PATIENT and legend[1].startswith("training cohort (Kaplan–Meier")
    assert spec["encoding"]["x"]["title"] == "time (days)"


def test_batch_page_table(app: AppTest, synth_brain: Path) -> None:
    imgs = sorted((synth_brain / "kaggle" / "yes").iterdir())[:3]
    app.sidebar.radio[0].set_value("Batch")
    app.run()
    app.file_uploader[0].set_value([(p.name, p.read_bytes(), "image/jpeg") for p in imgs])
    app.run()
    assert not app.exception
    table = app.dataframe[0].value
    assert list(table["image"]) == [p.name for p in imgs]
    assert "3 images: " in _texts(app)


def test_model_card_page(app: AppTest, ui_report: Path) -> None:
    app.sidebar.radio[0].set_value("Model card")
    app.run()
    assert not app.exception
    assert app.metric[0].label == "Parameters" and int(app.metric[0].value.replace(",", "")) > 0
    assert KEY not in str(app.get("json"))  # the key never reaches the page
    cal = json.loads((ui_report / "metrics.json").read_text())["calibration"]
    (spec,) = _charts(app)
    assert spec["title"].startswith("Reliability diagram (10 equal-mass bins)")
    legend = spec["layer"][-1]["encoding"]["color"]["scale"]["domain"]
    assert legend[0] == f"all sources, before temperature (ECE {cal['ece']['value']:.3f})"
    after = cal["ece_after_temperature"]["value"]
    assert legend[1].startswith("all sources, after temperature") and legend[1].endswith(
        f"(ECE {after:.3f})"
    )
    assert legend[-1] == charts.PERFECT


def _charts(app: AppTest) -> list[dict[str, Any]]:
    """The Vega-Lite specs the page drew."""
    return [json.loads(c.proto.spec) for c in app.get("vega_lite_chart")]
