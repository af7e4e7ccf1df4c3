"""The review page in a real browser: Debian's headless chromium driven by Selenium (skipped when either is missing).
A tiny predict folder is served by `birdsed review` in a subprocess; the page plays a clip, takes yes / no / another
species by key, shows them again after a reload, and two pages verifying at once lose nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import chromium_driver, serve_review, wait_for

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
    driver = chromium_driver()
    yield driver
    driver.quit()


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
    # a recording 5.0039 s long: its card said "0–5.003916666666667 s"
    assert browser.execute_script("return [secs(5.003916666666667), secs(2.5), secs(0)]") == ["5.004", "2.5", "0"]
    # a class name or file name with a quote stays inside its attribute (a model's classes are not to be trusted)
    evil = 'x" onfocus="alert(1)'
    got = browser.execute_script(
        "const s = document.createElement('select');"
        's.innerHTML = `<option value="${escAttr(arguments[0])}">x</option>`;'
        "return [s.options[0].value, s.options[0].attributes.length]",
        evil,
    )
    assert got == [evil, 1], got
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
