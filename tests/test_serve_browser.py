"""The web page in a real browser: ``seglab serve`` on 127.0.0.1, headless Chromium (Debian's
package, driven by Playwright) uploads a real CamVid image, waits for the overlay, checks the
legend and the area table, hides a class, downloads the mask and compares it with the mask
``seglab predict`` writes for the same image (identical). The screenshot is kept in the
test's tmp folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from seglab.data.synthetic import CLASSES
from tests.conftest import run_cli, shared_dataset
from tests.test_report_browser import ARGS, CHROMIUM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, log: Path) -> subprocess.Popen:
    """``seglab serve MODEL`` in a subprocess; returns once /healthz answers."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    out = open(log, "wb")  # noqa: SIM115 - closed with the process by the caller's finally
    proc = subprocess.Popen(
        [sys.executable, "-m", "seglab", "serve", str(model), "--port", str(port)],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"seglab serve exited: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"seglab serve did not answer within 120 s: {log.read_text()}")


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not found: `make test` installs it (scripts/ensure-browser)"
)
def test_page_segments_a_real_image_in_headless_chromium(trained_run, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    image = sorted((shared_dataset("camvid") / "test").glob("*.png"))[0]
    pred = run_cli("predict", trained_run, image, "--out", tmp_path / "pred")
    assert pred.returncode == 0, pred.stderr
    expected = cv2.imread(str(tmp_path / "pred" / f"{image.stem}_mask.png"), cv2.IMREAD_UNCHANGED)

    port = free_port()
    server = start_server(trained_run, port, tmp_path / "server.log")
    errors: list[str] = []
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#legend li")
            classes = page.eval_on_selector_all("#legend li", "els => els.map(e => e.innerText)")
            page.set_input_files("#file", str(image))
            page.wait_for_selector('#overlay[data-ready="1"]', timeout=60_000)
            size = page.eval_on_selector("#overlay", "c => [c.width, c.height]")
            rows = page.eval_on_selector_all(
                "#areas tbody tr",
                "rs => rs.map(r => [+r.dataset.index, +r.cells[1].innerText, "
                "+r.cells[2].innerText])",
            )
            # hide the largest class: its pixels become transparent in the overlay
            biggest = rows[0][0]
            opaque_before = page.evaluate(OPAQUE_JS)
            page.click(f'#legend li[data-index="{biggest}"]')
            hidden_cls = page.get_attribute(f'#legend li[data-index="{biggest}"]', "class")
            opaque_after = page.evaluate(OPAQUE_JS)
            page.eval_on_selector(
                "#opacity", "e => { e.value = 40; e.dispatchEvent(new Event('input')); }"
            )
            opacity = page.eval_on_selector("#overlay", "c => c.style.opacity")
            with page.expect_download() as info:
                page.click("#download")
            download = info.value
            saved = tmp_path / download.suggested_filename
            download.save_as(saved)
            page.screenshot(path=str(tmp_path / "serve_page.png"), full_page=True)
            # a phone-sized screen: no sideways scrolling, the image fits the width
            page.set_viewport_size({"width": 390, "height": 844})
            overflow = page.evaluate("document.documentElement.scrollWidth")
            shown = page.eval_on_selector("#overlay", "c => c.getBoundingClientRect().width")
            page.screenshot(path=str(tmp_path / "serve_page_phone.png"), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(20)

    assert errors == []
    assert [c.strip() for c in classes] == CLASSES
    assert size == [480, 360]
    counts = np.bincount(expected.ravel(), minlength=256)
    assert {i: n for i, _, n in rows} == {i: int(n) for i, n in enumerate(counts) if n}
    assert abs(sum(pct for _, pct, _ in rows) - 100) < 0.1
    assert rows == sorted(rows, key=lambda r: -r[2])
    assert "hidden" in hidden_cls
    assert opaque_before == 480 * 360 and opaque_after == 480 * 360 - counts[biggest]
    assert opacity == "0.4"
    assert saved.name == f"{image.stem}_mask.png"
    mask = cv2.imread(str(saved), cv2.IMREAD_UNCHANGED)
    assert mask.dtype == np.uint8 and mask.shape == expected.shape == (360, 480)
    np.testing.assert_array_equal(mask, expected)
    assert overflow <= 390 and 300 < shown <= 390
    shot = cv2.imread(str(tmp_path / "serve_page.png"))
    assert shot.shape[1] == 1280 and shot.std() > 20


OPAQUE_JS = """() => {
  const c = document.getElementById('overlay');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] === 255) n++;
  return n;
}"""


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not found: `make test` installs it (scripts/ensure-browser)"
)
def test_page_shows_an_instance_model_in_headless_chromium(instance_run, discs_dsb, tmp_path):
    """An instance model: the page draws the objects from the JSON's RLEs, counts them per
    class, and downloads the 16-bit id PNG that ``seglab predict`` writes."""
    sync_api = pytest.importorskip("playwright.sync_api")
    image = discs_dsb / "images" / "im6.png"
    pred = run_cli("predict", instance_run, image, "--out", tmp_path / "pred")
    assert pred.returncode == 0, pred.stderr
    expected = cv2.imread(str(tmp_path / "pred" / "im6_instances.png"), cv2.IMREAD_UNCHANGED)

    port = free_port()
    server = start_server(instance_run, port, tmp_path / "server.log")
    errors: list[str] = []
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#legend li")
            tta_disabled = page.eval_on_selector("#tta", "e => e.disabled")
            page.set_input_files("#file", str(image))
            page.wait_for_selector('#overlay[data-ready="1"]', timeout=60_000)
            status = page.inner_text("#status")
            rows = page.eval_on_selector_all(
                "#areas tbody tr",
                "rs => rs.map(r => [+r.dataset.index, +r.cells[2].innerText, "
                "r.cells[3].innerText])",
            )
            opaque = page.evaluate(OPAQUE_JS)
            white = page.evaluate(WHITE_JS)  # the objects' outlines
            with page.expect_download() as info:
                page.click("#download")
            saved = tmp_path / info.value.suggested_filename
            info.value.save_as(saved)
            page.screenshot(path=str(tmp_path / "serve_page_instances.png"), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(20)

    n = int(expected.max())
    assert errors == [] and tta_disabled
    assert f"{n} objects" in status
    fg = int((expected > 0).sum())
    assert dict((i, px) for i, px, _ in rows) == {0: expected.size - fg, 1: fg}
    assert dict((i, obj) for i, _, obj in rows)[1] == str(n)
    assert opaque == expected.size  # background and nuclei both have opaque colours
    assert 0 < white < fg
    assert saved.name == "im6_instances.png"
    got = cv2.imread(str(saved), cv2.IMREAD_UNCHANGED)
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, expected)


WHITE_JS = """() => {
  const c = document.getElementById('overlay');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] === 765) n++;
  return n;
}"""
