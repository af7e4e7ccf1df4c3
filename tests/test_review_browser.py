"""The review page in a real browser: Debian's headless chromium driven by Selenium (skipped when either is missing).
A tiny predict folder is served by `birdsed review` in a subprocess; the page plays a clip, takes yes / no / another
species by key, shows them again after a reload, and two pages verifying at once lose nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import serve_review

from birdsed.review.verdicts import load_verdicts

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the review extra) is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="no chromium + chromedriver (apt-get install)")
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "review.png"  # written with BIRDSED_SCREENSHOTS=1


@pytest.fixture
def served(tmp_path_factory):
    """`birdsed review` of a copy of the tiny predict folder of test_review.py; yields (url, PRED)."""
    pred = _make_pred(tmp_path_factory)
    proc, base = serve_review(pred)
    yield f"{base}/", pred
    proc.terminate()
    proc.wait(30)


def _make_pred(tmp_path_factory) -> Path:
    from conftest import tiny_model, write_audio

    root = tmp_path_factory.mktemp("browser")
    model = tiny_model(root / "model", ["amecro", "woothr", "Turdus merula"])
    for i, f in enumerate([700, 2500, 5000]):
        write_audio(root / "audio" / f"rec{i}.wav", seconds=12, rate=16000, freq_hz=f)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "birdsed",
            "predict",
            "--model",
            str(model),
            str(root / "audio"),
            "--out",
            str(root / "pred"),
            "--threshold",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    return root / "pred"


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        "--autoplay-policy=no-user-gesture-required",
        "--mute-audio",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def wait_for(driver, js: str, timeout_s: float = 30.0):
    """Poll a JavaScript expression until it is truthy; its value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return {js}")
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {js}")


def press(driver, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.TAG_NAME, "body").send_keys(key)


def test_the_review_page_plays_a_clip_takes_verdicts_by_key_and_keeps_them(served, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, pred = served
    browser.get(url)
    wait_for(browser, "document.getElementById('card') !== null")
    first = browser.find_element(By.ID, "code").text
    # the clip's sound: it loads, has a duration (5 s and its context) and no error, and plays
    duration = wait_for(browser, "(a => a.readyState >= 1 && a.duration)(document.getElementById('audio'))")
    assert 5.0 < duration <= 8.0
    browser.execute_async_script(
        "const done = arguments[0]; const a = document.getElementById('audio');a.play().then(done, done);"
    )
    assert browser.execute_script("return document.getElementById('audio').error") is None
    wait_for(browser, "document.getElementById('audio').currentTime > 0")
    assert wait_for(browser, "(i => i.complete && i.naturalWidth)(document.getElementById('spec'))") > 100
    press(browser, "y")
    wait_for(browser, "document.getElementById('status').textContent.includes('yes')")
    press(browser, "n")
    wait_for(browser, "document.getElementById('status').textContent.includes(': no')")
    other = browser.find_element(By.ID, "other")
    other.send_keys("Turdus merula", Keys.ENTER)
    wait_for(browser, "document.getElementById('status').textContent.includes('another species')")
    verdicts = load_verdicts(pred)
    assert sorted(verdicts["verdict"]) == ["no", "no", "yes"] and list(verdicts["other_label"]).count("Turdus merula")
    assert first in set(verdicts["label"])

    browser.refresh()  # the verdicts are shown again, and the queue goes on past them
    rows = wait_for(
        browser,
        "document.querySelectorAll('#verdicts tr.verdict-row').length === 3 && "
        "document.querySelectorAll('#verdicts tr.verdict-row').length",
    )
    assert rows == 3
    wait_for(browser, "(i => i && i.complete && i.naturalWidth)(document.getElementById('spec'))")
    browser.save_screenshot(str(SCREENSHOT if os.environ.get("BIRDSED_SCREENSHOTS") else tmp_path / "review.png"))
    press(browser, "u")
    wait_for(browser, "document.querySelectorAll('#verdicts tr.verdict-row').length === 4")
    press(browser, "z")  # undo
    wait_for(browser, "document.querySelectorAll('#verdicts tr.verdict-row').length === 3")
    assert len(load_verdicts(pred)) == 3


def test_two_pages_verifying_at_once_lose_nothing(served, browser):
    from selenium.webdriver.common.by import By

    url, pred = served
    tabs = []
    for who in ("tab1", "tab2"):
        if tabs:
            browser.switch_to.new_window("tab")
        browser.get(url)
        wait_for(browser, "document.getElementById('card') !== null")
        name = browser.find_element(By.ID, "f-reviewer")
        name.clear()
        name.send_keys(who)
        tabs.append(browser.current_window_handle)
    for i in range(6):  # the two pages take turns, each a verdict
        for tab in tabs:
            browser.switch_to.window(tab)
            before = browser.execute_script("return document.getElementById('status').textContent")
            press(browser, "yn"[i % 2])
            wait_for(browser, f"document.getElementById('status').textContent !== {before!r}")
    verdicts = load_verdicts(pred)
    assert verdicts.groupby("reviewer").size().to_dict() == {"tab1": 6, "tab2": 6}
