"""The report in a real browser: Debian's headless chromium driven by Selenium (skipped when either is missing), on a
soundscape of NIPS4B's real recordings end to end. The panels cover the whole recording, in order, all in the page
(no scroll box; in print too); the legend names every species detected, in the colours of their curves; a
detection's link opens its card on the review server. With BIRDSED_SCREENSHOTS=1 the recording's section is saved
as docs/report.png."""

from __future__ import annotations

import base64
import csv
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import NIPS4B, chromium_driver, serve_review, tiny_model, wait_for

from birdsed.evaluate.report import build_report

pytest.importorskip("selenium.webdriver", reason="selenium (the review extra) is not installed")
pytestmark = [
    pytest.mark.skipif(
        not ((shutil.which("chromium") or shutil.which("chromium-browser")) and shutil.which("chromedriver")),
        reason="no chromium + chromedriver (apt-get install)",
    ),
    pytest.mark.slow,
]
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "report.png"  # written with BIRDSED_SCREENSHOTS=1
SOUNDSCAPE_S = 65.0  # two panels of 60 s: a whole one and the last, shorter one


def birdsed(*argv) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "birdsed", *map(str, argv)], capture_output=True, text=True, timeout=600
    )


def make_soundscape(root: Path) -> tuple[Path, Path]:
    """NIPS4B clips end to end (half a second apart) until SOUNDSCAPE_S, and the truth: each clip's labels over it."""
    rows = list(csv.DictReader((NIPS4B / "labels.csv").open()))
    wav, pieces, truth, t = root / "soundscape.wav", [], [], 0.0
    for r in rows:
        x, rate = sf.read(NIPS4B / "audio" / r["filename"], dtype="float32")
        assert rate == 32000
        truth += [(str(wav), t, t + len(x) / rate, label) for label in r["labels"].split()]
        pieces += [x, np.zeros(rate // 2, np.float32)]
        t += len(x) / rate + 0.5
        if t >= SOUNDSCAPE_S:
            break
    sf.write(wav, np.concatenate(pieces)[: int(SOUNDSCAPE_S * 32000)], 32000)
    truth = [(f, a, min(b, SOUNDSCAPE_S), label) for f, a, b, label in truth if a < SOUNDSCAPE_S]
    pd.DataFrame(truth, columns=["file", "start_s", "end_s", "label"]).to_csv(root / "truth.csv", index=False)
    return wav, root / "truth.csv"


@pytest.fixture(scope="module")
def predicted(tmp_path_factory) -> tuple[Path, Path]:
    """(PRED, truth) of the soundscape, predicted by BirdNET's detector over the NIPS4B classes where the birdnet
    extra is installed (real detections for the screenshot), else by an untrained tiny model of three of them,
    every row a detection (the page is built the same)."""
    if not (NIPS4B / "labels.csv").is_file():
        pytest.skip(f"NIPS4B data not found at {NIPS4B}")
    root = tmp_path_factory.mktemp("report-browser")
    wav, truth = make_soundscape(root)
    model, threshold = root / "model", []
    if (
        importlib.util.find_spec("ai_edge_litert") is None
        or birdsed("birdnet", "init", "--out", model, "--classes-from", NIPS4B).returncode
    ):
        shutil.rmtree(model, ignore_errors=True)
        tiny_model(model, ["Erirub_call", "Turmer_call", "Sylmel_song"])
        threshold = ["--threshold", "0"]
    res = birdsed("predict", "--model", model, wav, "--out", root / "pred", *threshold)
    assert res.returncode == 0, res.stderr
    return root / "pred", truth


@pytest.fixture
def browser():
    driver = chromium_driver("1400,1100")
    yield driver
    driver.quit()


def section_png(driver, selector: str) -> bytes:
    """A PNG of the whole element, beyond the window's height too (Selenium's element screenshot stops at it)."""
    rect = driver.execute_script(
        f"const r = document.querySelector({selector!r}).getBoundingClientRect();"
        "return {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height, scale: 1};"
    )
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": rect}
    )
    return base64.b64decode(shot["data"])


PAGE_FACTS = """
const sec = document.querySelector('section.rec');
const panels = [...sec.querySelectorAll('figure.panel')].map((f) => ({
  start: +f.dataset.startS, end: +f.dataset.endS, height: f.getBoundingClientRect().height,
  picture: f.querySelector('img.sg').naturalWidth, shown: f.querySelector('img.sg').getBoundingClientRect().width}));
const boxes = [...document.body.querySelectorAll('*')].filter((e) => e instanceof HTMLElement &&
  ['auto', 'scroll', 'hidden'].includes(getComputedStyle(e).overflowY));
const legend = Object.fromEntries([...document.querySelectorAll('table.legend td.sp')].map(
  (td) => [td.dataset.label, getComputedStyle(td.querySelector('.sw')).backgroundColor]));
const curves = [...sec.querySelectorAll('polyline.curve')].map((p) => getComputedStyle(p).stroke);
const links = [...sec.querySelectorAll('a.det')].map((a) => a.getAttribute('href'));
return {duration: +sec.dataset.durationS, panels, boxes: boxes.length, legend, curves, links};
"""


def test_the_report_shows_the_recording_whole_names_every_species_and_links_each_detection_to_review(
    predicted, browser, tmp_path
):
    pred, truth = predicted
    server, base = serve_review(pred)
    try:
        port = int(base.rsplit(":", 1)[1])
        page = build_report(pred, truth=truth, review_port=port)
        browser.get(page.as_uri())
        wait_for(browser, "[...document.images].every((i) => i.complete && i.naturalWidth > 0)")
        facts = browser.execute_script(PAGE_FACTS)
        panels = facts["panels"]
        assert facts["duration"] == pytest.approx(SOUNDSCAPE_S, abs=0.01)
        assert [p["start"] for p in panels] == [0.0, 60.0]  # whole, in order: each panel starts where the last ended
        assert [p["end"] for p in panels] == pytest.approx([60.0, SOUNDSCAPE_S], abs=0.01)
        assert all(p["height"] > 150 and p["picture"] > 0 and p["shown"] > 0 for p in panels)
        assert facts["boxes"] == 0  # nothing in a scroll box: every panel is in the page
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
        printed = browser.execute_script(PAGE_FACTS)["panels"]
        assert len(printed) == len(panels) and all(p["height"] > 100 for p in printed)  # and in print
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})

        detections = pd.read_csv(pred / "detections.csv")
        assert set(facts["legend"]) == set(detections["label"]) and detections.size  # every species detected, named
        assert set(facts["legend"].values()) <= set(facts["curves"])  # each with its curve, in its legend colour
        assert len(facts["links"]) == len(detections) and all(u.startswith(base + "/?") for u in facts["links"])
        wait_for(browser, "document.fonts.status === 'loaded'")
        shot = SCREENSHOT if os.environ.get("BIRDSED_SCREENSHOTS") else tmp_path / "report.png"
        shot.write_bytes(section_png(browser, "section.rec"))

        link = facts["links"][0]
        asked = dict(parse_qsl(urlsplit(link).query))
        browser.get(link)  # what a click opens: the review page at that detection's card
        card = wait_for(browser, "document.getElementById('card') && cards[pos]")
        assert (card["file"], card["start_s"], card["label"]) == (
            asked["file"],
            float(asked["start_s"]),
            asked["label"],
        )
        assert browser.find_element("id", "code").text and browser.find_element("id", "score").text
    finally:
        server.terminate()
        server.wait(30)
