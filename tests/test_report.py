import base64
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from birdsed.evaluate.report import build_report
from birdsed.infer.predict import run_predict


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.imgs, self.stack_ok = [], [], True

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])


@pytest.fixture(scope="module")
def report_page(synth_data, tmp_path_factory):
    from birdsed.config import apply_overrides, load_config
    from birdsed.train.run import train

    tmp = tmp_path_factory.mktemp("report")
    cfg = apply_overrides(
        load_config("small"),
        ["train.epochs=2", "train.max_steps=2", "train.batch_size=8", "train.workers=0", "data.balance_min=4"],
    )
    model_dir = train(synth_data, cfg, tmp / "run", quiet=True)
    run_predict(model_dir, [], tmp / "pred", test_csv=synth_data / "test.csv", quiet=True, workers=0)
    page = build_report(tmp / "pred", truth=synth_data / "test_labels.csv", run_dir=tmp / "run", page_s=20.0)
    return page


def test_report_is_self_contained_with_valid_images(report_page):
    text = report_page.read_text()
    p = _Collect()
    p.feed(text)
    assert {"html", "h1", "table", "img"} <= set(p.tags)
    assert "http://" not in text and "https://" not in text  # nothing to fetch
    assert len(p.imgs) >= 2 + 2 * 2  # sweep + training + 2 recordings of 30 s in 20 s pages
    for src in p.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "row-wise micro F1" in text and "Detections per class" in text and "Training" in text


def test_report_needs_predictions(tmp_path):
    from birdsed.errors import BirdsedError

    with pytest.raises(BirdsedError, match="no scores.parquet"):
        build_report(tmp_path)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report_page, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium not installed (apt-get install chromium)")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1280,2000",
            report_page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # a page with pictures, not a blank one
