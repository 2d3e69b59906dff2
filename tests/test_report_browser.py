"""The report in a real browser: headless Chromium (Debian's package, driven by Playwright)
opens report.html with no console errors, every image loaded, and a screenshot that shows
the report's figures."""

from __future__ import annotations

import shutil

import cv2
import pytest

from seglab.evaluation.evaluate import evaluate

CHROMIUM = shutil.which("chromium")
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not found: `make test` installs it (scripts/ensure-browser)"
)
def test_report_renders_in_headless_chromium(trained_run, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    _, out = evaluate(trained_run, "test", out=tmp_path / "eval")
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((out / "report.html").resolve().as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])"
        )
        title = page.title()
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert errors == []
    assert len(images) == 4 and all(c and w > 100 and h > 100 for c, w, h in images)
    assert title.endswith(": test")
    pic = cv2.cvtColor(cv2.imread(str(shot)), cv2.COLOR_BGR2RGB)
    assert pic.shape[1] == 1280 and pic.shape[0] > 1500  # the whole page, figures included
    assert pic.std() > 20  # not a blank page
    # the gallery's error map: its red (230, 30, 30) survives the browser's scaling somewhere
    red = (pic[..., 0] > 200) & (pic[..., 1] < 70) & (pic[..., 2] < 70)
    assert red.sum() > 50
    # the confusion matrix's Blues colour map: saturated blue cells are on the page
    blue = (pic[..., 2] > 120) & (pic[..., 0] < 60) & (pic[..., 2].astype(int) - pic[..., 0] > 80)
    assert blue.sum() > 200
