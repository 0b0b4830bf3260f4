"""The UI in a real browser: Debian's chromium driven by Playwright, against ``tumorscope
app`` on the tiny run and its report. Upload a slice → the overlay and its area; the gate
at 1 → "no tumour detected" and no overlay; an input the service flags → the out-of-domain
warning; a volume → the slice slider, the volume and the survival curve against the
cohort's; three slices on the Batch page → one table row each with its probability and
review flag, and the CSV download; the model card → the reliability diagram. Screenshots
go to the test's folder (or ``TUMORSCOPE_SCREENSHOTS``); the upload-to-result time is
printed, never asserted.

``make test`` installs chromium through apt-get when it is absent and the user is root.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tumorscope.ui import charts

from .test_launcher import launched, wait_for

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _flagged_input(api: str, key: str, tmp: Path) -> Path:
    """A file the service calls out of domain: the first of a CT slice, a photo, noise and
    a uniform image (the tiny test model's domain check flags only the last; the demo
    model's flags CT slices, ``benchmarks/ood.py``)."""
    from pydicom.data import get_testdata_file
    from skimage import data as skdata

    candidates = [Path(get_testdata_file("CT_small.dcm"))]
    photo, noise, flat = tmp / "photo.png", tmp / "noise.png", tmp / "uniform.png"
    Image.fromarray(skdata.astronaut()).save(photo)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (200, 200), dtype=np.uint8)).save(noise)
    Image.fromarray(np.full((200, 200), 255, np.uint8)).save(flat)
    candidates += [photo, noise, flat]
    for path in candidates:
        r = httpx.post(f"{api}/predict", headers={"X-API-Key": key},
                       files={"file": (path.name, path.read_bytes())}, timeout=120)  # fmt: skip
        if r.status_code == 200 and r.json()["domain"]["in_domain"] is False:
            return path
    raise AssertionError("none of the candidate inputs is flagged out of domain")


def test_the_ui_in_chromium(
    tiny_run: Path, ui_report: Path, synth_brain: Path, tmp_path: Path
) -> None:
    assert CHROMIUM, "chromium is not installed: `make test` installs it (apt-get, as root)"
    from playwright.sync_api import Locator, expect, sync_playwright

    shots = Path(os.environ.get("TUMORSCOPE_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    tumour = sorted((synth_brain / "kaggle" / "yes").iterdir())[0]
    healthy = sorted((synth_brain / "kaggle" / "no").iterdir())[0]
    case = sorted(p for p in (synth_brain / "brats").iterdir() if p.is_dir())[0]
    flair = next(case.glob("*_flair.nii.gz"))
    log = tmp_path / "app.log"
    t_start = time.perf_counter()
    with (
        launched(tiny_run, log, None, "--report", str(ui_report)) as (proc, ui, api),
        sync_playwright() as pw,
    ):
        wait_for(f"{ui}/_stcore/health", proc, log)
        key = _key_of(proc.pid)
        flagged = _flagged_input(api, key, tmp_path)
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(ui)
        notice = page.get_by_text("Not a diagnostic device.").first  # on every page
        expect(notice).to_be_visible(timeout=60_000)
        timings = {}

        def chart_text(text: str) -> Locator:
            """Text Vega drew in a chart's SVG (a title, an axis title, a legend entry)."""
            return page.locator("[data-testid=stVegaLiteChart] svg text", has_text=text).first

        def upload(paths: Path | list[Path], wait_for_text: str) -> None:
            files = [paths] if isinstance(paths, Path) else paths
            t0 = time.perf_counter()
            page.locator("input[type=file]").first.set_input_files([str(f) for f in files])
            expect(page.get_by_text(wait_for_text).first).to_be_visible(timeout=120_000)
            name = files[0].name if len(files) == 1 else f"batch of {len(files)}"
            timings[name] = time.perf_counter() - t0

        upload(tumour, "% of the image")
        expect(page.get_by_text("Tumour probability", exact=True).first).to_be_visible()
        expect(page.get_by_text("Segmentation (orange: tumour)")).to_be_visible()
        page.screenshot(path=str(shots / "slice-tumour.png"), full_page=True)

        page.get_by_text("Options").click()
        slider = page.get_by_role("slider").first
        slider.focus()
        slider.press("End")  # gate 1: every probability is under it
        expect(page.get_by_text("No tumour detected")).to_be_visible(timeout=120_000)
        expect(page.get_by_text("Segmentation (orange: tumour)")).to_have_count(0)
        page.screenshot(path=str(shots / "slice-no-tumour.png"), full_page=True)

        upload(flagged, "unlike the data the model was trained on")
        expect(page.get_by_text("Segmentation (orange: tumour)")).to_have_count(0)
        page.screenshot(path=str(shots / "slice-out-of-domain.png"), full_page=True)

        page.get_by_text("Volume", exact=True).click()
        expect(page.get_by_text("Upload a volume to see")).to_be_visible(timeout=60_000)
        expect(notice).to_be_visible()
        upload(flair, "Axial slice")
        expect(page.get_by_text("WT volume")).to_be_visible()
        expect(chart_text("training cohort (Kaplan–Meier")).to_be_visible(timeout=30_000)
        expect(chart_text(charts.PATIENT)).to_be_visible()
        expect(chart_text("time (days)")).to_be_visible()
        page.screenshot(path=str(shots / "volume.png"), full_page=True)
        survival = page.locator("[data-testid=stVegaLiteChart]").first
        survival.screenshot(path=str(shots / "volume-survival.png"))

        page.get_by_text("Batch", exact=True).click()
        expect(page.get_by_text("Upload slices to get a table")).to_be_visible(timeout=60_000)
        expect(notice).to_be_visible()
        batch = [tumour, healthy, flagged]
        upload(batch, "3 images: ")
        grid = page.locator("[data-testid=stDataFrame] table[role=grid]")
        expect(grid).to_have_attribute("aria-rowcount", "4")  # the header and one row each
        header = grid.locator("[role=columnheader]").all_text_contents()
        col = {name.strip(): i for i, name in enumerate(header)}
        assert {"image", "tumour probability", "needs review"} <= set(col), header

        def cell(name: str, row: int) -> str:
            return str(grid.get_by_test_id(f"glide-cell-{col[name]}-{row}").text_content())

        assert [cell("image", r) for r in range(3)] == [p.name for p in batch]
        assert all(0.0 <= float(cell("tumour probability", r)) <= 1.0 for r in range(3))
        assert cell("needs review", 2) == "true"  # the out-of-domain input
        expect(page.get_by_text("Download CSV")).to_be_visible()
        page.screenshot(path=str(shots / "batch.png"), full_page=True)

        page.get_by_text("Model card", exact=True).click()
        expect(chart_text("Reliability diagram")).to_be_visible(timeout=60_000)
        expect(chart_text(charts.PERFECT)).to_be_visible()
        expect(notice).to_be_visible()
        page.screenshot(path=str(shots / "model-card.png"), full_page=True)
        browser.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    print(
        f"upload -> rendered result, seconds: {timings}; whole test {time.perf_counter() - t_start:.1f} s"
    )


def _key_of(pid: int) -> str:
    """The key ``tumorscope app`` gave its children, read from the service child's
    environment (the test's way in; the page never has it)."""
    import subprocess

    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for kid in kids:
        env = Path(f"/proc/{kid}/environ").read_bytes().split(b"\0")
        for item in env:
            if item.startswith(b"TUMORSCOPE_API_KEY="):
                return item.split(b"=", 1)[1].decode()
    raise AssertionError("no child of tumorscope app has the key")
